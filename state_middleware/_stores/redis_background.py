"""``RedisStore``'s background responses.

Keys (``{tag}``: the hash tag of the response's tree, as in ``redis_client.py``):

- ``{key_prefix}background:{tag}:{response id}``: a background response's state, a hash
  with ``status``, ``response`` (the response object as last set), ``stream`` and
  ``cancel`` (``1`` or ``0``) and ``events`` (how many were recorded).
- ``{key_prefix}background_events:{tag}:{response id}``: its events, a stream in which
  event number n has the id ``0-<n+1>`` (so a reader resumes after event n from that id)
  and ``1-0`` marks the end (so no event can follow it, and a reader blocked on the
  stream wakes when the response finishes). Absent until the first event.
- ``{key_prefix}background_lease:{tag}:{response id}``: set while a worker runs the
  response, with a TTL of the lease it asked for; renewed by ``record_events``.

The three keys of one background response differ only in their kind (so they share a
slot on a cluster), and every script gets all three in ``KEYS``.

Round trips. Each call is one script, so one round trip, except when it finds that the
worker's lease ended before the response finished: the response object is then marked
``failed`` here in Python, and a second script writes it only if the response is still
unfinished, without a lease and holding the object that was read (a compare-and-set),
so of several replicas that find the worker lost at once exactly one writes the failure
and all return it. ``read_events`` looks in one script and returns at once when there
are events after ``after`` or the response finished; otherwise it waits for them in
Redis (``XREAD BLOCK`` on the stream, from the id of event ``after``, so nothing
recorded in between is missed), a second round trip. A blocking read holds a connection
of the client's pool, so it blocks for at most one second (and at most half of
``socket_timeout``, which would end it as a failure) and returns nothing new when that
passes: the caller reads again. At most half the pool's connections
(``max_connections``) block at once; further readers wait in this process for their
turn, so the worker that records the events, and everyone else, always gets a
connection.

Retention. A background response's state and events live ``ttl`` from the last change
while it runs; once it finished, its events live ``event_ttl`` (default 10 minutes) and
its state ``ttl``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

import msgspec

from .._errors import WORKER_LOST_MESSAGE
from .._record import BackgroundState, with_status
from .redis_background_scripts import (
    BACKGROUND,
    CANCEL_BACKGROUND,
    FAIL_LOST,
    FINISH_BACKGROUND,
    READ_EVENTS,
    RECORD_EVENTS,
    START_BACKGROUND,
)
from .redis_client import RedisClient, milliseconds

__all__ = ["BackgroundParts"]

_MAX_BLOCK = 1.0  # seconds one blocking read of events may hold its connection
_LOST_ERROR = {"code": "server_error", "message": WORKER_LOST_MESSAGE}
_LOST_MESSAGE_JSON = msgspec.json.encode(WORKER_LOST_MESSAGE)


class BackgroundParts(RedisClient):
    """Background responses (``RedisStore`` composes this)."""

    def _load_background_scripts(self, client: Any) -> None:
        """Register the scripts, and bound the blocking reads by the client's pool."""
        pool = getattr(client, "connection_pool", client)  # a cluster client: its nodes'
        # A blocking read holds a connection of the pool: at most half of them do, and
        # each for at most _MAX_BLOCK (and half the socket timeout, which would end it).
        pool_size = getattr(pool, "max_connections", None)
        self._readers = max(1, pool_size // 2) if isinstance(pool_size, int) else 50
        socket_timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
        self._max_block = _MAX_BLOCK
        if isinstance(socket_timeout, (int, float)) and socket_timeout > 0:
            self._max_block = min(_MAX_BLOCK, socket_timeout / 2)
        self._reader_slots: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._start_background = client.register_script(START_BACKGROUND)
        self._record_events = client.register_script(RECORD_EVENTS)
        self._finish_background = client.register_script(FINISH_BACKGROUND)
        self._fail_lost = client.register_script(FAIL_LOST)
        self._background = client.register_script(BACKGROUND)
        self._cancel_background = client.register_script(CANCEL_BACKGROUND)
        self._read_events = client.register_script(READ_EVENTS)

    async def start_background(
        self, owner: str, response_id: str, response: bytes, *, stream: bool, lease: float
    ) -> None:
        args = [response, int(stream), milliseconds(lease), milliseconds(self.ttl)]
        with self._errors():
            await self._start_background(
                keys=self._background_keys(owner, response_id),
                args=args,
                client=await self._ready_client(),
            )

    async def record_events(
        self,
        owner: str,
        response_id: str,
        events: Sequence[bytes],
        *,
        status: str,
        lease: float,
    ) -> bool:
        keys = self._background_keys(owner, response_id)
        args = [status, milliseconds(lease), milliseconds(self.ttl), *events]
        with self._errors():
            stop = await self._record_events(
                keys=keys, args=args, client=await self._ready_client()
            )
        if isinstance(stop, bytes):  # its lease had ended: it is lost, whoever runs it
            await self._fail(keys, stop)
            return True
        return bool(stop)

    async def finish_background(
        self,
        owner: str,
        response_id: str,
        status: str,
        response: bytes,
        events: Sequence[bytes] = (),
    ) -> None:
        keys = self._background_keys(owner, response_id)
        args = [status, response, milliseconds(self.event_ttl), milliseconds(self.ttl)]
        with self._errors():
            ended = await self._finish_background(
                keys=keys, args=[*args, *events], client=await self._ready_client()
            )
        if isinstance(ended, bytes):
            await self._fail(keys, ended)

    async def get_background(self, owner: str, response_id: str) -> BackgroundState | None:
        keys = self._background_keys(owner, response_id)
        with self._errors():
            found = await self._background(keys=keys, client=await self._ready_client())
        return await self._settle(keys, found)

    async def cancel_background(self, owner: str, response_id: str) -> BackgroundState | None:
        keys = self._background_keys(owner, response_id)
        with self._errors():
            found = await self._cancel_background(keys=keys, client=await self._ready_client())
        return await self._settle(keys, found)

    async def read_events(
        self, owner: str, response_id: str, after: int, timeout: float
    ) -> tuple[list[bytes], bool] | None:
        keys = self._background_keys(owner, response_id)
        cursor = f"0-{max(after, -1) + 1}"  # the stream id of event number `after`
        with self._errors():
            found = await self._read_events(
                keys=keys, args=[cursor], client=await self._ready_client()
            )
        if found is None:
            return None
        state, entries = found
        events, finished = _events(entries)
        if not finished and state[5] == 0 and not _finished(state[0]):
            await self._settle(keys, state)  # its worker was lost: failed now, and the
            # events that say so were appended: read them too
            with self._errors():
                found = await self._read_events(
                    keys=keys, args=[cursor], client=await self._ready_client()
                )
            if found is None:
                return None
            events, finished = _events(found[1])
        if events or finished:
            return events, finished
        return _events(await self._wait_for_entries(keys[1], cursor, timeout))

    # -- internals --------------------------------------------------------------------
    async def _settle(self, keys: list[str], found: list[Any] | None) -> BackgroundState | None:
        """The state a script read (``None``: none); a running one whose lease ended
        is failed first."""
        if found is not None and found[5] == 0 and not _finished(found[0]):
            found = await self._fail(keys, found[1])
        if found is None:
            return None
        status, response, stream, cancel, events, _ = found
        return BackgroundState(
            status.decode(), response, stream == b"1", cancel == b"1", int(events)
        )

    async def _fail(self, keys: list[str], response: bytes) -> list[Any] | None:
        """Fail a response whose worker was lost (``response``: its object as read),
        unless another caller got there first; the state after."""
        failed = with_status(response, "failed", _LOST_ERROR)
        args = [
            response,
            failed,
            milliseconds(self.event_ttl),
            milliseconds(self.ttl),
            _LOST_MESSAGE_JSON,
        ]
        with self._errors():
            found: list[Any] | None = await self._fail_lost(
                keys=keys, args=args, client=await self._ready_client()
            )
        return found

    async def _wait_for_entries(self, key: str, cursor: str, timeout: float) -> list[Any]:
        """The stream entries after ``cursor`` (none yet: waits up to ``timeout``, or
        ``_max_block``, for the first, blocking in Redis)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        slots = self._reader_slots.get(loop)
        if slots is None:
            slots = self._reader_slots[loop] = asyncio.Semaphore(self._readers)
        if not slots.locked():
            await slots.acquire()
        else:  # as many reads as may block already do: wait for one to end
            try:
                await asyncio.wait_for(slots.acquire(), timeout)
            except asyncio.TimeoutError:
                return []
        try:
            block = min(deadline - loop.time(), self._max_block)
            if block <= 0:
                return []
            with self._errors():
                reply = await (await self._ready_client()).xread(
                    {key: cursor}, block=milliseconds(block)
                )
        finally:
            slots.release()
        return _read_entries(reply)

    def _background_keys(self, owner: str, response_id: str) -> list[str]:
        """A background response's state, its events and its worker's lease."""
        tail = f"{self._tag(owner, response_id)}:{response_id}"  # its tree's slot
        return [
            f"{self.key_prefix}background:{tail}",
            f"{self.key_prefix}background_events:{tail}",
            f"{self.key_prefix}background_lease:{tail}",
        ]


def _finished(status: bytes) -> bool:
    return status not in (b"queued", b"in_progress")


def _events(entries: Sequence[Any]) -> tuple[list[bytes], bool]:
    """The events among stream entries, and whether the end marker is among them."""
    events: list[bytes] = []
    finished = False
    for entry_id, fields in entries:
        if entry_id.startswith(b"0-"):
            events.append(fields[b"e"] if isinstance(fields, dict) else fields[1])
        else:
            finished = True
    return events, finished


def _read_entries(reply: Any) -> list[Any]:
    """The entries of an ``XREAD`` of one stream, as the client parsed them: a list of
    ``[stream, entries]`` (RESP2), or a dict of stream to entries (RESP3, and redis-py's
    unified replies), those sometimes wrapped in one more list."""
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    if entries and isinstance(entries[0], list):
        entries = entries[0]
    return list(entries)
