"""What ``MemoryStore`` keeps, and the cache plumbing every part of it uses.

Everything lives in one ``cachetools.TLRUCache`` sized in bytes: turns, notes, item ids,
conversations and background responses side by side, under ``(kind, owner, id)``. Each
entry carries its own size (what the cache counts against ``max_bytes``), its own TTL
(the cache asks each entry when it expires) and when it was last refreshed. A TTL is
sliding: re-inserting an entry restarts it, which ``refresh`` does at most once per
``ttl / 64`` so that walking a long chain stays cheap.

``CacheParts`` is the base of every part of the store: it declares what
``MemoryStore.__init__`` sets and holds the helpers they share. Every helper here runs
inside the store's lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

from cachetools import TLRUCache

from .._record import BackgroundState, ConversationRecord, TurnRecord

__all__ = [
    "BACKGROUND",
    "CONVERSATION",
    "ITEM",
    "NOTE",
    "TURN",
    "BackgroundEntry",
    "Cache",
    "CacheParts",
    "ConversationEntry",
    "ItemEntry",
    "Key",
    "NoteEntry",
    "TurnEntry",
    "Value",
    "new_cache",
]

#: the cache holds every kind of entry side by side: (kind, owner, id)
Key = tuple[str, str, str]
TURN = "turn"
NOTE = "note"
ITEM = "item"
CONVERSATION = "conversation"
BACKGROUND = "background"


class Value:
    """What every cache entry has: its own size, its TTL, when it was last refreshed."""

    __slots__ = ("refreshed", "size", "ttl")

    def __init__(self, size: int, ttl: float, now: float) -> None:
        self.size = size
        self.ttl = ttl
        self.refreshed = now


class TurnEntry(Value):
    """A stored turn, and the ids of its items (each found again through it)."""

    __slots__ = ("children", "deleted", "item_ids", "kept", "record")

    def __init__(self, record: TurnRecord, item_ids: Sequence[str], ttl: float, now: float) -> None:
        # The ids are counted here: the store's map from each id to this turn holds
        # the same strings.
        super().__init__(record.size + sum(len(i) + 16 for i in item_ids), ttl, now)
        self.record = record
        self.item_ids = tuple(item_ids)
        self.deleted = False
        self.children = 0
        self.kept = False  # a conversation names its items: never dropped on delete


class NoteEntry(Value):
    """A small per-owner note (``Store.remember``)."""

    __slots__ = ("value",)

    def __init__(self, key: str, value: bytes, ttl: float, now: float) -> None:
        super().__init__(len(key) + len(value) + 16, ttl, now)
        self.value = value


class ItemEntry(Value):
    """Where an item id is found: in a stored turn (``response_id``), or kept here as
    JSON (``value``: an item added to a conversation by the API)."""

    __slots__ = ("response_id", "value")

    def __init__(
        self, item_id: str, response_id: str | None, value: bytes | None, ttl: float, now: float
    ) -> None:
        # ``response_id`` is the stored record's own id string (shared, not a copy):
        # only the item id and a stored item's JSON are bytes of their own.
        size = len(item_id) + len(value or b"") + 16
        super().__init__(size, ttl, now)
        self.response_id = response_id
        self.value = value


class ConversationEntry(Value):
    __slots__ = ("ids", "ids_size", "kept_at", "record")

    def __init__(self, record: ConversationRecord, ttl: float, now: float) -> None:
        super().__init__(record.size, ttl, now)
        self.record = record
        self.ids: list[str] = []
        self.ids_size = 0
        self.kept_at = -float("inf")  # when every item it names was last kept alive

    def extend(self, ids: Sequence[str]) -> None:
        self.ids.extend(ids)
        self.ids_size += sum(len(item_id) + 8 for item_id in ids)

    def remove(self, item_id: str) -> None:
        self.ids.remove(item_id)
        self.ids_size -= len(item_id) + 8

    def resize(self) -> None:
        self.size = self.record.size + self.ids_size


class BackgroundEntry(Value):
    """A background response: its state, its events, its worker's lease."""

    __slots__ = (
        "changed",
        "events",
        "events_size",
        "events_until",
        "lease_until",
        "state",
        "waiting",
    )

    def __init__(self, state: BackgroundState, ttl: float, now: float, lease: float) -> None:
        super().__init__(len(state.response) + 64, ttl, now)
        self.state = state
        self.events: list[bytes] = []
        self.events_size = 0
        self.events_until = float("inf")  # set when it finishes
        self.lease_until = now + lease
        self.changed = asyncio.Event()  # set (and replaced) whenever events come
        self.waiting = False  # a reader waits on ``changed``

    def add(self, events: Sequence[bytes]) -> None:
        self.events.extend(events)
        self.events_size += sum(len(event) + 8 for event in events)

    def resize(self) -> None:
        self.size = len(self.state.response) + self.events_size + 64

    def notify(self) -> None:
        if self.waiting:
            self.waiting = False
            self.changed.set()
            self.changed = asyncio.Event()


class Cache(TLRUCache[Key, Value]):
    """The cache, counting the entries it evicts to stay within its size (``popitem``
    is called for nothing else; expired entries leave through ``expire``), and telling
    ``removed`` of every entry that leaves either way."""

    evictions = 0
    removed: Callable[[Key, Value], None] | None = None

    def popitem(self) -> tuple[Key, Value]:
        item = super().popitem()
        self.evictions += 1
        if self.removed is not None:
            self.removed(*item)
        return item

    def expire(self, time: float | None = None) -> list[tuple[Key, Value]]:
        expired: list[tuple[Key, Value]] = list(super().expire(time))
        if self.removed is not None:
            for key, value in expired:
                self.removed(key, value)
        return expired


def _size(value: Value) -> int:
    return value.size


def _expires(_key: Key, value: Value, now: float) -> float:
    return now + value.ttl


def new_cache(max_bytes: int, timer: Callable[[], float]) -> Cache:
    """An empty cache holding at most ``max_bytes``, each entry expiring on its own TTL."""
    return Cache(maxsize=max_bytes, ttu=_expires, timer=timer, getsizeof=_size)


class CacheParts:
    """The base of every part of ``MemoryStore``: the attributes its ``__init__`` sets,
    and the cache helpers the parts share (called inside ``_lock``)."""

    max_bytes: int
    ttl: float
    conversation_ttl: float
    event_ttl: float
    _timer: Callable[[], float]
    _refresh_after: float  # a TTL is restarted at most this often
    _cache: Cache
    _lock: threading.RLock
    #: (owner, item id) -> the response whose turn holds that item
    _refs: dict[tuple[str, str], str]

    def _set(self, kind: str, owner: str, key: str, value: Value) -> None:
        if value.size <= self.max_bytes:
            self._cache[(kind, owner, key)] = value

    def _removed(self, key: Key, value: Value) -> None:
        """An entry left the cache (evicted, expired): a turn's item ids go with it."""
        if isinstance(value, TurnEntry):
            self._forget_items(key[1], value)

    def _forget_items(self, owner: str, entry: TurnEntry) -> None:
        """Drop the ids that point into a turn that is no longer kept."""
        refs, response_id = self._refs, entry.record.id
        for item_id in entry.item_ids:
            if refs.get((owner, item_id)) == response_id:
                del refs[(owner, item_id)]

    def _turn(self, owner: str, response_id: str) -> TurnEntry | None:
        entry = self._cache.get((TURN, owner, response_id))
        return entry if isinstance(entry, TurnEntry) else None

    def _refresh(self, key: Key, now: float) -> Value | None:
        value = self._cache.get(key)  # also marks it recently used
        if value is not None and now - value.refreshed >= self._refresh_after:
            value.refreshed = now
            self._cache[key] = value  # re-inserting restarts its TTL
        return value
