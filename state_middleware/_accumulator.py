"""Folding an upstream reply into a stored turn, and stamping our ids on it.

Pure and IO-free. Streams are fed one SSE ``data`` payload at a time: only the events
that carry a response object are decoded in full (to set ``id``,
``previous_response_id`` and ``store``); ``response.output_item.done`` items are kept as
raw bytes in case the terminal event comes without its output; every other event is
looked at only for its ``type``. :data:`PASSIVE_EVENTS` names the events this module
needs nothing from, so a caller may forward them without feeding them here.

Every array this module hands a store is in one canonical encoding (msgspec's compact
JSON, whatever the upstream's spelling: whitespace, escapes), so stored arrays splice
together by bytes into valid JSON.
"""

from __future__ import annotations

import enum
import time
from typing import Any

import msgspec

from ._record import TurnRecord

__all__ = ["PASSIVE_EVENTS", "Failure", "Outcome", "TurnAccumulator", "canonical_array"]

TERMINAL_OK = frozenset({"response.completed", "response.incomplete"})
STORABLE_STATUS = frozenset({"completed", "incomplete"})

#: stream events that carry no response object, no error and no finished item:
#: :meth:`TurnAccumulator.event` ignores them, so they need not be fed to it
PASSIVE_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.refusal.delta",
        "response.custom_tool_call_input.delta",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.reasoning_text.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.done",
    }
)


class Outcome(enum.Enum):
    """What one event means for the turn."""

    PASS = "pass"  # forward, nothing to decide
    DONE = "done"  # a terminal success: store, then forward
    ERROR = "error"  # an ``error`` event: the turn will not be stored; more may follow
    FAILED = "failed"  # a terminal failure: forward, never store


class _EventView(msgspec.Struct):
    type: str = ""
    response: msgspec.Raw = msgspec.Raw(b"")
    item: msgspec.Raw = msgspec.Raw(b"")
    output_index: int = -1
    sequence_number: int = -1


class _ErrorView(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None


class _ErrorEventView(msgspec.Struct):
    """An ``error`` event: the fields at the top level, or nested under ``error``."""

    message: str | None = None
    code: str | int | None = None
    error: _ErrorView | None = None


class _FailedView(msgspec.Struct):
    error: _ErrorView | None = None


_view_decoder = msgspec.json.Decoder(_EventView)
_error_decoder = msgspec.json.Decoder(_ErrorEventView)
_failed_decoder = msgspec.json.Decoder(_FailedView)
_any_decoder = msgspec.json.Decoder()
#: one level deep: keys decoded, values kept as their raw JSON bytes
_shallow = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()


_RESPONSE = msgspec.Raw(b'"response"')
_TRUE = msgspec.Raw(b"true")
_COMPLETED = msgspec.Raw(b'"completed"')
_INCOMPLETE = msgspec.Raw(b'"incomplete"')


def _string(value: msgspec.Raw | None) -> str | None:
    """The value of a raw JSON string (``None`` for anything else)."""
    if value is None or bytes(value)[:1] != b'"':
        return None
    try:
        decoded = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None
    return decoded if isinstance(decoded, str) else None


def canonical_array(array: bytes) -> bytes:
    """A JSON array in the one encoding stores keep (compact, as msgspec writes it).
    Raises ``msgspec.DecodeError`` for bytes that are not JSON."""
    return _encoder.encode(_any_decoder.decode(array))


class Failure(msgspec.Struct, frozen=True):
    """What an upstream said when its stream failed."""

    message: str
    code: str | None


class TurnAccumulator:
    """Collects one turn for storage and rewrites the response objects it carries."""

    __slots__ = (
        "_conversation",
        "_done_items",
        "_final",
        "_stamp",
        "background",
        "created_at",
        "failure",
        "input_items",
        "last_sequence",
        "output_list",
        "parent_id",
        "response_id",
        "store",
    )

    def __init__(
        self,
        *,
        response_id: str,
        parent_id: str | None,
        store: bool,
        input_items: bytes,
        conversation: str | None = None,
        background: bool = False,
    ) -> None:
        self.response_id = response_id
        self.background = background
        self.parent_id = parent_id
        self.store = store
        self.input_items = input_items
        self.created_at = int(time.time())
        self._done_items: dict[int, bytes] = {}
        self._final: dict[str, msgspec.Raw] | None = None
        self._stamp = (
            msgspec.Raw(_encoder.encode(response_id)),
            msgspec.Raw(_encoder.encode(parent_id)),
            msgspec.Raw(b"true" if store else b"false"),
        )
        self._conversation = (
            None if conversation is None else msgspec.Raw(_encoder.encode({"id": conversation}))
        )
        self.last_sequence = -1
        #: set by an ``error`` or ``response.failed`` event: the turn is not stored
        self.failure: Failure | None = None
        #: the output items of the stored turn, decoded (set by :meth:`record`)
        self.output_list: list[Any] = []

    # -- response objects -------------------------------------------------------
    def stamp(self, response: dict[str, msgspec.Raw]) -> dict[str, msgspec.Raw]:
        """Our id, the client's ``previous_response_id``/``store`` and, on a
        conversation's turn, ``conversation: {"id": ...}`` on an object decoded shallowly
        (values kept as raw JSON, so nothing else is re-encoded)."""
        response["id"] = self._stamp[0]
        response["previous_response_id"] = self._stamp[1]
        response["store"] = self._stamp[2]
        if self._conversation is not None:
            response["conversation"] = self._conversation
        if self.background:
            response["background"] = _TRUE
        return response

    def json_body(self, body: bytes) -> tuple[bytes, bool] | None:
        """A whole (non-stream) reply: the stamped bytes and whether to store it, or
        ``None`` when the body is not a response object (forwarded unchanged)."""
        try:
            response = _shallow.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            return None
        if _string(response.get("object")) != "response":
            return None
        self.stamp(response)
        storable = _string(response.get("status")) in STORABLE_STATUS
        if storable:
            self._final = response
        return _encoder.encode(response), storable

    # -- streams ------------------------------------------------------------------
    def event(self, data: bytes) -> tuple[bytes | None, Outcome]:
        """One SSE payload: the rewritten payload (``None`` if unchanged) and its
        outcome. Undecodable payloads pass through untouched."""
        try:
            view = _view_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            return None, Outcome.PASS
        kind = view.type
        if view.sequence_number > self.last_sequence:
            self.last_sequence = view.sequence_number
        if kind == "response.output_item.done" and view.output_index >= 0:
            self._done_items[view.output_index] = bytes(view.item)
            return None, Outcome.PASS
        if kind == "error":
            self.failure = _error_event_failure(data)
            return None, Outcome.ERROR
        if not view.response or bytes(view.response)[:1] != b"{":
            if kind == "response.failed":
                self.failure = self.failure or Failure(_UPSTREAM_FAILED, None)
                return None, Outcome.FAILED
            return None, Outcome.PASS
        event = _shallow.decode(data)
        response = self.stamp(_shallow.decode(view.response))
        event["response"] = msgspec.Raw(_encoder.encode(response))
        rewritten = _encoder.encode(event)
        if kind == "response.failed":
            self.failure = self.failure or _failed_response_failure(view.response)
            return rewritten, Outcome.FAILED
        if kind in TERMINAL_OK:
            if self.failure is not None:  # an error came first: nothing to keep
                return rewritten, Outcome.FAILED
            self._final = self._completed(response, kind)
            return rewritten, Outcome.DONE
        return rewritten, Outcome.PASS

    def _completed(self, response: dict[str, msgspec.Raw], kind: str) -> dict[str, msgspec.Raw]:
        """The object to store from a terminal event. Minimal servers (and what Codex
        accepts) send little more than the id there: the stored object still says what
        it is, so a later ``GET`` returns a well-formed response."""
        stored = dict(response)
        stored.setdefault("object", _RESPONSE)
        stored.setdefault("created_at", msgspec.Raw(str(self.created_at).encode()))
        status = _INCOMPLETE if kind == "response.incomplete" else _COMPLETED
        stored.setdefault("status", status)
        return stored

    # -- the stored turn ----------------------------------------------------------
    def record(self) -> TurnRecord:
        """The turn to store; call only after a terminal success."""
        response = self._final_response()
        output = bytes(response.pop("output"))
        created = response.get("created_at")
        try:
            created_at = int(msgspec.json.decode(created)) if created else self.created_at
        except (msgspec.DecodeError, TypeError, ValueError):
            created_at = self.created_at
        return TurnRecord(
            id=self.response_id,
            parent_id=self.parent_id,
            created_at=created_at,
            input_items=self.input_items,
            output_items=output,
            # Never spliced by bytes (read back whole), so the upstream's spelling of the
            # other values may stay.
            response=_encoder.encode(response),
        )

    @property
    def succeeded(self) -> bool:
        """A terminal success went by (and no failure before it)."""
        return self._final is not None and self.failure is None

    def response_body(self) -> bytes:
        """The whole stamped response object (``output`` included) of a finished
        stream, as a JSON reply; call only after a terminal success."""
        return _encoder.encode(self._final_response())

    def _final_response(self) -> dict[str, msgspec.Raw]:
        """The terminal response object with a canonical ``output``, rebuilt from the
        finished items when the terminal event left it out."""
        if self._final is None:
            raise RuntimeError("no terminal response")
        response = dict(self._final)
        # Valid JSON by construction: decoded once already, here or by the event view.
        output = _any_decoder.decode(bytes(response.get("output", b"null")))
        if not isinstance(output, list) or not output:
            items = [self._done_items[i] for i in sorted(self._done_items)]
            output = _any_decoder.decode(b"[" + b",".join(items) + b"]")
        response["output"] = msgspec.Raw(_encoder.encode(output))
        self.output_list = output
        return response

    def failed_event(self, sequence_number: int, code: str, message: str) -> list[bytes]:
        """Payloads announcing that the turn could not be kept (``error`` then
        ``response.failed``), for a store that failed after the stream ran."""
        sequence_number = max(sequence_number, 0)
        response: dict[str, Any] = dict(self._final or {})
        response.setdefault("id", self.response_id)
        response.setdefault("object", "response")
        response["status"] = "failed"
        # The SDK accepts only its own codes here; the store's code is on `error`.
        response["error"] = {"code": "server_error", "message": message}
        error = {
            "type": "error",
            "sequence_number": sequence_number,
            "error": {"type": "server_error", "code": code, "message": message, "param": None},
        }
        failed = {
            "type": "response.failed",
            "sequence_number": sequence_number + 1,
            "response": response,
        }
        return [_encoder.encode(error), _encoder.encode(failed)]


_UPSTREAM_FAILED = "The upstream response failed."


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _error_event_failure(data: bytes) -> Failure:
    try:
        view = _error_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Failure(_UPSTREAM_FAILED, None)
    nested = view.error or _ErrorView()
    message = nested.message or view.message or _UPSTREAM_FAILED
    return Failure(message, _text(nested.code if nested.code is not None else view.code))


def _failed_response_failure(response: msgspec.Raw) -> Failure:
    try:
        error = _failed_decoder.decode(response).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        error = None
    if error is None:
        return Failure(_UPSTREAM_FAILED, None)
    return Failure(error.message or _UPSTREAM_FAILED, _text(error.code))
