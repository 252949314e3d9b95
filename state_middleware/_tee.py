"""The reply side of a turn: tee the app's answer to the client and into the store.

``ReplyTee`` is the ``send`` the app gets. SSE frames go to the client as they complete
(chunks holding nothing the turn needs are forwarded untouched without parsing; frames
carrying a response object are rewritten to stamp our id), and the turn is stored
before the frame of its terminal event is sent. A non-stream JSON reply is one object:
it is held (bounded), stamped, stored, then sent with a correct Content-Length. Other
replies (non-2xx, compressed, other types) pass through untouched and are not stored.

A stream the client did not ask for (some servers stream whenever ``stream`` is absent)
is read whole (bounded), accumulated like any stream, stored, and answered as the one
JSON response object the client expects; a stream that fails or is cut is a 502
carrying the upstream's message, and nothing is stored.

The tee keeps nothing itself: ``commit`` (the turn's) stores the accumulated turn.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.typing import ASGISendCallable

from ._accumulator import PASSIVE_EVENTS, Outcome, TurnAccumulator
from ._asgi import header, send_json, with_content_length, with_headers
from ._errors import ApiError, error_body
from ._sse import SSEDecoder, format_frame, replace_data
from ._store import StoreError

__all__ = ["STREAM_CUT_MESSAGE", "ReplyTee"]

logger = logging.getLogger("state_middleware")

STREAM_CUT_MESSAGE = "The upstream response stream ended before it was complete."
STREAM_TOO_LARGE_MESSAGE = "The upstream response stream is too large to answer as JSON."

#: the frames of events the turn needs nothing from start with one of these
_PASSIVE_FRAMES = tuple(b"event: " + name.encode() + b"\n" for name in sorted(PASSIVE_EVENTS))


class _Mode(enum.Enum):
    PASS = "pass"  # forwarded untouched; nothing stored
    SSE = "sse"  # teed frame by frame
    JSON = "json"  # one response object, stamped then forwarded
    COLLECT = "collect"  # a stream nobody asked for, answered as one JSON object
    DROP = "drop"  # the rest of a reply already answered


class ReplyTee:
    """All reply-side state of one turn."""

    def __init__(
        self,
        *,
        send: ASGISendCallable,
        turn: TurnAccumulator,
        commit: Callable[[], Awaitable[None]],
        max_body_bytes: int,
        wants_stream: bool,
        watch_client: Callable[[], object] | None = None,
    ) -> None:
        self.send = send
        self.turn = turn
        self.commit = commit  # stores the turn; raises ``StoreError``
        self.max_body_bytes = max_body_bytes
        self.wants_stream = wants_stream
        self.watch_client = watch_client  # starts watching for a disconnect
        self.client_gone = False
        self.replied = False  # the last body of the reply went out
        self.mode = _Mode.PASS
        self.settled = False  # a terminal event went by
        self.held_start: Any = None
        self.held_body: list[bytes] = []
        self.held_size = 0
        self.decoder = SSEDecoder()

    async def _forward(self, message: Any) -> None:
        try:
            await self.send(message)
        except Exception:
            self.client_gone = True
            raise
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.replied = True

    def __call__(self, message: Any) -> Awaitable[None]:
        if self.mode is _Mode.SSE and message.get("more_body", False):
            body = message.get("body", b"")
            # One whole frame of a kind the turn never needs (the bulk of a stream:
            # deltas) goes out untouched and unparsed: its event line names it, its
            # data is a single line, and nothing of an earlier frame is pending. It is
            # handed to the server's own ``send`` with no coroutine of ours around it
            # (a client leaving is noticed by the watch on ``receive``).
            if self.settled or (
                body.startswith(_PASSIVE_FRAMES)
                and body.find(b"\n", body.find(b"\n") + 1) == len(body) - 2
                and body.endswith(b"\n\n")
                and not self.decoder.pending
            ):
                return self.send(message)
        return self._handle(message)

    def direct_send(self) -> ASGISendCallable | None:
        """The server's own ``send``, for a caller that from now on hands this tee
        whole SSE frames only, and may then send a whole frame of an event the turn
        never needs (a delta) straight through it: such a frame changes nothing here.
        ``None`` unless the reply is being teed as an event stream with nothing pending.
        """
        if self.mode is _Mode.SSE and not self.decoder.pending:
            return self.send
        return None

    async def _handle(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self.mode is _Mode.SSE:
            await self._sse_body(message)
        elif kind == "http.response.body" and self.mode is _Mode.JSON:
            await self._json_body(message)
        elif kind == "http.response.body" and self.mode is _Mode.COLLECT:
            await self._collect_body(message)
        elif self.mode is _Mode.DROP:
            return
        else:
            await self._forward(message)

    async def _start(self, message: Any) -> None:
        status: int = message["status"]
        headers = message.get("headers", [])
        content_type = (header(headers, b"content-type") or b"").lower()
        encoding = header(headers, b"content-encoding")
        if not 200 <= status < 300 or (encoding and encoding.lower() != b"identity"):
            self.mode = _Mode.PASS
        elif content_type.startswith(b"text/event-stream") and not self.wants_stream:
            self.mode = _Mode.COLLECT
            self.held_start = message
            return
        elif content_type.startswith(b"text/event-stream"):
            self.mode = _Mode.SSE
            if self.watch_client is not None:
                self.watch_client()  # a client leaving mid-stream must be noticed
            message = {**message, "headers": with_headers(headers, [b"content-length"])}
        elif b"json" in content_type:
            self.mode = _Mode.JSON
            self.held_start = message
            return
        await self._forward(message)

    async def _sse_body(self, message: Any) -> None:
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        out: list[bytes] = []
        for frame in self.decoder.frames(chunk, last=not more):
            if self.settled or frame.data is None:
                out.append(frame.raw)
                continue
            data, outcome = self.turn.event(frame.data)
            raw = frame.raw if data is None else replace_data(frame, data)
            if outcome is Outcome.DONE:
                self.settled = True
                if out:
                    await self._forward(
                        {"type": "http.response.body", "body": b"".join(out), "more_body": True}
                    )
                    out = []
                raw = await self._commit_stream(raw)
            elif outcome is Outcome.FAILED:
                self.settled = True
            out.append(raw)
        if out or not more:
            await self._forward(
                {"type": "http.response.body", "body": b"".join(out), "more_body": more}
            )

    async def _commit_stream(self, raw: bytes) -> bytes:
        """Store the turn; on a store failure the terminal frame becomes a failure."""
        try:
            await self._commit()
        except StoreError as exc:
            payloads = self.turn.failed_event(
                self.turn.last_sequence, exc.code, _not_stored_message(exc)
            )
            return format_frame("error", payloads[0]) + format_frame("response.failed", payloads[1])
        return raw

    async def _commit(self) -> None:
        if not self.client_gone:
            await self.commit()

    async def _json_body(self, message: Any) -> None:
        chunk: bytes = message.get("body", b"")
        self.held_body.append(chunk)
        self.held_size += len(chunk)
        if self.held_size > self.max_body_bytes:
            await self._release_held(message.get("more_body", False))
            return
        if message.get("more_body", False):
            return
        body = b"".join(self.held_body)
        stamped = self.turn.json_body(body)
        if stamped is None:
            await self._release_held(False)
            return
        new_body, storable = stamped
        if storable:
            try:
                await self._commit()
            except StoreError as exc:
                await send_json(self.send, 503, _store_failure_body(exc))
                return
        headers = with_content_length(self.held_start.get("headers", []), len(new_body))
        await self._forward({**self.held_start, "headers": headers})
        await self._forward({"type": "http.response.body", "body": new_body, "more_body": False})

    async def _release_held(self, more: bool) -> None:
        """Give up on rewriting: forward what was held, then pass the rest through."""
        self.mode = _Mode.PASS
        await self._forward(self.held_start)
        body = b"".join(self.held_body)
        self.held_body = []
        await self._forward({"type": "http.response.body", "body": body, "more_body": more})

    async def _collect_body(self, message: Any) -> None:
        """A stream the client did not ask for: accumulated whole, then answered as one
        JSON response (stored first), or a 502 with the upstream's message."""
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        self.held_size += len(chunk)
        if self.held_size > self.max_body_bytes:
            self.mode = _Mode.DROP
            await self._answer(ApiError(502, STREAM_TOO_LARGE_MESSAGE).body(), 502)
            return
        for frame in self.decoder.frames(chunk, last=not more):
            if frame.data is not None and not self.settled:
                outcome = self.turn.event(frame.data)[1]
                self.settled = outcome in (Outcome.DONE, Outcome.FAILED)
        if more:
            return
        failure = self.turn.failure
        if self.settled and failure is None:
            try:
                await self._commit()
            except StoreError as exc:
                await self._answer(_store_failure_body(exc), 503)
                return
            await self._answer(self.turn.response_body(), 200)
            return
        message_text = failure.message if failure is not None else STREAM_CUT_MESSAGE
        code = failure.code if failure is not None else None
        await self._answer(ApiError(502, message_text, code=code).body(), 502)

    async def _answer(self, body: bytes, status: int) -> None:
        """One whole JSON reply in place of the stream the app sent."""
        await send_json(self._forward, status, body)


def _not_stored_message(exc: StoreError) -> str:
    return f"The response was generated but could not be stored ({exc.code}); retry the turn."


def _store_failure_body(exc: StoreError) -> bytes:
    return error_body(_not_stored_message(exc), "server_error", None, exc.code)
