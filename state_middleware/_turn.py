"""One ``POST {prefix}/responses`` request: replay the chain, call the app, keep the turn.

The responder reads the body (bounded), loads the stored chain, hands the app a
rewritten request, and tees the reply: SSE frames go to the client as they complete
(only the frames carrying a response object are rewritten, to stamp our id), and the
turn is stored before the frame of its terminal event is sent.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from ._accumulator import Outcome, TurnAccumulator
from ._asgi import (
    BodyTooLarge,
    ClientGone,
    header,
    read_body,
    send_api_error,
    send_json,
    with_headers,
)
from ._bridge_errors import BridgeError
from ._bridge_reasoning import reasoning_by_call_id
from ._bridge_response import response_skeleton
from ._bridge_turn import (
    BridgeOptions,
    ChatReplyTranslator,
    call_ids,
    chat_request_body,
    expanded_input,
)
from ._errors import ApiError, error_body, previous_not_found
from ._ids import new_response_id
from ._record import TurnRecord
from ._request import TurnRequest, parse_turn_request, upstream_body
from ._settings import Settings
from ._sse import SSEDecoder, SSEFrame, format_frame, replace_data
from ._store import StoreError

__all__ = ["TurnResponder"]

logger = logging.getLogger("state_middleware")

_BODY_HEADERS = (b"content-length", b"transfer-encoding")
_items_decoder = msgspec.json.Decoder(list[dict[str, Any]])


class _Mode(enum.Enum):
    PASS = "pass"  # forwarded untouched; nothing stored
    SSE = "sse"  # teed frame by frame
    JSON = "json"  # one response object, stamped then forwarded


def store_error(exc: StoreError) -> ApiError:
    return ApiError(
        503,
        "The response store is unavailable; please retry.",
        type="server_error",
        code=exc.code,
    )


class TurnResponder:
    """All state of one turn request; built per request by the middleware."""

    def __init__(
        self,
        settings: Settings,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        self.settings = settings
        self.scope = scope
        self.receive = receive
        self.send = send
        self.owner = ""
        self.body = b""
        self.body_sent = False
        self.client_gone = False
        self.mode = _Mode.PASS
        self.settled = False  # a terminal event went by
        self.held_start: Any = None
        self.held_body: list[bytes] = []
        self.held_size = 0
        self.decoder = SSEDecoder()
        self.request: TurnRequest | None = None
        self.turn: TurnAccumulator | None = None

    async def __call__(self) -> None:
        settings = self.settings
        try:
            raw = await read_body(self.receive, settings.max_body_bytes, self._declared_length())
        except ClientGone:
            return
        except BodyTooLarge as exc:
            await send_api_error(
                self.send,
                ApiError(
                    413,
                    f"Request body too large: the limit is {exc.limit} bytes.",
                    code="request_too_large",
                ),
            )
            return
        try:
            request = parse_turn_request(raw)
            self.owner = settings.identity(self.scope) or ""
            chain = await self._load_chain(request)
        except ApiError as exc:
            await send_api_error(self.send, exc)
            return
        self.request = request
        if settings.bridge is not None:
            await self._run_bridge(request, chain, settings.bridge)
            return
        self.body = upstream_body(request, chain)
        if not request.store and request.previous_response_id is None:
            # Nothing to replay, nothing to keep: the app answers as if we were absent.
            await settings.app(self._upstream_scope(), self._receive, self.send)
            return
        self._begin_turn(request)
        await self._run_app(self._upstream_scope(), self._send)

    def _begin_turn(self, request: TurnRequest) -> TurnAccumulator:
        self.turn = TurnAccumulator(
            response_id=new_response_id(),
            parent_id=request.previous_response_id,
            store=request.store,
            input_items=request.input_items,
        )
        return self.turn

    async def _run_app(self, scope: Any, send: Any) -> None:
        assert self.request is not None
        assert self.turn is not None
        store, owner, response_id = self.settings.store, self.owner, self.turn.response_id
        pending = self.request.store
        if pending:
            try:
                await store.begin(owner, response_id)
            except StoreError as exc:
                # A turn that could not be kept must not run: answer before the app.
                logger.warning("store failed starting %s: %s", response_id, exc)
                await send_api_error(self.send, store_error(exc))
                return
        try:
            await self.settings.app(scope, self._receive, send)
        finally:
            if pending:
                await self._end_pending(response_id)

    async def _end_pending(self, response_id: str) -> None:
        try:
            await self.settings.store.end(self.owner, response_id)
        except StoreError as exc:  # the pending mark expires by itself
            logger.warning("store failed ending %s: %s", response_id, exc)

    async def _run_bridge(
        self, request: TurnRequest, chain: list[TurnRecord] | None, options: BridgeOptions
    ) -> None:
        """Answer the turn by calling ``{prefix}/chat/completions`` on the app."""
        items = expanded_input(request, chain)
        try:
            ids = call_ids(items)
            notes = await self.settings.store.recall(self.owner, ids) if ids else {}
            recovered = {key: value.decode() for key, value in notes.items()}
            self.body = chat_request_body(request, items, options, recovered)
        except StoreError as exc:
            await send_api_error(self.send, store_error(exc))
            return
        except BridgeError as exc:
            await send_json(self.send, exc.status, exc.to_body())
            return
        turn = self._begin_turn(request)
        base = response_skeleton(
            request.body,
            response_id=turn.response_id,
            created_at=turn.created_at,
            previous_response_id=request.previous_response_id,
            store=request.store,
        )
        path = self.settings.prefix + "/chat/completions"
        root = self.scope.get("root_path", "")
        scope = {**self._upstream_scope(), "path": root + path, "raw_path": (root + path).encode()}
        send = ChatReplyTranslator(base, self._send, self.settings.max_body_bytes)
        await self._run_app(scope, send)

    def _declared_length(self) -> int | None:
        value = header(self.scope["headers"], b"content-length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    async def _load_chain(self, request: TurnRequest) -> list[TurnRecord] | None:
        previous = request.previous_response_id
        if previous is None:
            return None
        store = self.settings.store
        try:
            chain = await store.get_chain(self.owner, previous)
            if chain is None and await store.wait(
                self.owner, previous, self.settings.pending_timeout
            ):
                chain = await store.get_chain(self.owner, previous)
        except StoreError as exc:
            logger.warning("store failed loading %s: %s", previous, exc)
            raise store_error(exc) from None
        if chain is None:
            raise previous_not_found(previous)
        return chain

    # -- the request the app sees ---------------------------------------------------
    def _upstream_scope(self) -> Any:
        if self.request is not None and self.body is self.request.raw:
            return self.scope
        headers = with_headers(
            self.scope["headers"],
            _BODY_HEADERS,
            [(b"content-length", str(len(self.body)).encode())],
        )
        return {**self.scope, "headers": headers}

    async def _receive(self) -> Any:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        message: Any = await self.receive()
        if message["type"] == "http.disconnect":
            self.client_gone = True
        return message

    # -- the reply the client sees ------------------------------------------------------
    async def _forward(self, message: Any) -> None:
        try:
            await self.send(message)
        except Exception:
            self.client_gone = True
            raise

    async def _send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self.mode is _Mode.SSE:
            await self._sse_body(message)
        elif kind == "http.response.body" and self.mode is _Mode.JSON:
            await self._json_body(message)
        else:
            await self._forward(message)

    async def _start(self, message: Any) -> None:
        status: int = message["status"]
        headers = message.get("headers", [])
        content_type = (header(headers, b"content-type") or b"").lower()
        encoding = header(headers, b"content-encoding")
        if not 200 <= status < 300 or (encoding and encoding.lower() != b"identity"):
            self.mode = _Mode.PASS
        elif content_type.startswith(b"text/event-stream"):
            self.mode = _Mode.SSE
            message = {**message, "headers": with_headers(headers, [b"content-length"])}
        elif b"json" in content_type:
            self.mode = _Mode.JSON
            self.held_start = message
            return
        await self._forward(message)

    async def _sse_body(self, message: Any) -> None:
        assert self.turn is not None
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if more and (self.settled or _plain_frames(chunk, self.decoder)):
            await self._forward(message)  # nothing in it concerns the turn
            return
        frames = self.decoder.feed(chunk) if chunk else []
        if not more:
            frames += self.decoder.flush()
        out: list[bytes] = []
        for frame in frames:
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
                raw = await self._commit_stream(frame, raw)
            elif outcome is Outcome.FAILED:
                self.settled = True
            out.append(raw)
        if out or not more:
            await self._forward(
                {"type": "http.response.body", "body": b"".join(out), "more_body": more}
            )

    async def _commit_stream(self, frame: SSEFrame, raw: bytes) -> bytes:
        """Store the turn; on a store failure the terminal frame becomes a failure."""
        try:
            await self._commit()
        except StoreError as exc:
            assert self.turn is not None
            payloads = self.turn.failed_event(
                self.turn.last_sequence, exc.code, _not_stored_message(exc)
            )
            return format_frame("error", payloads[0]) + format_frame("response.failed", payloads[1])
        return raw

    async def _commit(self) -> None:
        assert self.request is not None
        assert self.turn is not None
        if not self.request.store or self.client_gone:
            return
        record = self.turn.record()
        try:
            await self.settings.store.put(self.owner, record)
        except StoreError as exc:
            logger.error("response %s was not stored: %s", record.id, exc)
            raise
        await self._end_pending(record.id)
        logger.debug("stored response %s (parent %s)", record.id, record.parent_id)
        if self.settings.bridge is not None:
            await self._remember_reasoning(record)

    async def _remember_reasoning(self, record: TurnRecord) -> None:
        """Keep the reasoning of the turn's tool calls, by call id, for clients that
        later resend the history without the reasoning items."""
        found = reasoning_by_call_id(_items_decoder.decode(record.output_items))
        if not found:
            return
        try:
            await self.settings.store.remember(
                self.owner, {key: text.encode() for key, text in found.items()}
            )
        except StoreError as exc:  # the turn is stored; only the index is missing
            logger.warning("reasoning of response %s was not indexed: %s", record.id, exc)

    async def _json_body(self, message: Any) -> None:
        assert self.turn is not None
        chunk: bytes = message.get("body", b"")
        self.held_body.append(chunk)
        self.held_size += len(chunk)
        if self.held_size > self.settings.max_body_bytes:
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
        headers = with_headers(
            self.held_start.get("headers", []),
            _BODY_HEADERS,
            [(b"content-length", str(len(new_body)).encode())],
        )
        await self._forward({**self.held_start, "headers": headers})
        await self._forward({"type": "http.response.body", "body": new_body, "more_body": False})

    async def _release_held(self, more: bool) -> None:
        """Give up on rewriting: forward what was held, then pass the rest through."""
        self.mode = _Mode.PASS
        await self._forward(self.held_start)
        body = b"".join(self.held_body)
        self.held_body = []
        await self._forward({"type": "http.response.body", "body": body, "more_body": more})


def _plain_frames(chunk: bytes, decoder: SSEDecoder) -> bool:
    """Whether ``chunk`` is whole frames none of which the turn needs to look at:
    no response object (the only thing stamped), no error, no finished item. A
    quoted word inside a JSON string has escaped quotes, so the byte checks cannot be
    fooled by text the model wrote."""
    return (
        not decoder.pending
        and chunk.endswith(b"\n\n")
        and b'"response"' not in chunk
        and b'"error"' not in chunk
        and b"output_item.done" not in chunk
        and b"\r" not in chunk
    )


def _not_stored_message(exc: StoreError) -> str:
    return f"The response was generated but could not be stored ({exc.code}); retry the turn."


def _store_failure_body(exc: StoreError) -> bytes:
    return error_body(_not_stored_message(exc), "server_error", None, exc.code)
