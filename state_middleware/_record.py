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

__all__ = ["TurnRecord", "chain_input", "join_arrays", "response_with_output"]


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
