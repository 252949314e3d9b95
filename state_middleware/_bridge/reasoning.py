"""Reasoning items for the bridge: build them, carry their text, read it back.

A Chat upstream with a thinking model returns its chain of thought as a non-standard
``reasoning_content`` (DeepSeek, Kimi, GLM, vLLM <= 0.10) or ``reasoning`` (vLLM >= 0.11,
Ollama) field. The bridge turns that text into a Responses ``reasoning`` output item::

    {"type": "reasoning", "id": "rs_...", "summary": [],
     "content": [{"type": "reasoning_text", "text": "..."}],
     "encrypted_content": "sm-reasoning-v1:<base64 of the UTF-8 text>"}

``encrypted_content`` is **not encrypted**: it is :data:`REASONING_PREFIX` followed by
the standard base64 of the text, only carried so that clients replaying history
statelessly (Codex with ``store: false`` sends reasoning items back with
``"content": null`` and only ``encrypted_content``) still give the text back. Anyone who
can read the item can read the reasoning, exactly as with ``content``.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "REASONING_PREFIX",
    "decode_reasoning",
    "encode_reasoning",
    "new_item_id",
    "reasoning_by_call_id",
    "reasoning_item",
    "reasoning_text",
]

#: marks an ``encrypted_content`` string made by this bridge (version 1: base64 of UTF-8)
REASONING_PREFIX = "sm-reasoning-v1:"

_CALL_TYPES = frozenset({"function_call", "custom_tool_call"})


def new_item_id(prefix: str) -> str:
    """A fresh id ``<prefix>_<48 hex digits>`` (192 random bits), e.g. ``msg_3f...``."""
    return f"{prefix}_{secrets.token_hex(24)}"


def encode_reasoning(text: str) -> str:
    """The ``encrypted_content`` string carrying ``text`` (prefix + base64, not a secret)."""
    return REASONING_PREFIX + base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_reasoning(value: object) -> str | None:
    """The text inside an ``encrypted_content`` made by :func:`encode_reasoning`.

    ``None`` for anything else (a real OpenAI encrypted blob, garbage, a non-string).
    """
    if not isinstance(value, str) or not value.startswith(REASONING_PREFIX):
        return None
    try:
        raw = base64.b64decode(value[len(REASONING_PREFIX) :], validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def reasoning_item(text: str, *, item_id: str | None = None) -> dict[str, Any]:
    """A complete ``reasoning`` output item holding ``text``."""
    return {
        "id": item_id if item_id is not None else new_item_id("rs"),
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "encrypted_content": encode_reasoning(text),
    }


def _joined_texts(parts: object, separator: str) -> str:
    if not isinstance(parts, list):
        return ""
    texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return separator.join(texts)


def reasoning_text(item: Mapping[str, Any]) -> str | None:
    """The reasoning text a ``reasoning`` item carries, or ``None`` if it has none.

    Looked for in order: ``content[].text`` (joined), ``encrypted_content`` if this bridge
    made it, then ``summary[].text`` (joined with a blank line).
    """
    text = _joined_texts(item.get("content"), "")
    if text:
        return text
    decoded = decode_reasoning(item.get("encrypted_content"))
    if decoded:
        return decoded
    return _joined_texts(item.get("summary"), "\n\n") or None


def reasoning_by_call_id(output_items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``call_id`` -> reasoning text for each tool call that follows a reasoning item.

    Mirrors how the request builder replays a turn: the reasoning items before an
    assistant step (consecutive ones joined with a newline) belong to that step's message
    and to every ``function_call``/``custom_tool_call`` of it. Any other item (a user
    message, a tool output) ends the step. The core indexes stored turns with this, so a
    client that drops reasoning items from its history can still get them replayed.
    """
    found: dict[str, str] = {}
    current: str | None = None
    previous_was_reasoning = False
    for item in output_items:
        kind = item.get("type")
        is_reasoning = kind == "reasoning"
        if is_reasoning:
            text = reasoning_text(item)
            if text:
                current = f"{current}\n{text}" if previous_was_reasoning and current else text
        elif kind in _CALL_TYPES:
            call_id = item.get("call_id")
            if current and isinstance(call_id, str):
                found[call_id] = current
        elif not (kind == "message" and item.get("role", "assistant") == "assistant"):
            current = None
        previous_was_reasoning = is_reasoning
    return found
