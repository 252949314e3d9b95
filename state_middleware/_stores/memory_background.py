"""``MemoryStore``'s background responses.

One cache entry per response holds its state, its events and its worker's lease. A
response whose worker's lease ended before it finished is failed (as lost) by whoever
reads it next. Its state and events live ``ttl`` from the last change while it runs;
once it finished, its events can be read for ``event_ttl`` more. The entry is counted
anew (and refreshed) once per 4 KiB of events, not per event. A reader waiting for
events waits on an ``asyncio.Event`` in this process, set when events come.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import msgspec

from .._errors import WORKER_LOST_MESSAGE
from .._record import BackgroundState, failure_events, with_status
from .._store import StoreError
from .memory_entries import BACKGROUND, BackgroundEntry, CacheParts

__all__ = ["BackgroundParts"]


class BackgroundParts(CacheParts):
    """Background responses (``MemoryStore`` composes this)."""

    async def start_background(
        self, owner: str, response_id: str, response: bytes, *, stream: bool, lease: float
    ) -> None:
        with self._lock:
            now = self._timer()
            state = BackgroundState("queued", response, stream)
            entry = BackgroundEntry(state, self.ttl, now, lease)
            if entry.size > self.max_bytes:
                raise StoreError(f"background response {response_id} exceeds max_bytes")
            self._cache[(BACKGROUND, owner, response_id)] = entry

    async def record_events(
        self,
        owner: str,
        response_id: str,
        events: Sequence[bytes],
        *,
        status: str,
        lease: float,
    ) -> bool:
        with self._lock:
            entry = self._background(owner, response_id)
            if entry is None or entry.state.finished:
                return True  # nothing left to run it for: stop
            now = self._timer()
            entry.add(events)
            entry.state = msgspec.structs.replace(
                entry.state, status=status, events=len(entry.events)
            )
            entry.lease_until = now + lease
            if entry.events_size - (entry.size - len(entry.state.response) - 64) > 4096:
                # Counted anew (and refreshed) once per 4 KiB of events, not per event.
                self._reinsert(owner, response_id, entry, now)
            entry.notify()
            return entry.state.cancel_requested

    async def finish_background(
        self,
        owner: str,
        response_id: str,
        status: str,
        response: bytes,
        events: Sequence[bytes] = (),
    ) -> None:
        with self._lock:
            entry = self._background(owner, response_id)
            if entry is None or entry.state.finished:
                return  # a finished one (say failed as lost) stays as it is
            self._finish(owner, response_id, entry, status, response, events)

    async def get_background(self, owner: str, response_id: str) -> BackgroundState | None:
        with self._lock:
            entry = self._background(owner, response_id)
            return None if entry is None else entry.state

    async def read_events(
        self, owner: str, response_id: str, after: int, timeout: float
    ) -> tuple[list[bytes], bool] | None:
        with self._lock:
            entry = self._background(owner, response_id)
            if entry is None or self._timer() > entry.events_until:
                return None
            start = max(after + 1, 0)
            if start < len(entry.events) or entry.state.finished:
                return entry.events[start:], entry.state.finished
            entry.waiting = True
            changed = entry.changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        with self._lock:
            entry = self._background(owner, response_id)
            if entry is None or self._timer() > entry.events_until:
                return None
            return entry.events[start:], entry.state.finished

    async def cancel_background(self, owner: str, response_id: str) -> BackgroundState | None:
        with self._lock:
            entry = self._background(owner, response_id)
            if entry is None:
                return None
            if not entry.state.finished:
                entry.state = msgspec.structs.replace(entry.state, cancel_requested=True)
                entry.notify()
            return entry.state

    # -- inside the lock ----------------------------------------------------------------
    def _background(self, owner: str, response_id: str) -> BackgroundEntry | None:
        """The entry; a running one whose worker's lease ended is failed first."""
        entry = self._cache.get((BACKGROUND, owner, response_id))
        if not isinstance(entry, BackgroundEntry):
            return None
        if not entry.state.finished and self._timer() > entry.lease_until:
            error = {"code": "server_error", "message": WORKER_LOST_MESSAGE}
            failed = with_status(entry.state.response, "failed", error)
            ending = failure_events(failed, WORKER_LOST_MESSAGE, len(entry.events))
            self._finish(owner, response_id, entry, "failed", failed, ending)
        return entry

    def _finish(
        self,
        owner: str,
        response_id: str,
        entry: BackgroundEntry,
        status: str,
        response: bytes,
        events: Sequence[bytes],
    ) -> None:
        now = self._timer()
        entry.add(events)
        entry.state = msgspec.structs.replace(
            entry.state, status=status, response=response, events=len(entry.events)
        )
        entry.events_until = now + self.event_ttl
        self._reinsert(owner, response_id, entry, now)
        entry.notify()

    def _reinsert(self, owner: str, response_id: str, entry: BackgroundEntry, now: float) -> None:
        entry.resize()
        entry.refreshed = now
        if entry.size <= self.max_bytes:
            self._cache[(BACKGROUND, owner, response_id)] = entry
