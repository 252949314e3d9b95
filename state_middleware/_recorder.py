"""The sink of a background turn: records the turn's events in the store.

A :class:`Recorder` is the ``send`` a background :class:`~._turn.Turn` tees its reply
to, and the ``receive`` it reads the caller from. There is no client: every event is
numbered on from the two the front door recorded first (``response.created`` with
status ``queued``, then ``response.queued``), appended to the store, and folded into a
snapshot of the response so far. The upstream's own ``response.created`` is left out:
the response was created when it was queued.

A reply the app did not stream (JSON, or an error status) becomes the events a stream
would have ended with. The turn ends ``completed``/``incomplete`` (stored by the tee as
usual, then recorded), ``failed`` (the upstream said so, or its stream was cut), or
``cancelled`` (a cancel reached it: the app sees ``http.disconnect``, nothing is stored,
and the response keeps the output produced so far).

Each store call renews the worker's lease; between events, :meth:`heartbeat` renews it
and looks for a cancel every ``heartbeat`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from ._asgi import header
from ._record import failure_events
from ._snapshot import ResponseSnapshot
from ._sse import SSEDecoder
from ._store import Store, StoreError

__all__ = ["CUT_MESSAGE", "Recorder", "queued_events"]

logger = logging.getLogger("state_middleware")

CUT_MESSAGE = "The upstream response ended before it was complete."
_TERMINAL = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}
_FINISHED = frozenset(_TERMINAL.values())
_SKIPPED = frozenset({"response.created", "response.queued"})
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def queued_events(response: dict[str, Any]) -> list[bytes]:
    """The first two events of every background response: ``response.created`` (status
    ``queued``) and ``response.queued``, numbered 0 and 1."""
    return [
        _encoder.encode({"type": kind, "sequence_number": n, "response": response})
        for n, kind in enumerate(("response.created", "response.queued"))
    ]


class Recorder:
    """All state of one background turn's recording."""

    def __init__(
        self,
        store: Store,
        owner: str,
        response_id: str,
        base: bytes,
        first_events: list[bytes],
        *,
        lease: float,
        heartbeat: float,
    ) -> None:
        self.store = store
        self.owner = owner
        self.response_id = response_id
        self.lease = lease
        self.every = heartbeat
        self.snapshot = ResponseSnapshot(base)
        self.snapshot.feed_all(first_events)
        self.sequence = len(first_events)
        self.status = "queued"
        self.finished = False
        self.cancelled = asyncio.Event()
        self.decoder = SSEDecoder()
        self.mode = ""  # "sse", "json" or "error", from the reply's start
        self.http_status = 200
        self.held: list[bytes] = []

    # -- the turn's receive: the caller leaves when a cancel comes -----------------------
    async def receive(self) -> Any:
        await self.cancelled.wait()
        return {"type": "http.disconnect"}

    async def heartbeat(self) -> None:
        """Renew the lease and look for a cancel until the turn ends."""
        while not self.finished:
            try:
                await asyncio.wait_for(self.cancelled.wait(), self.every)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self._record([])
            except StoreError as exc:  # the lease may lapse: readers will see it
                logger.warning("background %s: heartbeat failed: %s", self.response_id, exc)

    def running(self) -> None:
        """The turn got a worker slot: from now on it is ``in_progress``."""
        self.status = "in_progress"

    # -- the turn's send ------------------------------------------------------------------
    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.http_status = message["status"]
            content_type = (header(message.get("headers", []), b"content-type") or b"").lower()
            if not 200 <= self.http_status < 300:
                self.mode = "error"
            elif content_type.startswith(b"text/event-stream"):
                self.mode = "sse"
            else:
                self.mode = "json"
            return
        if kind != "http.response.body" or self.finished:
            return
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.mode == "sse":
            events = [
                event
                for frame in self.decoder.frames(chunk, last=not more)
                if frame.data is not None and (event := self._renumbered(frame.data))
            ]
            await self._keep(events)
            return
        self.held.append(chunk)
        if not more:
            await self._whole(b"".join(self.held))

    def _renumbered(self, data: bytes) -> bytes | None:
        try:
            event = _decoder.decode(data)
        except msgspec.DecodeError:
            return None
        if not isinstance(event, dict) or event.get("type") in _SKIPPED:
            return None
        event["sequence_number"] = self.sequence
        self.sequence += 1
        return _encoder.encode(event)

    async def _whole(self, body: bytes) -> None:
        """A reply that was not a stream: the events it stands for."""
        try:
            value = _decoder.decode(body)
        except msgspec.DecodeError:
            value = None
        if self.mode == "json" and isinstance(value, dict) and value.get("object") == "response":
            status = value.get("status")
            kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
                str(status), "response.completed"
            )
            events: list[dict[str, Any]] = [{"type": kind, "response": value}]
        else:
            error = value.get("error") if isinstance(value, dict) else None
            if not isinstance(error, dict):
                error = {"message": body.decode("utf-8", "replace")[:2000] or CUT_MESSAGE}
            message = str(error.get("message") or CUT_MESSAGE)
            code = error.get("code")
            failed = self.snapshot.response(status="failed")
            failed["error"] = {"code": "server_error", "message": message}
            events = [
                {"type": "error", "code": code, "message": message, "param": None},
                {"type": "response.failed", "response": failed},
            ]
        encoded = []
        for event in events:
            event["sequence_number"] = self.sequence
            self.sequence += 1
            encoded.append(_encoder.encode(event))
        await self._keep(encoded)

    async def _keep(self, events: list[bytes]) -> None:
        """Fold and record events; the terminal one finishes the response."""
        final: tuple[str, bytes] | None = None
        for event in events:
            self.snapshot.feed(event)
            if self.snapshot.finished:
                status = self.snapshot.status
                if status not in _FINISHED:  # a terminal event without a status
                    status = _TERMINAL.get(str(_decoder.decode(event).get("type")), "failed")
                final = (status, self.snapshot.response_json(status=status))
                break
        if events and self.status == "queued":
            self.status = "in_progress"
        if final is not None:
            await self._finish(final[0], final[1], events)
        elif events:
            await self._record(events)

    async def _record(self, events: list[bytes]) -> None:
        if await self.store.record_events(
            self.owner, self.response_id, events, status=self.status, lease=self.lease
        ):
            self.cancelled.set()

    async def _finish(self, status: str, response: bytes, events: list[bytes]) -> None:
        self.finished = True
        await self.store.finish_background(self.owner, self.response_id, status, response, events)

    # -- the end ---------------------------------------------------------------------------
    async def close(self) -> None:
        """After the turn: a turn that reached no terminal event is finished here, as
        ``cancelled`` (a cancel stopped it) or ``failed`` (cut short)."""
        if self.finished:
            return
        if self.cancelled.is_set():
            await self._finish("cancelled", self.snapshot.response_json(status="cancelled"), [])
            return
        await self.fail(CUT_MESSAGE)

    async def fail(self, message: str) -> None:
        """Finish as ``failed`` with ``message`` (an ``error`` event, then
        ``response.failed``)."""
        if self.finished:
            return
        failed = self.snapshot.response(status="failed")
        failed["error"] = {"code": "server_error", "message": message}
        failed_json = _encoder.encode(failed)
        events = failure_events(failed_json, message, self.sequence)
        self.sequence += len(events)
        self.snapshot.feed_all(events)
        await self._finish("failed", failed_json, events)
