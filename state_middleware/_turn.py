"""One turn, whoever asked for it: load the context, call the app, tee the reply to a
sink, store the result.

A :class:`Turn` is built by a front door (today the HTTP ``POST {prefix}/responses``
of :mod:`._http_turn`) from a parsed request, the caller's identity and the HTTP scope
the app is called with. :meth:`Turn.run` takes the two ends a front door owns:

- ``sink``, an ASGI ``send`` that receives the reply (the client's own ``send`` for
  HTTP; a recorder or a WebSocket for the front doors to come), and
- ``receive``, the caller's messages after the request body: ``http.disconnect``
  when the caller is gone, which stops the app and keeps the turn from being stored.

Everything between is the same for every front door: item references expanded, the
conversation lock and the pending mark (:mod:`._marks`), the history (a chain or a
conversation), the app call through an :class:`~._upstream.Upstream`, the
accumulation and stamping (:mod:`._accumulator`), the tee (:mod:`._tee`) and the store.
Each turn is reported once when it ends, whatever its outcome (:mod:`._metrics`: the
metrics hooks, and a DEBUG line).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from time import perf_counter
from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._accumulator import TurnAccumulator
from ._asgi import send_api_error, with_content_length
from ._errors import (
    ApiError,
    conversation_not_found,
    item_not_found,
    previous_not_found,
    store_failed,
)
from ._ids import new_response_id, tree_of
from ._items import normalized_item, reference_id, with_id
from ._marks import ConversationLock, PendingMark
from ._metrics import (
    CANCELLED,
    FAILED,
    NOT_STORED,
    STORE_ERROR,
    STORED,
    TurnStats,
    outcome_of_refusal,
    report_turn,
)
from ._record import chain_input, item_ids_of, join_arrays
from ._request import TurnRequest
from ._settings import Settings
from ._store import StoreError
from ._tee import ReplyTee
from ._upstream import TurnContext

__all__ = ["Turn"]

logger = logging.getLogger("state_middleware")


class Turn:
    """All state of one turn."""

    def __init__(
        self,
        settings: Settings,
        scope: Any,
        owner: str,
        request: TurnRequest,
        *,
        recent: Mapping[str, bytes] | None = None,
        door: str = "http",
    ) -> None:
        self.settings = settings
        #: sizes and timings, reported once when the turn ends (``door``: the front
        #: door that runs it, a label of the turn metrics)
        self.stats = TurnStats(door, settings.upstream.name)
        #: histories a front door keeps itself of responses no store holds (a
        #: WebSocket lane's latest), by response id: looked at before the store
        self.recent = recent
        #: whether this turn continues one of those: stored, it then keeps that
        #: history as its own input, with no parent
        self.detached = False
        self.scope = scope  # the HTTP scope the app is called with
        self.owner = owner
        self.request = request
        # a follow-up and a conversation's turn join the tree of what they continue
        self.response_id = new_response_id(
            tree_of(request.previous_response_id) or tree_of(request.conversation)
        )
        self.tee: ReplyTee | None = None
        self.context: TurnContext | None = None
        self.accumulator: TurnAccumulator
        self.body = b""
        self.input_list: list[Any] = []  # the input items the turn keeps, decoded
        self.mark = PendingMark(
            settings.store,
            owner,
            self.response_id,
            # Only a stream shows its id before the turn is stored, so only a stream
            # can be named by a follow-up while it runs.
            active=request.store and request.stream,
        )
        self.lock = ConversationLock(
            settings.store,
            owner,
            request.conversation,
            lease=settings.conversation_lease,
            metrics=settings.metrics,
        )

    async def run(self, sink: ASGISendCallable, receive: ASGIReceiveCallable) -> None:
        """Prepare the turn and execute it; what cannot be prepared is answered to
        ``sink`` as an error, before the app is called."""
        if await self.prepare_or_answer(sink):
            await self.execute(sink, receive)

    async def prepare_or_answer(self, sink: ASGISendCallable) -> bool:
        """:meth:`prepare`; whether it could be, else the error is answered to ``sink``."""
        try:
            await self.prepare()
        except ApiError as exc:
            await send_api_error(sink, exc)
            return False
        except StoreError as exc:
            await send_api_error(sink, store_failed(exc.code))
            return False
        return True

    async def prepare(self) -> None:
        """Everything before the app is called: the conversation's lock, item references,
        the history, the app's request and the pending mark. Raises ``ApiError`` (bad
        request, not found, conversation locked) or ``StoreError``; nothing stays held
        then. A front door that answers before the turn runs (a background turn) calls
        this first, then :meth:`execute` later."""
        settings = self.settings
        try:
            await self.lock.acquire()
            request = self.request = await self._expand_references(self.request)
            history = self.stats.history = await self._load_history(request)
            self.accumulator = TurnAccumulator(
                response_id=self.response_id,
                parent_id=request.previous_response_id,
                store=request.store,
                input_items=self._stored_input(request),
                conversation=request.conversation,
                background=request.background,
            )
            self.context = TurnContext(
                request=request,
                history=history,
                owner=self.owner,
                response_id=self.response_id,
                created_at=self.accumulator.created_at,
                store=settings.store,
                max_body_bytes=settings.max_body_bytes,
            )
            self.body = await settings.upstream.request_body(self.context)
            await self.mark.begin()
        except BaseException as exc:
            if isinstance(exc, StoreError):
                logger.warning("store failed preparing %s: %s", self.response_id, exc)
            await self.lock.end()
            self.ended(outcome_of_refusal(exc))
            raise
        self.stats.prepared = perf_counter()

    def _stored_input(self, request: TurnRequest) -> bytes:
        """The input items a turn keeps: as sent, or, on a conversation, normalised and
        each with an id, as the conversation lists them."""
        if request.conversation is None or not request.store:
            self.input_list = request.input_list
            return request.input_items
        self.input_list = [with_id(normalized_item(item)) for item in request.input_list]
        return _encoder.encode(self.input_list)

    async def abandon(self, outcome: str = CANCELLED) -> None:
        """Let go of what :meth:`prepare` took, for a turn that will not execute."""
        await self.mark.end()
        await self.lock.end()
        self.ended(outcome)

    def ended(self, outcome: str) -> None:
        """Report the turn (once: the first outcome given stands) to the metrics and,
        at DEBUG, in its log line."""
        stats = self.stats
        if stats.outcome:
            return
        stats.outcome = outcome
        report_turn(self.settings.metrics, stats, self.response_id, self.owner)

    async def execute(self, sink: ASGISendCallable, receive: ASGIReceiveCallable) -> None:
        """Call the app and tee its reply to ``sink``; ``receive`` gives the caller's
        messages after the body (``http.disconnect`` when the caller is gone)."""
        settings, request = self.settings, self.request
        upstream = settings.upstream
        assert self.context is not None
        caller = _CallerWatch(self.body, receive)
        self.tee = tee = ReplyTee(
            send=sink,
            turn=self.accumulator,
            commit=self._commit,
            max_body_bytes=settings.max_body_bytes,
            wants_stream=request.stream,
            watch_client=caller.watch,
        )
        caller.tee = tee
        scope = self._app_scope(self.body, upstream.route)
        try:
            await settings.app(scope, caller.receive, upstream.reply_send(self.context, tee))
        finally:
            caller.close()
            await self.mark.end()
            await self.lock.end()
            # Not stored (a stored turn was reported already): cancelled when the caller
            # left before the reply ended, else failed.
            gone = tee.client_gone and not tee.replied and tee.turn.failure is None
            self.ended(CANCELLED if gone else FAILED)

    async def _expand_references(self, request: TurnRequest) -> TurnRequest:
        """Input items that only name a stored item (``item_reference``) replaced by it."""
        value = request.body.get("input")
        if not isinstance(value, list):
            return request
        wanted = [item_id for item_id in map(reference_id, value) if item_id is not None]
        if not wanted:
            return request
        found = await self.settings.store.get_items(self.owner, wanted)
        items: list[Any] = []
        for item in value:
            item_id = reference_id(item)
            if item_id is None:
                items.append(item)
            elif item_id in found:
                items.append(_decoder.decode(found[item_id]))
            else:
                raise item_not_found(item_id)
        return request.with_input(items)

    async def _load_history(self, request: TurnRequest) -> bytes | None:
        """The items this turn continues: its chain, or its conversation's items."""
        store, owner = self.settings.store, self.owner
        if request.conversation is not None:
            items = await store.conversation_items(owner, request.conversation)
            if items is None:
                raise conversation_not_found(request.conversation, param="conversation")
            return b"[" + b",".join(item for _, item in items) + b"]"
        previous = request.previous_response_id
        if previous is None:
            return None
        if self.recent is not None and previous in self.recent:
            self.detached = True
            return self.recent[previous]
        chain = await store.get_chain(owner, previous)
        if chain is None:
            waited = perf_counter()
            if await store.wait(owner, previous, self.settings.pending_timeout):
                self.settings.metrics.pending_wait(perf_counter() - waited)
                chain = await store.get_chain(owner, previous)
        if chain is None:
            raise previous_not_found(previous)
        return chain_input(chain)

    def continued_history(self) -> bytes | None:
        """What a turn continuing this one would get as its history (this turn's
        history, input and output), once it ended ``completed`` or ``incomplete``;
        ``None`` before, or when it did not."""
        if self.context is None or not self.accumulator.succeeded:
            return None
        record = self.accumulator.record()
        return join_arrays([self.context.history or b"[]", record.input_items, record.output_items])

    async def _commit(self) -> None:
        """Store the finished turn (the tee calls this before the terminal event goes
        out); raises ``StoreError``."""
        request = self.request
        if not request.store:
            await self.lock.end()  # the next turn on the conversation may start
            self.ended(NOT_STORED)
            return
        assert self.tee is not None
        assert self.context is not None
        record = self.tee.turn.record()
        item_ids: list[str] | None = None
        if self.detached:  # its parent is in no store: the chain starts here
            history = join_arrays([self.context.history or b"[]", record.input_items])
            record = msgspec.structs.replace(record, parent_id=None, input_items=history)
        else:  # the items are decoded already: their ids need no second look
            item_ids = item_ids_of(
                record.id,
                [_id_and_type(item) for item in self.input_list],
                [_id_and_type(item) for item in self.accumulator.output_list],
            )
        started = perf_counter()
        try:
            await self.settings.store.put(
                self.owner, record, conversation=request.conversation, item_ids=item_ids
            )
        except StoreError as exc:
            logger.error("response %s was not stored: %s", record.id, exc)
            self.stats.store_seconds = perf_counter() - started
            self.ended(STORE_ERROR)
            raise
        self.stats.store_seconds = perf_counter() - started
        # Whoever waits on this turn may go now: before the client has the terminal event.
        await self.mark.end()
        await self.lock.end()
        self.ended(STORED)
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


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _id_and_type(item: Any) -> tuple[Any, Any]:
    if isinstance(item, dict):
        return item.get("id"), item.get("type", "message")
    return None, "message"


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
