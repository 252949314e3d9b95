"""One turn, whoever asked for it: load the context, call the app, tee the reply to a
sink, store the result.

A :class:`Turn` is built by a front door (today the HTTP ``POST {prefix}/responses``
of :mod:`._http_turn`) from a parsed request, the caller's identity and the HTTP scope
the app is called with. :meth:`Turn.run` takes the two ends a front door owns:

- ``sink``, an ASGI ``send`` that receives the reply (the client's own ``send`` for
  HTTP; a recorder or a WebSocket for the front doors to come), and
- ``receive``, the caller's messages after the request body: ``http.disconnect``
  when the caller is gone, which stops the app and keeps the turn from being stored.

Everything between is the same for every front door: the pending mark
(:mod:`._pending`), the app call through an :class:`~._upstream.Upstream`, the
accumulation and stamping (:mod:`._accumulator`), the tee (:mod:`._tee`) and the store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._accumulator import TurnAccumulator
from ._asgi import send_api_error, with_content_length
from ._errors import ApiError, previous_not_found, store_unavailable
from ._ids import new_response_id
from ._pending import PendingMark
from ._record import TurnRecord
from ._request import TurnRequest
from ._settings import Settings
from ._store import StoreError
from ._tee import ReplyTee
from ._upstream import TurnContext

__all__ = ["Turn"]

logger = logging.getLogger("state_middleware")


class Turn:
    """All state of one turn."""

    def __init__(self, settings: Settings, scope: Any, owner: str, request: TurnRequest) -> None:
        self.settings = settings
        self.scope = scope  # the HTTP scope the app is called with
        self.owner = owner
        self.request = request
        self.response_id = new_response_id()
        self.tee: ReplyTee | None = None
        self.context: TurnContext | None = None
        self.mark = PendingMark(
            settings.store,
            owner,
            self.response_id,
            # Only a stream shows its id before the turn is stored, so only a stream
            # can be named by a follow-up while it runs.
            active=request.store and request.stream,
        )

    async def run(self, sink: ASGISendCallable, receive: ASGIReceiveCallable) -> None:
        settings, request = self.settings, self.request
        upstream = settings.upstream
        accumulator = TurnAccumulator(
            response_id=self.response_id,
            parent_id=request.previous_response_id,
            store=request.store,
            input_items=request.input_items,
        )
        try:
            chain = await self._load_chain()
            self.context = context = TurnContext(
                request=request,
                chain=chain,
                owner=self.owner,
                response_id=self.response_id,
                created_at=accumulator.created_at,
                store=settings.store,
                max_body_bytes=settings.max_body_bytes,
            )
            body = await upstream.request_body(context)
        except StoreError as exc:
            await send_api_error(sink, store_unavailable(exc.code))
            return
        except ApiError as exc:
            await send_api_error(sink, exc)
            return
        caller = _CallerWatch(body, receive)
        self.tee = tee = ReplyTee(
            send=sink,
            turn=accumulator,
            commit=self._commit,
            max_body_bytes=settings.max_body_bytes,
            wants_stream=request.stream,
            watch_client=caller.watch,
        )
        caller.tee = tee
        scope = self._app_scope(body, upstream.route)
        try:
            async with self.mark:
                try:
                    await settings.app(scope, caller.receive, upstream.reply_send(context, tee))
                finally:
                    caller.close()
        except StoreError as exc:  # the mark could not be set: the app never ran
            logger.warning("store failed starting %s: %s", self.response_id, exc)
            await send_api_error(sink, store_unavailable(exc.code))

    async def _load_chain(self) -> list[TurnRecord] | None:
        previous = self.request.previous_response_id
        if previous is None:
            return None
        store, owner = self.settings.store, self.owner
        try:
            chain = await store.get_chain(owner, previous)
            if chain is None and await store.wait(owner, previous, self.settings.pending_timeout):
                chain = await store.get_chain(owner, previous)
        except StoreError as exc:
            logger.warning("store failed loading %s: %s", previous, exc)
            raise
        if chain is None:
            raise previous_not_found(previous)
        return chain

    async def _commit(self) -> None:
        """Store the finished turn (the tee calls this before the terminal event goes
        out); raises ``StoreError``."""
        if not self.request.store:
            return
        assert self.tee is not None
        assert self.context is not None
        record = self.tee.turn.record()
        try:
            await self.settings.store.put(self.owner, record)
        except StoreError as exc:
            logger.error("response %s was not stored: %s", record.id, exc)
            raise
        await self.mark.end()  # followers waiting on the stream may go now
        logger.debug("stored response %s (parent %s)", record.id, record.parent_id)
        await self.settings.upstream.stored(self.context, record)

    def _app_scope(self, body: bytes, route: str | None) -> Any:
        scope = self.scope
        if body is self.request.raw and route is None:
            return scope
        scope = {**scope, "headers": with_content_length(scope["headers"], len(body))}
        if route is not None:
            path = scope.get("root_path", "") + route
            scope["path"] = path
            scope["raw_path"] = path.encode()
        return scope


class _CallerWatch:
    """The app's ``receive``: the (rewritten) body once, then the caller's own
    messages, read through one shared future so that the tee can watch for the caller
    leaving while the app streams."""

    __slots__ = ("body", "body_sent", "next", "source", "tee")

    def __init__(self, body: bytes, source: ASGIReceiveCallable) -> None:
        self.body = body
        self.body_sent = False
        self.source = source
        self.next: asyncio.Future[Any] | None = None
        self.tee: ReplyTee | None = None

    async def receive(self) -> Any:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await asyncio.shield(self.watch())

    def watch(self) -> asyncio.Future[Any]:
        if self.next is None:
            self.next = asyncio.ensure_future(self.source())
            self.next.add_done_callback(self._received)
        return self.next

    def _received(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        if future.result()["type"] == "http.disconnect":
            if self.tee is not None:
                self.tee.client_gone = True
        else:
            self.next = None  # not the end: the next call reads again

    def close(self) -> None:
        if self.next is not None and not self.next.done():
            self.next.cancel()  # nobody is left to read it
