"""Background turns: ``POST {prefix}/responses`` with ``background: true``.

The front door answers at once: the response is recorded as ``queued`` (with its first
two events) and the client gets the queued response object, or, with ``stream: true``,
the recorded events as they come (it may leave; the turn goes on). The turn itself runs
in a task of this process, with a :class:`~._recorder.Recorder` as its sink, after it
was prepared in the request (so a bad ``previous_response_id`` or a locked conversation
is still answered to the client).

:class:`BackgroundRuns` bounds them: at most ``running`` turns at once (the others wait
as ``queued``), at most ``queued`` waiting (past that, 429 before anything is recorded).
On lifespan shutdown running turns get ``grace`` seconds, then are failed; none is left
running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._asgi import send_api_error, send_json
from ._errors import ApiError, store_failed
from ._follow import follow_events
from ._metrics import REFUSED, STORE_ERROR
from ._recorder import Recorder, queued_events
from ._settings import Settings
from ._skeleton import response_skeleton
from ._store import StoreError
from ._turn import Turn

__all__ = ["SHUTDOWN_MESSAGE", "TOO_MANY_MESSAGE", "BackgroundRuns"]

logger = logging.getLogger("state_middleware")

TOO_MANY_MESSAGE = "Too many background responses are waiting on this server; retry later."
SHUTDOWN_MESSAGE = "The server shut down before this background response finished."
_encoder = msgspec.json.Encoder()


class BackgroundRuns:
    """The background turns of one middleware instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tasks: set[asyncio.Task[None]] = set()
        self.recorders: dict[asyncio.Task[None], Recorder] = {}
        #: turns executing now (the others of ``tasks`` wait for a slot, or are ending)
        self.running = 0
        self._slots: asyncio.Semaphore | None = None

    @property
    def queued(self) -> int:
        """Turns waiting for a slot."""
        return len(self.tasks) - self.running

    async def serve(
        self,
        turn: Turn,
        client_stream: bool,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        """Answer a background request (``client_stream``: with its events as they are
        recorded) and start its turn."""
        settings = self.settings
        background = settings.background
        if len(self.tasks) >= background.running + background.queued:
            turn.ended(REFUSED)
            await send_api_error(send, ApiError(429, TOO_MANY_MESSAGE, code="rate_limit_exceeded"))
            return
        if not await turn.prepare_or_answer(send):
            return
        queued = self._queued_response(turn)
        first = queued_events(queued)
        recorder = Recorder(
            settings.store,
            turn.owner,
            turn.response_id,
            _encoder.encode(queued),
            first,
            lease=background.lease,
            heartbeat=background.heartbeat,
        )
        try:
            await settings.store.start_background(
                turn.owner,
                turn.response_id,
                _encoder.encode(queued),
                stream=client_stream,
                lease=background.lease,
            )
            await settings.store.record_events(
                turn.owner, turn.response_id, first, status="queued", lease=background.lease
            )
        except StoreError as exc:
            await turn.abandon(STORE_ERROR)
            await send_api_error(send, store_failed(exc.code))
            return
        task = asyncio.ensure_future(self._run(turn, recorder))
        self.tasks.add(task)
        self.recorders[task] = recorder
        task.add_done_callback(self._forget)
        if client_stream:
            await follow_events(settings, turn.owner, turn.response_id, -1, receive, send)
        else:
            await send_json(send, 200, _encoder.encode(queued))

    def _queued_response(self, turn: Turn) -> dict[str, Any]:
        request = turn.request
        queued = response_skeleton(
            request.body,
            response_id=turn.response_id,
            created_at=turn.accumulator.created_at,
            previous_response_id=request.previous_response_id,
            store=request.store,
        )
        queued["status"] = "queued"
        queued["background"] = True
        if request.conversation is not None:
            queued["conversation"] = {"id": request.conversation}
        return queued

    async def _run(self, turn: Turn, recorder: Recorder) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.background.running)
        heartbeat = asyncio.ensure_future(recorder.heartbeat())
        try:
            async with self._slots:
                if recorder.cancelled.is_set():
                    await turn.abandon()
                else:
                    recorder.running()
                    self.running += 1
                    try:
                        await turn.execute(recorder.send, recorder.receive)
                    finally:
                        self.running -= 1
                await recorder.close()
        except asyncio.CancelledError:
            await asyncio.shield(self._fail(turn, recorder, SHUTDOWN_MESSAGE))
            raise
        except Exception:
            logger.exception("background response %s failed", turn.response_id)
            await self._fail(turn, recorder, "The background response failed on the server.")
        finally:
            heartbeat.cancel()

    async def _fail(self, turn: Turn, recorder: Recorder, message: str) -> None:
        try:
            await turn.abandon()
            await recorder.fail(message)
        except StoreError as exc:  # its lease ends it: readers will see it failed
            logger.warning("background %s could not be failed: %s", turn.response_id, exc)

    def stop_here(self, owner: str, response_id: str) -> None:
        """A cancel came in to this process: a turn of it running here stops at once
        (one running elsewhere sees the cancel in the store within a heartbeat)."""
        for recorder in self.recorders.values():
            if recorder.owner == owner and recorder.response_id == response_id:
                recorder.cancelled.set()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.recorders.pop(task, None)

    async def shutdown(self) -> None:
        """Give running turns ``grace`` seconds, then fail the rest."""
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(set(self.tasks), timeout=self.settings.background.grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
