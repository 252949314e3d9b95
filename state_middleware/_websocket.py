"""The WebSocket front door: ``{prefix}/responses`` over a WebSocket (OpenAI's
WebSocket mode, as Codex and the SDK's ``responses.connect()`` use it).

Each ``response.create`` text frame is one :class:`~._turn.Turn`; the app gets the
ordinary streamed ``POST {prefix}/responses`` (it need not speak WebSocket), and every
event goes back as one text frame holding the SSE ``data`` payload (no ``event:`` line,
no ``[DONE]``). Turns of one lane (``stream_id``; no ``stream_id`` is the default lane)
run one after another in arrival order; lanes run side by side, at most
``MAX_IN_FLIGHT`` turns at once and ``MAX_LANES`` named lanes per connection.

State: ``store: true`` turns are stored and chain as over HTTP. Besides, each lane keeps
its most recent response's history in memory, so a ``store: false`` turn can be
continued with ``previous_response_id`` on that connection; it is never written to a
store and is gone with the connection. A continuation that fails evicts its base, as
OpenAI does. ``generate: false`` (Codex's warm-up) is answered here without calling the
app: ``response.created`` and ``response.completed``, no output, an id to continue.

Errors are ``{"type": "error", "status": ..., "error": {...}}`` frames (with the lane's
``stream_id``) and the connection stays usable. The client closing stops its turns'
requests to the app. Identity comes from the handshake's headers, as for HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._asgi import with_content_length
from ._errors import ApiError, invalid_type, previous_not_found
from ._ids import new_response_id, tree_of
from ._record import TurnRecord, chain_input, join_arrays
from ._request import TurnRequest, decode_object, parse_turn_request
from ._settings import Settings
from ._skeleton import response_skeleton
from ._store import StoreError
from ._turn import Turn
from ._websocket_frames import FrameSink, error_frame, http_scope

__all__ = ["MAX_IN_FLIGHT", "MAX_LANES", "WebSocketSession", "refuse_websocket"]

MAX_IN_FLIGHT = 16
MAX_LANES = 32
_LANE_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


async def refuse_websocket(scope: Any, send: ASGISendCallable) -> None:
    """Refuse the handshake: HTTP 426 where the server can send a denial response
    (Codex then falls back to HTTP at once), else a plain close (the server answers
    403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = ApiError(426, "WebSocket mode is off on this server; use HTTP.").body()
        start: Any = {
            "type": "websocket.http.response.start",
            "status": 426,
            "headers": [(b"content-type", b"application/json"), (b"upgrade", b"websocket")],
        }
        await send(start)
        denial: Any = {"type": "websocket.http.response.body", "body": body}
        await send(denial)
        return
    close: Any = {"type": "websocket.close", "code": 1008}
    await send(close)


class WebSocketSession:
    """All state of one WebSocket connection."""

    def __init__(
        self, settings: Settings, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        self.settings = settings
        self.receive = receive
        self.send = send
        self.http_scope = http_scope(scope)
        self.owner = settings.identity(self.http_scope) or ""
        self.closed = asyncio.Event()
        self.sending = asyncio.Lock()
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.lanes: dict[str | None, _Lane] = {}

    async def run(self) -> None:
        first: Any = await self.receive()
        if first["type"] != "websocket.connect":
            return
        accept: Any = {"type": "websocket.accept"}
        await self.send(accept)
        try:
            while True:
                message: Any = await self.receive()
                if message["type"] != "websocket.receive":
                    break  # websocket.disconnect (nothing else may come)
                text = message.get("text")
                data = text.encode() if text is not None else message.get("bytes") or b""
                await self._dispatch(data)
        finally:
            self.closed.set()  # running turns see the caller gone
            lanes = [lane.task for lane in self.lanes.values() if lane.task is not None]
            if lanes:
                await asyncio.gather(*lanes, return_exceptions=True)

    # -- frames in -------------------------------------------------------------------------
    async def _dispatch(self, data: bytes) -> None:
        try:
            frame = decode_object(data)  # the errors a POST body gets
        except ApiError as exc:
            await self.send_error(exc, None)
            return
        stream_id = frame.get("stream_id")
        if stream_id is not None and (
            not isinstance(stream_id, str) or not _LANE_ID.fullmatch(stream_id)
        ):
            error = ApiError(
                400,
                "Invalid 'stream_id': expected 1 to 256 letters, digits, '_', '.' or '-'.",
                param="stream_id",
                code="invalid_stream_id",
            )
            await self.send_error(error, None)
            return
        kind = frame.get("type")
        if kind != "response.create":
            error = ApiError(
                400,
                f"Invalid value for 'type': {kind!r}. Supported values are: 'response.create'.",
                param="type",
                code="invalid_value",
            )
            await self.send_error(error, stream_id)
            return
        lane = self.lanes.get(stream_id)
        if lane is None:
            if stream_id is not None and len(self.lanes) - (None in self.lanes) >= MAX_LANES:
                error = ApiError(
                    400,
                    "This WebSocket connection has reached its maximum number of distinct "
                    f"stream IDs ({MAX_LANES}). Reuse a stream ID or open a new connection.",
                    param="stream_id",
                    code="websocket_stream_limit_reached",
                )
                await self.send_error(error, stream_id)
                return
            lane = self.lanes[stream_id] = _Lane(self, stream_id)
        lane.push(frame)

    # -- frames out ------------------------------------------------------------------------
    async def send_text(self, payload: bytes) -> None:
        if self.closed.is_set():
            return
        message: Any = {"type": "websocket.send", "text": payload.decode()}
        async with self.sending:
            try:
                await self.send(message)
            except Exception:  # the client is gone
                self.closed.set()

    async def send_error(self, error: ApiError, stream_id: str | None) -> None:
        await self.send_text(error_frame(error.status, error.body(), stream_id))

    async def caller(self) -> Any:
        """A turn's ``receive`` after its body: the caller leaves when the socket
        closes."""
        await self.closed.wait()
        return {"type": "http.disconnect"}


class _Lane:
    """One ``stream_id``: its turns in arrival order, and its most recent response."""

    def __init__(self, session: WebSocketSession, stream_id: str | None) -> None:
        self.session = session
        self.stream_id = stream_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        #: the most recent response of this lane: its id, and the history a turn
        #: continuing it gets
        self.recent: dict[str, bytes] = {}
        #: whether the store holds it too: a turn continuing it then loads it from
        #: there, as over HTTP (and, stored, gets it as its parent)
        self.recent_stored = False

    def push(self, frame: dict[str, Any]) -> None:
        self.queue.put_nowait(frame)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        session = self.session
        while not self.queue.empty() and not session.closed.is_set():
            frame = self.queue.get_nowait()
            async with session.in_flight:
                try:
                    await self._turn(frame)
                except ApiError as exc:
                    await session.send_error(exc, self.stream_id)
                except StoreError as exc:
                    await session.send_error(
                        ApiError(503, f"The response store is unavailable ({exc.code})."),
                        self.stream_id,
                    )

    async def _turn(self, frame: dict[str, Any]) -> None:
        session = self.session
        body = {k: v for k, v in frame.items() if k not in ("type", "stream_id", "generate")}
        generate = frame.get("generate", True)
        if not isinstance(generate, bool):
            raise invalid_type("generate", "a boolean", generate)
        if body.get("background"):
            raise ApiError(
                400, "Background mode is not supported over WebSocket.", param="background"
            )
        body["stream"] = True  # implicit over a WebSocket (clients send it anyway)
        request = parse_turn_request(_encoder.encode(body))
        previous = request.previous_response_id
        if not generate:
            await self._warm_up(request)
            return
        # the app sees a POST of this body (a proxy forwards as much as it declares)
        headers = with_content_length(session.http_scope["headers"], len(request.raw))
        turn = Turn(
            session.settings,
            {**session.http_scope, "headers": headers},
            session.owner,
            request,
            recent={} if self.recent_stored else self.recent,
            door="websocket",
        )
        sink = FrameSink(session.send_text, self.stream_id)
        await turn.run(sink.send, session.caller)
        continued = turn.continued_history()
        if continued is not None:
            self.recent = {turn.response_id: continued}
            self.recent_stored = request.store
        elif previous is not None:
            self.recent.pop(previous, None)  # a failed continuation evicts its base

    async def _warm_up(self, request: TurnRequest) -> None:
        """``generate: false``: a response with no output that can be continued (on this
        connection; with ``store: true`` over HTTP too)."""
        session = self.session
        store, owner = session.settings.store, session.owner
        previous = request.previous_response_id
        history = b"[]"
        detached = False  # continuing a response no store holds
        if previous is not None:
            found = None if self.recent_stored else self.recent.get(previous)
            detached = found is not None
            if found is None:
                chain = await store.get_chain(owner, previous)
                if chain is None:
                    raise previous_not_found(previous)
                found = chain_input(chain)
            history = found
        response_id = new_response_id(tree_of(previous))
        now = int(time.time())
        response = response_skeleton(
            request.body,
            response_id=response_id,
            created_at=now,
            previous_response_id=previous,
            store=request.store,
        )
        done = {**response, "status": "completed", "completed_at": now}
        if request.store:
            without_output = {key: value for key, value in done.items() if key != "output"}
            # Continuing a response no store holds, it keeps that history as its own
            # input, with no parent (as a stored turn does: see Turn.detached).
            record = TurnRecord(
                id=response_id,
                parent_id=None if detached else previous,
                created_at=now,
                input_items=(
                    join_arrays([history, request.input_items]) if detached else request.input_items
                ),
                output_items=b"[]",
                response=_encoder.encode(without_output),
            )
            await store.put(owner, record)
        created = {"type": "response.created", "sequence_number": 0, "response": response}
        completed = {"type": "response.completed", "sequence_number": 1, "response": done}
        for event in (created, completed):
            if self.stream_id is not None:
                event["stream_id"] = self.stream_id
            await session.send_text(_encoder.encode(event))
        self.recent = {response_id: join_arrays([history, request.input_items])}
        self.recent_stored = request.store
