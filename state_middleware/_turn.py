"""One ``POST {prefix}/responses`` request: replay the chain, call the app, keep the turn.

The responder reads the body (bounded, disconnect-aware), loads the stored chain, hands
the app a rewritten request (its body replayed once, then ``receive`` delegated), and
gives the app a ``ReplyTee`` as ``send``. With the chat bridge the request is
translated first and the reply goes through a ``ChatReplyTranslator`` on its way to the
tee, so storage works the same either way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from ._accumulator import TurnAccumulator
from ._asgi import (
    BodyTooLarge,
    ClientGone,
    header,
    read_body,
    send_api_error,
    send_json,
    with_headers,
)
from ._bridge.errors import BridgeError
from ._bridge.response import response_skeleton
from ._bridge.turn import (
    BridgeOptions,
    ChatReplyTranslator,
    call_ids,
    chat_request_body,
    expanded_input,
)
from ._errors import ApiError, previous_not_found
from ._ids import new_response_id
from ._record import TurnRecord
from ._request import TurnRequest, parse_turn_request, upstream_body
from ._settings import Settings
from ._store import StoreError
from ._tee import ReplyTee, end_pending, store_error

__all__ = ["TurnResponder"]

logger = logging.getLogger("state_middleware")

_BODY_HEADERS = (b"content-length", b"transfer-encoding")


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
        self.after_body: asyncio.Future[Any] | None = None
        self.request: TurnRequest | None = None
        self.tee: ReplyTee | None = None

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
            await self._call_app(self._upstream_scope(), self.send)
            return
        tee = self._begin_turn(request)
        await self._run_app(self._upstream_scope(), tee)

    def _begin_turn(self, request: TurnRequest) -> ReplyTee:
        turn = TurnAccumulator(
            response_id=new_response_id(),
            parent_id=request.previous_response_id,
            store=request.store,
            input_items=request.input_items,
        )
        self.tee = ReplyTee(
            send=self.send,
            store=self.settings.store,
            owner=self.owner,
            turn=turn,
            max_body_bytes=self.settings.max_body_bytes,
            index_reasoning=self.settings.bridge is not None,
            watch_client=self.next_message,
        )
        return self.tee

    async def _run_app(self, scope: Any, send: Any) -> None:
        assert self.request is not None
        assert self.tee is not None
        store, owner = self.settings.store, self.owner
        response_id = self.tee.turn.response_id
        # Only a stream shows its id before the turn is stored, so only a stream can be
        # named by a follow-up while it runs: JSON turns need no pending mark.
        pending = self.request.store and self.request.stream
        if pending:
            try:
                await store.begin(owner, response_id)
            except StoreError as exc:
                # A turn that could not be kept must not run: answer before the app.
                logger.warning("store failed starting %s: %s", response_id, exc)
                await send_api_error(self.send, store_error(exc))
                return
        try:
            await self._call_app(scope, send)
        finally:
            if pending and not self.tee.pending_ended:
                await end_pending(store, owner, response_id)

    async def _call_app(self, scope: Any, send: Any) -> None:
        try:
            await self.settings.app(scope, self._receive, send)
        finally:
            if self.after_body is not None and not self.after_body.done():
                self.after_body.cancel()  # nobody is left to read it

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
        turn = self._begin_turn(request).turn
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
        assert self.tee is not None
        translator = ChatReplyTranslator(
            base,
            self.tee,
            self.settings.max_body_bytes,
            direct=self.tee.direct_send,
            wants_stream=request.stream,
        )
        await self._run_app(scope, translator.send)

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
        """The app's ``receive``: the (rewritten) body once, then the client's own
        messages, read through one shared future so the tee can watch for a
        disconnect while the app streams."""
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await asyncio.shield(self.next_message())

    def next_message(self) -> asyncio.Future[Any]:
        if self.after_body is None:
            self.after_body = asyncio.ensure_future(self.receive())
            self.after_body.add_done_callback(self._received)
        return self.after_body

    def _received(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        if future.result()["type"] == "http.disconnect":
            if self.tee is not None:
                self.tee.client_gone = True
        else:
            self.after_body = None  # not the end: the next call reads again
