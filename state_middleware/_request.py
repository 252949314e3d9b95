"""Reading a ``POST /responses`` body and rewriting it for the upstream.

Only the fields the middleware needs are checked (``input``, ``previous_response_id``,
``store``, ``stream``). Rewriting happens on the decoded dict, so every field the
middleware does not know passes through unchanged; stored history is spliced in as
raw JSON bytes and never decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgspec

from ._errors import ApiError, invalid_type
from ._ids import ID_PATTERN
from ._record import TurnRecord, chain_input

__all__ = ["TurnRequest", "decode_object", "parse_turn_request", "upstream_body"]

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class TurnRequest:
    raw: bytes
    body: dict[str, Any]
    previous_response_id: str | None
    store: bool
    stream: bool

    @cached_property
    def input_items(self) -> bytes:
        """This request's own input as a JSON array (a string input is one user
        message); encoded only when a turn is kept or history is spliced in."""
        value = self.body.get("input")
        if value is None:
            return b"[]"
        if isinstance(value, str):
            return _encoder.encode([{"role": "user", "content": value}])
        return _encoder.encode(value)

    @property
    def needs_rewrite(self) -> bool:
        return "previous_response_id" in self.body


def decode_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; ``ApiError`` (400, ``invalid_json``)
    when it is not."""
    try:
        body = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400,
            f"We could not parse the JSON body of your request. ({exc})",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def parse_turn_request(raw: bytes) -> TurnRequest:
    """Decode and check a request body; raise ``ApiError`` (400) on bad input."""
    body = decode_object(raw)
    previous = body.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str):
            raise invalid_type("previous_response_id", "a string", previous)
        if not ID_PATTERN.fullmatch(previous):
            raise ApiError(
                400,
                f"Invalid 'previous_response_id': '{previous}'. Expected an ID that "
                "contains letters, numbers, underscores, or dashes, but this value "
                "contained additional characters.",
                param="previous_response_id",
                code="invalid_value",
            )
    _check_input(body.get("input"))
    return TurnRequest(
        raw=raw,
        body=body,
        previous_response_id=previous,
        store=_flag(body, "store", default=True),
        stream=_flag(body, "stream", default=False),
    )


def _flag(body: dict[str, Any], name: str, *, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_type(name, "a boolean", value)
    return value


def _check_input(value: object) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise invalid_type("input", "a string or an array of input items", value)
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid_type(f"input[{index}]", "an object", item)


def upstream_body(request: TurnRequest, chain: Sequence[TurnRecord] | None) -> bytes:
    """The body the wrapped app receives: the whole chain as ``input``, oldest first,
    and no ``previous_response_id``; the original bytes when nothing needs changing."""
    if not request.needs_rewrite:
        return request.raw
    body = dict(request.body)
    del body["previous_response_id"]
    if chain:
        body["input"] = msgspec.Raw(chain_input(chain, request.input_items))
    return _encoder.encode(body)
