"""Reading a ``POST /responses`` body and rewriting it for the upstream.

Only the fields the middleware needs are checked (``input``, ``previous_response_id``,
``conversation``, ``store``, ``stream``). Rewriting happens on the decoded dict, so every field the
middleware does not know passes through unchanged; stored history is spliced in as
raw JSON bytes and never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import msgspec

from ._errors import ApiError, invalid_type
from ._ids import ID_PATTERN
from ._record import join_arrays

__all__ = ["TurnRequest", "decode_object", "parse_turn_request", "upstream_body"]

#: fields only the middleware reads: the app never sees them
_STATE_FIELDS = ("previous_response_id", "conversation", "background")
BACKGROUND_NEEDS_STORE = "Background mode requires store=true."
_MUTUALLY_EXCLUSIVE = (
    "Mutually exclusive parameters: Ensure you are only providing one of: "
    "'previous_response_id' or 'conversation'."
)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class TurnRequest:
    raw: bytes
    body: dict[str, Any]
    previous_response_id: str | None
    store: bool
    stream: bool
    #: the conversation this turn reads and extends (``None``: none)
    conversation: str | None = None
    #: run without the client (``background: true``)
    background: bool = False

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
        return any(name in self.body for name in _STATE_FIELDS)

    @property
    def input_list(self) -> list[Any]:
        """This request's own input as a list of items (a string is one user message)."""
        value = self.body.get("input")
        if value is None:
            return []
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        return list(value)

    def for_background(self) -> TurnRequest:
        """The request a background turn sends the app: always a stream (so that its
        progress can be recorded), without ``background``."""
        body = {**self.body, "stream": True}
        return replace(self, raw=_encoder.encode(body), body=body, stream=True)

    def with_input(self, items: list[Any]) -> TurnRequest:
        """The same request with another ``input`` (item references expanded)."""
        body = {**self.body, "input": items}
        return replace(self, raw=_encoder.encode(body), body=body)


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
    conversation = _conversation(body.get("conversation"))
    background = _flag(body, "background", default=False)
    if background and not _flag(body, "store", default=True):
        raise ApiError(400, BACKGROUND_NEEDS_STORE, param="store")
    if conversation is not None and previous is not None:
        raise ApiError(400, _MUTUALLY_EXCLUSIVE, param="conversation")
    return TurnRequest(
        raw=raw,
        body=body,
        previous_response_id=previous,
        store=_flag(body, "store", default=True),
        stream=_flag(body, "stream", default=False),
        conversation=conversation,
        background=background,
    )


def _conversation(value: object) -> str | None:
    """The conversation id of ``conversation`` (a string or ``{"id": ...}``)."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str):
            raise invalid_type("conversation.id", "a string", value)
    elif not isinstance(value, str):
        raise invalid_type("conversation", "a string or an object with an id", value)
    if not ID_PATTERN.fullmatch(value):
        raise ApiError(
            400,
            f"Invalid 'conversation': '{value}'. Expected an ID that contains letters, "
            "numbers, underscores, or dashes, but this value contained additional "
            "characters.",
            param="conversation",
            code="invalid_value",
        )
    return value


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


def upstream_body(request: TurnRequest, history: bytes | None) -> bytes:
    """The body the wrapped app receives: ``history`` (a JSON array of the items this
    turn continues, oldest first) then this request's input as ``input``, without
    ``previous_response_id`` or ``conversation``; the original bytes when nothing needs
    changing."""
    if not request.needs_rewrite:
        return request.raw
    body = dict(request.body)
    for name in _STATE_FIELDS:
        body.pop(name, None)
    if history is not None:
        body["input"] = msgspec.Raw(join_arrays([history, request.input_items]))
    return _encoder.encode(body)
