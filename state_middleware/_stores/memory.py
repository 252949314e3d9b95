"""The default store: one process, bounded in bytes, with a sliding TTL.

``MemoryStore`` keeps turns and notes itself and composes the other parts: items and
conversations (``memory_conversations.py``) and background responses
(``memory_background.py``), all in one cache (``memory_entries.py``) behind one lock.

A turn is kept with its parent's id; a chain is read by following the parents, and is
either whole or missing (never half a chain). A deleted turn stays as a tombstone while
a stored turn names it as its parent or a conversation names its items; a tombstone
nothing depends on any more is dropped, walking up the chain. Pending marks
(``begin``/``end``) are events in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from .. import _defaults
from .._record import TurnRecord, indexed_item_ids, record_item_ids
from .._store import StoreError
from .memory_background import BackgroundParts
from .memory_conversations import ConversationParts
from .memory_entries import NOTE, TURN, NoteEntry, TurnEntry, new_cache

__all__ = ["MemoryStore"]

_MAX_DEPTH = 1_000_000  # guards a corrupted parent loop, far beyond any real chain


class MemoryStore(ConversationParts, BackgroundParts):
    """Turns and conversations kept in this process (a ``cachetools.TLRUCache`` sized in
    bytes).

    ``max_bytes`` bounds everything kept (items, response objects, conversations and
    their item lists); the least recently used entries are evicted past it. ``ttl`` is
    sliding: loading or extending a chain refreshes every turn in it (to within
    ``ttl / 64``: a turn refreshed more recently than that is left as it is, which keeps
    long chains cheap). A chain with an evicted or expired turn is reported as missing,
    never replayed in part; so is a conversation with an evicted item.
    ``conversation_ttl`` (default: ``ttl``) is the sliding TTL of conversations, and of
    the items and turns they name while they are in use. ``timer`` is injectable for
    tests.
    """

    def __init__(
        self,
        max_bytes: int = _defaults.MEMORY_MAX_BYTES,
        ttl: float = _defaults.MEMORY_TTL,
        *,
        conversation_ttl: float | None = None,
        event_ttl: float = _defaults.EVENT_TTL,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if conversation_ttl is None:
            conversation_ttl = ttl
        if max_bytes <= 0 or ttl <= 0 or conversation_ttl <= 0 or event_ttl <= 0:
            raise ValueError("max_bytes, ttl, conversation_ttl and event_ttl must be positive")
        self.event_ttl = event_ttl
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.conversation_ttl = conversation_ttl
        self._timer = timer
        self._refresh_after = min(ttl, conversation_ttl) / 64
        self._cache = new_cache(max_bytes, timer)
        self._refs = {}
        self._cache.removed = self._removed
        self._lock = threading.RLock()
        self._pending: dict[tuple[str, str], asyncio.Event] = {}
        self._locks = {}

    @property
    def size(self) -> int:
        """Bytes currently held."""
        with self._lock:
            self._cache.expire()
            return int(self._cache.currsize)

    @property
    def evictions(self) -> int:
        """Entries evicted so far to stay within ``max_bytes`` (expired ones not
        counted)."""
        return self._cache.evictions

    # -- turns ------------------------------------------------------------------------
    async def put(
        self,
        owner: str,
        record: TurnRecord,
        *,
        conversation: str | None = None,
        item_ids: Sequence[str] | None = None,
    ) -> None:
        if record.size > self.max_bytes:
            raise StoreError(
                f"response {record.id} ({record.size} bytes) exceeds the store's "
                f"max_bytes ({self.max_bytes})"
            )
        item_ids = list(item_ids) if item_ids is not None else record_item_ids(record)
        with self._lock:
            now = self._timer()
            if record.parent_id is not None:
                # Refresh the ancestors first, so making room evicts something else.
                self._touch(owner, record.parent_id)
                parent = self._turn(owner, record.parent_id)
                if parent is not None:
                    parent.children += 1
            talk = self._conversation(owner, conversation) if conversation else None
            ttl = max(self.ttl, self.conversation_ttl) if talk is not None else self.ttl
            indexed = indexed_item_ids(record.id, item_ids)
            entry = TurnEntry(record, indexed, ttl, now)
            entry.kept = talk is not None
            self._cache[(TURN, owner, record.id)] = entry
            refs, response_id = self._refs, record.id
            for item_id in indexed:
                refs[(owner, item_id)] = response_id
            if talk is not None:
                talk.extend(item_ids)
                self._store_conversation(owner, talk, item_ids)

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
                self._refresh((TURN, owner, record.id), now)
            return chain

    async def delete(self, owner: str, response_id: str) -> bool:
        with self._lock:
            key = (TURN, owner, response_id)
            entry = self._turn(owner, response_id)
            if entry is None or entry.deleted:
                return False
            entry.deleted = True
            # Drop tombstones nothing depends on any more, walking up the chain.
            while entry is not None and entry.deleted and entry.children == 0 and not entry.kept:
                del self._cache[key]
                self._forget_items(owner, entry)
                parent_id = entry.record.parent_id
                if parent_id is None:
                    break
                key = (TURN, owner, parent_id)
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

    # -- notes ------------------------------------------------------------------------
    async def remember(self, owner: str, notes: Mapping[str, bytes]) -> None:
        with self._lock:
            now = self._timer()
            for key, value in notes.items():
                self._set(NOTE, owner, key, NoteEntry(key, value, self.ttl, now))

    async def recall(self, owner: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._lock:
            for key in keys:
                note = self._cache.get((NOTE, owner, key))
                if isinstance(note, NoteEntry):
                    found[key] = note.value
        return found

    # -- inside the lock ----------------------------------------------------------------
    def _touch(self, owner: str, response_id: str) -> None:
        """Refresh the TTL of a turn and all its ancestors."""
        now = self._timer()
        depth = 0
        current: str | None = response_id
        while current is not None and depth <= _MAX_DEPTH:
            entry = self._refresh((TURN, owner, current), now)
            if not isinstance(entry, TurnEntry):
                return
            current = entry.record.parent_id
            depth += 1
