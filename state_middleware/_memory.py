"""The default store: one process, bounded in bytes, with a sliding TTL."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec
from cachetools import TLRUCache

from . import _defaults
from ._errors import WORKER_LOST_MESSAGE
from ._record import (
    BackgroundState,
    ConversationRecord,
    TurnRecord,
    failure_events,
    record_item_ids,
    record_items,
    with_status,
)
from ._store import ItemsMissing, NewItem, StoreError

__all__ = ["MemoryStore"]

_MAX_DEPTH = 1_000_000  # guards a corrupted parent loop, far beyond any real chain

#: the cache holds every kind of entry side by side: (kind, owner, id)
Key = tuple[str, str, str]
_TURN = "turn"
_NOTE = "note"
_ITEM = "item"
_CONVERSATION = "conversation"
_BACKGROUND = "background"


class _Value:
    """What every cache entry has: its own size, its TTL, when it was last refreshed."""

    __slots__ = ("refreshed", "size", "ttl")

    def __init__(self, size: int, ttl: float, now: float) -> None:
        self.size = size
        self.ttl = ttl
        self.refreshed = now


class _Entry(_Value):
    """A stored turn."""

    __slots__ = ("children", "deleted", "kept", "record")

    def __init__(self, record: TurnRecord, ttl: float, now: float) -> None:
        super().__init__(record.size, ttl, now)
        self.record = record
        self.deleted = False
        self.children = 0
        self.kept = False  # a conversation names its items: never dropped on delete


class _Note(_Value):
    """A small per-owner note (``Store.remember``)."""

    __slots__ = ("value",)

    def __init__(self, key: str, value: bytes, ttl: float, now: float) -> None:
        super().__init__(len(key) + len(value) + 16, ttl, now)
        self.value = value


class _Item(_Value):
    """Where an item id is found: in a stored turn (``response_id``), or kept here as
    JSON (``value``: an item added to a conversation by the API)."""

    __slots__ = ("response_id", "value")

    def __init__(
        self, item_id: str, response_id: str | None, value: bytes | None, ttl: float, now: float
    ) -> None:
        size = len(item_id) + len(response_id or "") + len(value or b"") + 16
        super().__init__(size, ttl, now)
        self.response_id = response_id
        self.value = value


class _Conversation(_Value):
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


class _Background(_Value):
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


class _Cache(TLRUCache[Key, _Value]):
    """The cache, counting the entries it evicts to stay within its size (``popitem``
    is called for nothing else; expired entries leave through ``expire``)."""

    evictions = 0

    def popitem(self) -> tuple[Key, _Value]:
        item = super().popitem()
        self.evictions += 1
        return item


def _size(value: _Value) -> int:
    return value.size


def _expires(_key: Key, value: _Value, now: float) -> float:
    return now + value.ttl


class MemoryStore:
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
        self._cache = _Cache(maxsize=max_bytes, ttu=_expires, timer=timer, getsizeof=_size)
        self._lock = threading.RLock()
        self._pending: dict[tuple[str, str], asyncio.Event] = {}
        self._locks: dict[tuple[str, str], tuple[str, float]] = {}

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
    async def put(self, owner: str, record: TurnRecord, *, conversation: str | None = None) -> None:
        if record.size > self.max_bytes:
            raise StoreError(
                f"response {record.id} ({record.size} bytes) exceeds the store's "
                f"max_bytes ({self.max_bytes})"
            )
        item_ids = record_item_ids(record)
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
            entry = _Entry(record, ttl, now)
            entry.kept = talk is not None
            self._cache[(_TURN, owner, record.id)] = entry
            for item_id in item_ids:
                self._set(_ITEM, owner, item_id, _Item(item_id, record.id, None, ttl, now))
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
            while entry is not None and entry.deleted and entry.children == 0 and not entry.kept:
                del self._cache[key]
                self._forget_items(owner, entry.record)
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

    # -- notes ------------------------------------------------------------------------
    async def remember(self, owner: str, notes: Mapping[str, bytes]) -> None:
        with self._lock:
            now = self._timer()
            for key, value in notes.items():
                self._set(_NOTE, owner, key, _Note(key, value, self.ttl, now))

    async def recall(self, owner: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._lock:
            for key in keys:
                note = self._cache.get((_NOTE, owner, key))
                if isinstance(note, _Note):
                    found[key] = note.value
        return found

    # -- items ------------------------------------------------------------------------
    async def get_items(self, owner: str, ids: Sequence[str]) -> dict[str, bytes]:
        with self._lock:
            return self._items(owner, ids, strict=False)

    # -- conversations ----------------------------------------------------------------
    async def create_conversation(
        self, owner: str, conversation: ConversationRecord, items: Sequence[NewItem]
    ) -> None:
        with self._lock:
            talk = _Conversation(conversation, self.conversation_ttl, self._timer())
            self._add(owner, talk, items)
            self._store_conversation(owner, talk)

    async def get_conversation(self, owner: str, conversation_id: str) -> ConversationRecord | None:
        with self._lock:
            talk = self._conversation(owner, conversation_id)
            if talk is None:
                return None
            self._keep(owner, talk, ())
            return talk.record

    async def update_conversation(
        self, owner: str, conversation_id: str, metadata: bytes
    ) -> ConversationRecord | None:
        with self._lock:
            talk = self._conversation(owner, conversation_id)
            if talk is None:
                return None
            old = talk.record
            talk.record = ConversationRecord(old.id, old.created_at, metadata)
            self._store_conversation(owner, talk, ())
            return talk.record

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        with self._lock:
            return self._cache.pop((_CONVERSATION, owner, conversation_id), None) is not None

    async def conversation_items(
        self, owner: str, conversation_id: str
    ) -> list[tuple[str, bytes]] | None:
        with self._lock:
            talk = self._conversation(owner, conversation_id)
            if talk is None:
                return None
            found = self._items(owner, talk.ids, strict=True)
            self._keep(owner, talk, ())
            return [(item_id, found[item_id]) for item_id in talk.ids]

    async def add_items(self, owner: str, conversation_id: str, items: Sequence[NewItem]) -> bool:
        with self._lock:
            talk = self._conversation(owner, conversation_id)
            if talk is None:
                return False
            self._add(owner, talk, items)
            self._store_conversation(owner, talk, [item_id for item_id, _ in items])
            return True

    async def remove_item(self, owner: str, conversation_id: str, item_id: str) -> bool:
        with self._lock:
            talk = self._conversation(owner, conversation_id)
            if talk is None or item_id not in talk.ids:
                return False
            talk.remove(item_id)
            self._store_conversation(owner, talk, ())
            return True

    async def lock_conversation(
        self, owner: str, conversation_id: str, token: str, lease: float
    ) -> bool:
        now = self._timer()
        key = (owner, conversation_id)
        held = self._locks.get(key)
        if held is not None and held[0] != token and held[1] > now:
            return False
        self._locks[key] = (token, now + lease)
        return True

    async def unlock_conversation(self, owner: str, conversation_id: str, token: str) -> None:
        key = (owner, conversation_id)
        held = self._locks.get(key)
        if held is not None and held[0] == token:
            del self._locks[key]

    # -- background responses -------------------------------------------------------------
    async def start_background(
        self, owner: str, response_id: str, response: bytes, *, stream: bool, lease: float
    ) -> None:
        with self._lock:
            now = self._timer()
            entry = _Background(BackgroundState("queued", response, stream), self.ttl, now, lease)
            if entry.size > self.max_bytes:
                raise StoreError(f"background response {response_id} exceeds max_bytes")
            self._cache[(_BACKGROUND, owner, response_id)] = entry

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

    def _background(self, owner: str, response_id: str) -> _Background | None:
        """The entry; a running one whose worker's lease ended is failed first."""
        entry = self._cache.get((_BACKGROUND, owner, response_id))
        if not isinstance(entry, _Background):
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
        entry: _Background,
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

    def _reinsert(self, owner: str, response_id: str, entry: _Background, now: float) -> None:
        entry.resize()
        entry.refreshed = now
        if entry.size <= self.max_bytes:
            self._cache[(_BACKGROUND, owner, response_id)] = entry

    # -- inside the lock ----------------------------------------------------------------
    def _set(self, kind: str, owner: str, key: str, value: _Value) -> None:
        if value.size <= self.max_bytes:
            self._cache[(kind, owner, key)] = value

    def _turn(self, owner: str, response_id: str) -> _Entry | None:
        entry = self._cache.get((_TURN, owner, response_id))
        return entry if isinstance(entry, _Entry) else None

    def _conversation(self, owner: str, conversation_id: str) -> _Conversation | None:
        talk = self._cache.get((_CONVERSATION, owner, conversation_id))
        if not isinstance(talk, _Conversation):
            return None
        self._refresh((_CONVERSATION, owner, conversation_id), self._timer())
        return talk

    def _store_conversation(
        self, owner: str, talk: _Conversation, added: Sequence[str] | None = None
    ) -> None:
        """(Re)insert a conversation after a change: its size is counted anew and its
        TTL restarts; the items it names are kept alive (``added``: only those, unless
        the periodic pass over all of them is due; ``None``: all of them)."""
        talk.resize()
        if talk.size > self.max_bytes:
            raise StoreError(f"conversation {talk.record.id} exceeds the store's max_bytes")
        now = self._timer()
        talk.refreshed = now
        self._cache[(_CONVERSATION, owner, talk.record.id)] = talk
        if added is None:
            talk.kept_at = -float("inf")
        self._keep(owner, talk, added or ())

    def _keep(self, owner: str, talk: _Conversation, added: Sequence[str]) -> None:
        """The items a conversation names live at least as long as it does: every one of
        them is refreshed once per ``ttl / 64`` (a load costs no more than that), and
        newly added ones at once."""
        now = self._timer()
        if now - talk.kept_at >= self._refresh_after:
            talk.kept_at = now
            self._keep_items(owner, talk.ids, now)
        elif added:
            self._keep_items(owner, added, now)

    def _keep_items(self, owner: str, ids: Sequence[str], now: float) -> None:
        # A margin of one refresh interval: items are refreshed at most that long
        # before the conversation itself is.
        ttl = max(self.ttl, self.conversation_ttl) + self._refresh_after
        for item_id in dict.fromkeys(ids):
            ref = self._cache.get((_ITEM, owner, item_id))
            if not isinstance(ref, _Item):
                continue
            if ref.ttl < ttl or now - ref.refreshed >= self._refresh_after:
                ref.ttl, ref.refreshed = ttl, now
                self._cache[(_ITEM, owner, item_id)] = ref
            if ref.response_id is not None:
                entry = self._turn(owner, ref.response_id)
                if entry is not None:
                    entry.kept = True
                    if entry.ttl < ttl or now - entry.refreshed >= self._refresh_after:
                        entry.ttl, entry.refreshed = ttl, now
                        self._cache[(_TURN, owner, ref.response_id)] = entry

    def _add(self, owner: str, talk: _Conversation, items: Sequence[NewItem]) -> None:
        """Append items to a conversation, all or none."""
        referenced = [item_id for item_id, value in items if value is None]
        missing = set(referenced) - set(self._items(owner, referenced, strict=False))
        if missing:
            raise ItemsMissing(f"no stored item with id {sorted(missing)[0]!r}")
        now = self._timer()
        kept = [
            (item_id, _Item(item_id, None, value, self.conversation_ttl, now))
            for item_id, value in items
            if value is not None
        ]
        if any(item.size > self.max_bytes for _, item in kept):
            raise StoreError("an item exceeds the store's max_bytes")
        for item_id, item in kept:
            self._cache[(_ITEM, owner, item_id)] = item
        talk.extend([item_id for item_id, _ in items])

    def _items(self, owner: str, ids: Sequence[str], *, strict: bool) -> dict[str, bytes]:
        """The JSON of each id found; with ``strict``, ``ItemsMissing`` unless all are."""
        found: dict[str, bytes] = {}
        turns: dict[str, dict[str, bytes]] = {}
        for item_id in ids:
            if item_id in found:
                continue
            ref = self._cache.get((_ITEM, owner, item_id))
            value: bytes | None = None
            if isinstance(ref, _Item):
                if ref.value is not None:
                    value = ref.value
                elif ref.response_id is not None:
                    if ref.response_id not in turns:
                        entry = self._turn(owner, ref.response_id)
                        turns[ref.response_id] = (
                            dict(record_items(entry.record)) if entry is not None else {}
                        )
                    value = turns[ref.response_id].get(item_id)
            if value is not None:
                found[item_id] = value
            elif strict:
                raise ItemsMissing(f"item {item_id} is no longer stored")
        return found

    def _forget_items(self, owner: str, record: TurnRecord) -> None:
        """Drop the ids that point into a turn that is no longer kept."""
        for item_id in record_item_ids(record):
            ref = self._cache.get((_ITEM, owner, item_id))
            if isinstance(ref, _Item) and ref.response_id == record.id:
                del self._cache[(_ITEM, owner, item_id)]

    def _touch(self, owner: str, response_id: str) -> None:
        """Refresh the TTL of a turn and all its ancestors."""
        now = self._timer()
        depth = 0
        current: str | None = response_id
        while current is not None and depth <= _MAX_DEPTH:
            entry = self._refresh((_TURN, owner, current), now)
            if not isinstance(entry, _Entry):
                return
            current = entry.record.parent_id
            depth += 1

    def _refresh(self, key: Key, now: float) -> _Value | None:
        value = self._cache.get(key)  # also marks it recently used
        if value is not None and now - value.refreshed >= self._refresh_after:
            value.refreshed = now
            self._cache[key] = value  # re-inserting restarts its TTL
        return value
