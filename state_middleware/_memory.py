"""The default store: one process, bounded in bytes, with a sliding TTL."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from cachetools import TTLCache

from . import _defaults
from ._record import TurnRecord
from ._store import StoreError

__all__ = ["MemoryStore"]

_MAX_DEPTH = 1_000_000  # guards a corrupted parent loop, far beyond any real chain

#: the cache holds turns and notes side by side: (kind, owner, id)
Key = tuple[str, str, str]
_TURN = "turn"
_NOTE = "note"


class _Note:
    """A small per-owner note (``Store.remember``), bounded and expired like turns."""

    __slots__ = ("size", "value")

    def __init__(self, key: str, value: bytes) -> None:
        self.value = value
        self.size = len(key) + len(value) + 16


class _Entry:
    __slots__ = ("children", "deleted", "record", "refreshed")

    def __init__(self, record: TurnRecord, now: float) -> None:
        self.record = record
        self.deleted = False
        self.children = 0
        self.refreshed = now


def _entry_size(entry: _Entry | _Note) -> int:
    return entry.size if isinstance(entry, _Note) else entry.record.size


class MemoryStore:
    """Turns kept in this process (a ``cachetools.TTLCache`` sized in bytes).

    ``max_bytes`` bounds the items and response objects kept; the least recently used
    turns are evicted past it. ``ttl`` is sliding: loading or extending a chain
    refreshes every turn in it (to within ``ttl / 64``: a turn refreshed more recently
    than that is left as it is, which keeps long chains cheap). A chain with an evicted
    or expired turn is reported as missing, never replayed in part. ``timer`` is
    injectable for tests.
    """

    def __init__(
        self,
        max_bytes: int = _defaults.MEMORY_MAX_BYTES,
        ttl: float = _defaults.MEMORY_TTL,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0 or ttl <= 0:
            raise ValueError("max_bytes and ttl must be positive")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._timer = timer
        self._refresh_after = ttl / 64
        self._cache: TTLCache[Key, _Entry | _Note] = TTLCache(
            maxsize=max_bytes, ttl=ttl, timer=timer, getsizeof=_entry_size
        )
        self._lock = threading.RLock()
        self._pending: dict[tuple[str, str], asyncio.Event] = {}

    @property
    def size(self) -> int:
        """Bytes currently held."""
        with self._lock:
            self._cache.expire()
            return int(self._cache.currsize)

    async def put(self, owner: str, record: TurnRecord) -> None:
        if record.size > self.max_bytes:
            raise StoreError(
                f"response {record.id} ({record.size} bytes) exceeds the store's "
                f"max_bytes ({self.max_bytes})"
            )
        with self._lock:
            if record.parent_id is not None:
                # Refresh the ancestors first, so making room evicts something else.
                self._touch(owner, record.parent_id)
                parent = self._turn(owner, record.parent_id)
                if parent is not None:
                    parent.children += 1
            self._cache[(_TURN, owner, record.id)] = _Entry(record, self._timer())

    async def get(self, owner: str, response_id: str) -> TurnRecord | None:
        with self._lock:
            entry = self._turn(owner, response_id)
            if entry is None or entry.deleted:
                return None
            return entry.record

    async def get_chain(self, owner: str, response_id: str) -> list[TurnRecord] | None:
        with self._lock:
            head = self._turn(owner, response_id)
            if head is None or head.deleted:
                return None
            chain = [head.record]
            parent_id = head.record.parent_id
            while parent_id is not None:
                entry = self._turn(owner, parent_id)
                if entry is None or len(chain) > _MAX_DEPTH:
                    return None  # half a chain is no chain
                chain.append(entry.record)
                parent_id = entry.record.parent_id
            chain.reverse()
            now = self._timer()
            for record in chain:
                self._refresh((_TURN, owner, record.id), now)
            return chain

    async def delete(self, owner: str, response_id: str) -> bool:
        with self._lock:
            key = (_TURN, owner, response_id)
            entry = self._turn(owner, response_id)
            if entry is None or entry.deleted:
                return False
            entry.deleted = True
            # Drop tombstones nothing depends on any more, walking up the chain.
            while entry is not None and entry.deleted and entry.children == 0:
                del self._cache[key]
                parent_id = entry.record.parent_id
                if parent_id is None:
                    break
                key = (_TURN, owner, parent_id)
                entry = self._turn(owner, parent_id)
                if entry is not None:
                    entry.children -= 1
            return True

    async def begin(self, owner: str, response_id: str) -> None:
        self._pending[(owner, response_id)] = asyncio.Event()

    async def end(self, owner: str, response_id: str) -> None:
        event = self._pending.pop((owner, response_id), None)
        if event is not None:
            event.set()

    async def wait(self, owner: str, response_id: str, timeout: float) -> bool:
        event = self._pending.get((owner, response_id))
        if event is None:
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return True

    async def remember(self, owner: str, notes: Mapping[str, bytes]) -> None:
        with self._lock:
            for key, value in notes.items():
                note = _Note(key, value)
                if note.size <= self.max_bytes:
                    self._cache[(_NOTE, owner, key)] = note

    async def recall(self, owner: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._lock:
            for key in keys:
                note = self._cache.get((_NOTE, owner, key))
                if isinstance(note, _Note):
                    found[key] = note.value
        return found

    def _turn(self, owner: str, response_id: str) -> _Entry | None:
        entry = self._cache.get((_TURN, owner, response_id))
        return entry if isinstance(entry, _Entry) else None

    def _touch(self, owner: str, response_id: str) -> None:
        """Refresh the TTL of a turn and all its ancestors."""
        now = self._timer()
        depth = 0
        current: str | None = response_id
        while current is not None and depth <= _MAX_DEPTH:
            entry = self._refresh((_TURN, owner, current), now)
            if entry is None:
                return
            current = entry.record.parent_id
            depth += 1

    def _refresh(self, key: Key, now: float) -> _Entry | None:
        entry = self._cache.get(key)  # also marks it recently used
        if not isinstance(entry, _Entry):
            return None
        if now - entry.refreshed >= self._refresh_after:
            entry.refreshed = now
            self._cache[key] = entry  # re-inserting restarts its TTL
        return entry
