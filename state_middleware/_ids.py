"""Identifiers: fresh unguessable response ids, and stable ids for id-less items."""

from __future__ import annotations

import re
import secrets

__all__ = [
    "ID_PATTERN",
    "NO_TREE",
    "derived_from",
    "derived_item_id",
    "item_id_prefix",
    "new_conversation_id",
    "new_item_id",
    "new_response_id",
    "tree_of",
]

#: what OpenAI accepts in an id: letters, digits, underscores, dashes
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")

_ITEM_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "compaction": "cmp",
    "web_search_call": "ws",
    "file_search_call": "fs",
    "computer_call": "cu",
    "computer_call_output": "cuo",
    "image_generation_call": "ig",
    "code_interpreter_call": "ci",
    "local_shell_call": "lsh",
    "local_shell_call_output": "lsho",
    "mcp_list_tools": "mcpl",
    "mcp_approval_request": "mcpr",
    "mcp_approval_response": "mcpa",
    "mcp_call": "mcp",
}


#: the tree of an id that names none (an id of another form): no store keeps anything
#: under it, so such an id is simply not found
NO_TREE = "0" * 16

_TREE = re.compile(
    r"(?:resp|conv)_([0-9a-f]{16})[0-9a-f]{32}"  # a response or conversation
    r"|[a-z]+_([0-9a-f]{16})[0-9a-f]{32}_[0-9]{1,9}"  # a derived item id
)


def new_response_id(tree: str | None = None) -> str:
    """``resp_`` and 48 hex digits (192 bits): the first 16 name the response's tree
    (``tree``: the tree of the response it continues, or of its conversation; fresh and
    random when None), the other 32 are random. A store can keep a tree in one place
    (one Redis Cluster slot) and still find any response of it from its id alone."""
    return "resp_" + (tree or secrets.token_hex(8)) + secrets.token_hex(16)


def new_conversation_id() -> str:
    """``conv_`` and 192 random bits in hex (48 characters, as OpenAI's); the first 16
    digits name the tree its responses belong to."""
    return "conv_" + secrets.token_hex(24)


def tree_of(some_id: str | None) -> str | None:
    """The tree (16 hex digits) a response, conversation or derived item id names, or
    None for an id of another form."""
    if some_id is None:
        return None
    found = _TREE.fullmatch(some_id)
    if found is None:
        return None
    return found[1] or found[2]


def item_id_prefix(item_type: str) -> str:
    """The prefix OpenAI gives ids of items of this type (``msg`` for messages, ``fc``
    for function calls, ...), ``item`` for a type it has none for."""
    return _ITEM_PREFIX.get(item_type, "item")


def new_item_id(item_type: str) -> str:
    """A fresh id for an item of this type: its prefix and 192 random bits."""
    return f"{item_id_prefix(item_type)}_{secrets.token_hex(24)}"


def derived_item_id(response_id: str, position: int, item_type: str) -> str:
    """A stable id for an item sent without one: its type's prefix, the turn's response
    id (without ``resp_``) and the item's position, so listing the same turn twice gives
    the same ids (pagination with ``after`` relies on that), and the id itself says
    where the item is (:func:`derived_from`): a store needs no index for it."""
    return f"{item_id_prefix(item_type)}_{response_id.removeprefix('resp_')}_{position}"


_DERIVED = re.compile(r"[a-z]+_([A-Za-z0-9]+)_([0-9]{1,9})")


def derived_from(item_id: str) -> str | None:
    """The response id an id of :func:`derived_item_id`'s form points into (``None``
    for another form). The id may still be a client's own: look it up as such first."""
    found = _DERIVED.fullmatch(item_id)
    return None if found is None else "resp_" + found[1]
