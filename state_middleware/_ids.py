"""Identifiers: fresh unguessable response ids, and stable ids for id-less items."""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["ID_PATTERN", "derived_item_id", "new_response_id"]

#: what OpenAI accepts in an id: letters, digits, underscores, dashes
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")

_ITEM_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
}


def new_response_id() -> str:
    """``resp_`` and 192 random bits in hex."""
    return "resp_" + secrets.token_hex(24)


def derived_item_id(response_id: str, position: int, item_type: str) -> str:
    """A stable id for an input item the client sent without one.

    Derived from the turn's response id and the item's position, so listing the same
    turn twice gives the same ids (pagination with ``after`` relies on that).
    """
    digest = hashlib.blake2b(f"{response_id}:{position}".encode(), digest_size=16).hexdigest()
    return f"{_ITEM_PREFIX.get(item_type, 'item')}_{digest}"
