"""Items as a conversation keeps them: normalised, with type-proper ids; and item
references (``{"type": "item_reference", "id": ...}`` or a bare ``{"id": ...}``).

Pure: no store, no IO.
"""

from __future__ import annotations

from typing import Any

from ._errors import ApiError
from ._ids import item_id_prefix, new_item_id

__all__ = ["checked_item_id", "normalized_item", "reference_id", "with_id"]


def reference_id(item: Any) -> str | None:
    """The id an input item refers to, when it is only a reference to a stored item:
    ``{"type": "item_reference", "id": ...}`` or ``{"id": ...}`` alone."""
    if not isinstance(item, dict):
        return None
    item_id = item.get("id")
    if not isinstance(item_id, str):
        return None
    if item.get("type") == "item_reference" or item.keys() == {"id"}:
        return item_id
    return None


def normalized_item(item: dict[str, Any]) -> dict[str, Any]:
    """A message in the form a conversation lists it: ``type: "message"``, content as
    parts (``input_text``, or ``output_text`` with empty ``annotations`` and ``logprobs``
    for the assistant) and ``status: "completed"``. Other items are kept as sent."""
    item_type = item.get("type", "message")
    if item_type != "message" or "role" not in item:
        return dict(item)
    normal = {"type": "message", **item}
    content = normal.get("content")
    if isinstance(content, str):
        if normal.get("role") == "assistant":
            part: dict[str, Any] = {
                "type": "output_text",
                "text": content,
                "annotations": [],
                "logprobs": [],
            }
        else:
            part = {"type": "input_text", "text": content}
        normal["content"] = [part]
    normal.setdefault("status", "completed")
    return normal


def checked_item_id(item: dict[str, Any], param: str) -> str | None:
    """The id an item was sent with, checked against its type's prefix (``msg`` for
    messages, ``fc`` for function calls, ...); ``None`` when it has none. Raises
    ``ApiError`` (400) for an id that does not begin with the right prefix."""
    item_id = item.get("id")
    if item_id is None:
        return None
    prefix = item_id_prefix(str(item.get("type", "message")))
    if not isinstance(item_id, str) or (prefix != "item" and not item_id.startswith(prefix + "_")):
        raise ApiError(
            400,
            f"Invalid '{param}.id': '{item_id}'. Expected an ID that begins with '{prefix}'.",
            param=f"{param}.id",
            code="invalid_value",
        )
    return item_id


def with_id(item: dict[str, Any]) -> dict[str, Any]:
    """The item with an id: its own, or a fresh one of its type's prefix, first."""
    if isinstance(item.get("id"), str) and item["id"]:
        return item
    rest = {key: value for key, value in item.items() if key != "id"}
    return {"id": new_item_id(str(item.get("type", "message"))), **rest}
