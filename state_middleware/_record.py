"""The stored form of one turn, and the pure helpers that combine turns into a chain.

A turn keeps only what it added: its own input items, its output items and the response
object (without ``output``, which is spliced back on read). A chain is rebuilt by
following ``parent_id`` links, so an N-turn chain costs the bytes of its items, not N
copies of the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from ._ids import derived_from, derived_item_id

__all__ = [
    "OUTPUT_POSITION",
    "BackgroundState",
    "ConversationRecord",
    "TurnRecord",
    "chain_input",
    "failure_events",
    "indexed_item_ids",
    "item_ids_of",
    "join_arrays",
    "listed_item",
    "record_item_ids",
    "record_items",
    "response_with_output",
    "with_status",
]


class TurnRecord(msgspec.Struct, frozen=True, array_like=True):
    """One stored turn.

    ``input_items`` and ``output_items`` are JSON arrays (compact bytes, as msgspec
    encodes them); ``response`` is the JSON response object without its ``output`` key.
    """

    id: str
    parent_id: str | None
    created_at: int
    input_items: bytes
    output_items: bytes
    response: bytes

    @property
    def size(self) -> int:
        """Bytes this record holds, the unit a store's byte bound counts."""
        return (
            len(self.id)
            + len(self.parent_id or "")
            + len(self.input_items)
            + len(self.output_items)
            + len(self.response)
            + 16
        )


class ConversationRecord(msgspec.Struct, frozen=True, array_like=True):
    """A stored conversation, without its items (a store keeps those as an ordered list
    of item ids). ``metadata`` is a canonical JSON object."""

    id: str
    created_at: int
    metadata: bytes = b"{}"

    @property
    def size(self) -> int:
        return len(self.id) + len(self.metadata) + 16


class BackgroundState(msgspec.Struct, frozen=True):
    """Where a background response stands.

    ``status`` is ``queued``, ``in_progress`` or, once finished, ``completed``,
    ``incomplete``, ``failed`` or ``cancelled``; ``response`` is the response object
    (JSON) as last set (the queued one, then the final one); ``stream`` says whether it
    was created with ``stream: true`` (only those can be streamed again);
    ``cancel_requested`` is set by a cancel until the worker ends the turn; ``events``
    counts the events recorded so far (numbered from 0)."""

    status: str
    response: bytes
    stream: bool
    cancel_requested: bool = False
    events: int = 0

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "in_progress")


def with_status(response: bytes, status: str, error: dict[str, Any] | None = None) -> bytes:
    """A response object (JSON) with another ``status`` (and ``error``, when given)."""
    value: dict[str, Any] = msgspec.json.decode(response)
    value["status"] = status
    if error is not None:
        value["error"] = error
    return msgspec.json.encode(value)


def failure_events(failed_response: bytes, message: str, first: int) -> list[bytes]:
    """The events that end a stream that failed (``error``, then ``response.failed``
    with ``failed_response``), numbered from ``first``."""
    return [
        msgspec.json.encode(
            {
                "type": "error",
                "sequence_number": first,
                "code": "server_error",
                "message": message,
                "param": None,
            }
        ),
        b'{"type":"response.failed","sequence_number":%d,"response":%s}'
        % (first + 1, failed_response),
    ]


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(TurnRecord)


def encode_record(record: TurnRecord) -> bytes:
    """Serialise a record for stores that keep bytes (compact msgpack array)."""
    return _record_encoder.encode(record)


def decode_record(data: bytes) -> TurnRecord:
    return _record_decoder.decode(data)


def join_arrays(arrays: Iterable[bytes]) -> bytes:
    """Concatenate compact JSON arrays into one array without decoding them (and with
    one copy: the inner slices are views)."""
    parts: list[bytes | memoryview] = [b"["]
    for array in arrays:
        if len(array) > 2:
            parts.append(memoryview(array)[1:-1])
            parts.append(b",")
    if len(parts) > 1:
        parts.pop()
    parts.append(b"]")
    return b"".join(parts)


def chain_input(chain: Sequence[TurnRecord], new_input: bytes | None = None) -> bytes:
    """The model context of a chain: each turn's input then its output, oldest first,
    followed by ``new_input`` (a JSON array) when given."""
    arrays: list[bytes] = []
    for record in chain:
        arrays.append(record.input_items)
        arrays.append(record.output_items)
    if new_input is not None:
        arrays.append(new_input)
    return join_arrays(arrays)


_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


def response_with_output(record: TurnRecord) -> bytes:
    """The full response object of a stored turn, ``output`` restored."""
    response: dict[str, Any] = _json_decoder.decode(record.response)
    response["output"] = msgspec.Raw(record.output_items)
    return _json_encoder.encode(response)


#: derived ids of output items count positions from here (input items from 0)
OUTPUT_POSITION = 1_000_000

_items_decoder = msgspec.json.Decoder(list[dict[str, Any]])


def listed_item(item: dict[str, Any], response_id: str, position: int) -> dict[str, Any]:
    """An item as the API lists it: with an id (a stable one derived from the turn and
    position when it was sent without) and message content in part form."""
    item_type = item.get("type", "message")
    if not isinstance(item_type, str):
        item_type = "message"
    listed = dict(item)
    if not (isinstance(listed.get("id"), str) and listed["id"]):
        listed.pop("id", None)
        listed = {"id": derived_item_id(response_id, position, item_type), **listed}
    if item_type == "message":
        listed["type"] = "message"
        content = listed.get("content")
        if isinstance(content, str):
            if listed.get("role") == "assistant":
                part = {"type": "output_text", "text": content, "annotations": []}
            else:
                part = {"type": "input_text", "text": content}
            listed["content"] = [part]
    return listed


class _ItemName(msgspec.Struct):
    id: Any = None
    type: Any = "message"


_names_decoder = msgspec.json.Decoder(list[_ItemName])


def record_item_ids(record: TurnRecord) -> list[str]:
    """The ids of :func:`record_items`, without building the items."""
    named = [
        [(item.id, item.type) for item in _names_decoder.decode(array)]
        for array in (record.input_items, record.output_items)
    ]
    return item_ids_of(record.id, named[0], named[1])


def indexed_item_ids(response_id: str, ids: Sequence[str]) -> list[str]:
    """The item ids of a turn a store must index to find them again: all but those
    derived from this very turn (the id says where the item is)."""
    return [item_id for item_id in ids if derived_from(item_id) != response_id]


def item_ids_of(
    response_id: str, inputs: Sequence[tuple[Any, Any]], outputs: Sequence[tuple[Any, Any]]
) -> list[str]:
    """The ids of a turn's items from their ``(id, type)`` pairs, input then output:
    each its own, or the stable one derived from the turn and its position."""
    ids: list[str] = []
    for base, named in ((0, inputs), (OUTPUT_POSITION, outputs)):
        for position, (item_id, kind) in enumerate(named):
            if isinstance(item_id, str) and item_id:
                ids.append(item_id)
            else:
                kind = kind if isinstance(kind, str) else "message"
                ids.append(derived_item_id(response_id, base + position, kind))
    return ids


class _ItemView(msgspec.Struct):
    id: Any = None
    type: Any = None
    content: msgspec.Raw = msgspec.Raw(b"")


_views_decoder = msgspec.json.Decoder(list[_ItemView])
_raws_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def record_items(record: TurnRecord) -> list[tuple[str, bytes]]:
    """Every item a turn stored, input then output, as ``(id, listed item JSON)``: the
    names under which a store can find them again (``item_reference``, conversations).
    An item already in listed form (an id, a ``type``, content that is not a bare
    string) is its stored bytes as they are; only the others are rebuilt."""
    found: list[tuple[str, bytes]] = []
    for base, array in ((0, record.input_items), (OUTPUT_POSITION, record.output_items)):
        views = _views_decoder.decode(array)
        raws = _raws_decoder.decode(array)
        for position, (view, raw) in enumerate(zip(views, raws, strict=True)):
            if (
                isinstance(view.id, str)
                and view.id
                and isinstance(view.type, str)
                and bytes(view.content)[:1] != b'"'
            ):
                found.append((view.id, bytes(raw)))
                continue
            item = _json_decoder.decode(raw)
            listed = listed_item(item, record.id, base + position)
            found.append((listed["id"], _json_encoder.encode(listed)))
    return found
