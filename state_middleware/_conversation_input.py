"""What a Conversations API request may carry: ``metadata`` and ``items``, checked.

Pure: no store, no IO. Items are checked in two steps so that a request that fails
adds nothing: :func:`sent_items` checks the shape of every item (before any store
call), and :func:`items_to_add` decides, given the stored items the sent ids name,
what the store appends and what the reply shows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

import msgspec

from ._errors import ApiError, invalid_type, missing_parameter
from ._items import checked_item_id, normalized_item, reference_id, with_id
from ._store import NewItem

__all__ = [
    "ALREADY_IN_CONVERSATION",
    "CONVERSATION_NOT_FOUND",
    "ITEM_NOT_FOUND",
    "MAX_ITEMS",
    "NO_ITEM_FOUND",
    "SentItem",
    "checked_metadata",
    "items_to_add",
    "lookup_ids",
    "sent_items",
]

MAX_ITEMS = 20
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

CONVERSATION_NOT_FOUND = "Conversation with id '{}' not found."
#: OpenAI's text for an ``after`` that names no item of the conversation (no period)
NO_ITEM_FOUND = "No item found with id '{}'"
#: OpenAI's text for an unknown item reference in Responses input
ITEM_NOT_FOUND = (
    "Item with id '{}' not found. Items are not persisted when `store` is set to false. "
    "Try again with `store` set to true, or remove this item from your input."
)
ALREADY_IN_CONVERSATION = "Item already in conversation"

_encoder = msgspec.json.Encoder()


def checked_metadata(value: object) -> bytes:
    """``metadata`` as canonical JSON: ``{}`` for null, otherwise an object of at most
    16 string values (keys up to 64 characters, values up to 512). ``ApiError`` (400)
    otherwise."""
    if value is None:
        return b"{}"
    if not isinstance(value, dict):
        raise invalid_type("metadata", "an object", value)
    if len(value) > MAX_METADATA_PAIRS:
        raise ApiError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(value)} "
            "properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, text in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise ApiError(
                400,
                "Invalid 'metadata': key too long. Expected a key with maximum length "
                f"{MAX_METADATA_KEY}, but got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(text, str):
            raise invalid_type(f"metadata.{key}", "a string", text)
        if len(text) > MAX_METADATA_VALUE:
            raise ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {MAX_METADATA_VALUE}, but got a string with length {len(text)} "
                "instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return _encoder.encode(value)


class SentItem(NamedTuple):
    """One item of a request: the id it names (``None``: it gets a fresh one) and the
    normalised item (``None``: it is only a reference to a stored item)."""

    id: str | None
    item: dict[str, Any] | None


def sent_items(value: object, *, required: bool) -> list[SentItem]:
    """The ``items`` of a request body, each checked: an array of at most 20 objects
    (at least one when ``required``), ids of the right prefix. ``ApiError`` (400) for
    the first problem found."""
    if value is None:
        if required:
            raise missing_parameter("items")
        return []
    if not isinstance(value, list):
        raise invalid_type("items", "an array", value)
    if len(value) > MAX_ITEMS:
        raise ApiError(
            400,
            "Invalid 'items': array too long. Expected an array with maximum length "
            f"{MAX_ITEMS}, but got an array with length {len(value)} instead.",
            param="items",
            code="array_above_max_length",
        )
    if required and not value:
        raise ApiError(
            400,
            "Invalid 'items': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="items",
            code="empty_array",
        )
    sent: list[SentItem] = []
    for index, item in enumerate(value):
        param = f"items[{index}]"
        if not isinstance(item, dict):
            raise invalid_type(param, "an object", item)
        referenced = reference_id(item)
        if referenced is not None:
            sent.append(SentItem(referenced, None))
            continue
        normal = normalized_item(item)
        if not isinstance(normal.get("type"), str):
            raise missing_parameter(f"{param}.type")
        sent.append(SentItem(checked_item_id(normal, param), normal))
    return sent


def items_to_add(
    sent: list[SentItem],
    stored: Mapping[str, bytes],
    in_conversation: Collection[str] = (),
) -> tuple[list[NewItem], list[bytes]]:
    """What the store appends for ``sent`` and the JSON of each item as the reply lists
    it, given the ``stored`` items the sent ids name.

    An id already stored re-attaches the stored item (the content sent is ignored); an
    id named twice is added twice; a new item keeps its own id or gets a fresh one.
    ``ApiError`` for an id already ``in_conversation`` (400) and for a reference to an
    item that is not stored (404).
    """
    known = dict(stored)
    added: list[NewItem] = []
    shown: list[bytes] = []
    for item_id, item in sent:
        if item_id is not None and item_id in in_conversation:
            raise ApiError(
                400, ALREADY_IN_CONVERSATION, param="items", code="item_already_in_conversation"
            )
        if item_id is not None and item_id in known:
            value = known[item_id]
            added.append((item_id, None if item_id in stored else value))
            shown.append(value)
            continue
        if item is None:
            raise ApiError(404, ITEM_NOT_FOUND.format(item_id), param="items")
        new = with_id(item)
        value = _encoder.encode(new)
        known[new["id"]] = value
        added.append((new["id"], value))
        shown.append(value)
    return added, shown


def lookup_ids(sent: list[SentItem]) -> list[str]:
    """The ids to look up in the store before :func:`items_to_add`."""
    return list(dict.fromkeys(item_id for item_id, _ in sent if item_id is not None))
