"""``MemoryStore``'s items, conversations and conversation locks.

An item id is found either in a stored turn (its entry names the turn, and the item is
cut out of the turn's record when read) or kept on its own as JSON (an item added by
the conversations API). A conversation is its record and its list of item ids; it has
the sliding ``conversation_ttl``, and whatever it names (item entries, and the turns
they point into, which are then ``kept``: deleting the response hides it but keeps its
items) lives at least ``max(ttl, conversation_ttl)`` plus one refresh interval. A
conversation in use refreshes all it names once per ``ttl / 64`` (and newly added items
at once), so an append costs only what it appends. A conversation with an item evicted
raises ``ItemsMissing`` when its items are listed: it is never replayed in part.

Conversation locks are leases held in this process: a token holds the lock until it
unlocks or its lease ends.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._ids import derived_from
from .._record import ConversationRecord, record_items
from .._store import ItemsMissing, NewItem, StoreError
from .memory_entries import (
    CONVERSATION,
    ITEM,
    TURN,
    CacheParts,
    ConversationEntry,
    ItemEntry,
)

__all__ = ["ConversationParts"]


class ConversationParts(CacheParts):
    """Items, conversations and conversation locks (``MemoryStore`` composes this)."""

    _locks: dict[tuple[str, str], tuple[str, float]]  # (owner, id): (token, lease end)

    # -- items ------------------------------------------------------------------------
    async def get_items(self, owner: str, ids: Sequence[str]) -> dict[str, bytes]:
        with self._lock:
            return self._items(owner, ids, strict=False)

    # -- conversations ----------------------------------------------------------------
    async def create_conversation(
        self, owner: str, conversation: ConversationRecord, items: Sequence[NewItem]
    ) -> None:
        with self._lock:
            talk = ConversationEntry(conversation, self.conversation_ttl, self._timer())
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
            return self._cache.pop((CONVERSATION, owner, conversation_id), None) is not None

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

    # -- conversation locks -----------------------------------------------------------
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

    # -- inside the lock ----------------------------------------------------------------
    def _conversation(self, owner: str, conversation_id: str) -> ConversationEntry | None:
        talk = self._cache.get((CONVERSATION, owner, conversation_id))
        if not isinstance(talk, ConversationEntry):
            return None
        self._refresh((CONVERSATION, owner, conversation_id), self._timer())
        return talk

    def _store_conversation(
        self, owner: str, talk: ConversationEntry, added: Sequence[str] | None = None
    ) -> None:
        """(Re)insert a conversation after a change: its size is counted anew and its
        TTL restarts; the items it names are kept alive (``added``: only those, unless
        the periodic pass over all of them is due; ``None``: all of them)."""
        talk.resize()
        if talk.size > self.max_bytes:
            raise StoreError(f"conversation {talk.record.id} exceeds the store's max_bytes")
        now = self._timer()
        talk.refreshed = now
        self._cache[(CONVERSATION, owner, talk.record.id)] = talk
        if added is None:
            talk.kept_at = -float("inf")
        self._keep(owner, talk, added or ())

    def _keep(self, owner: str, talk: ConversationEntry, added: Sequence[str]) -> None:
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
            ref = self._cache.get((ITEM, owner, item_id))
            if isinstance(ref, ItemEntry):  # kept here, added by the API
                if ref.ttl < ttl or now - ref.refreshed >= self._refresh_after:
                    ref.ttl, ref.refreshed = ttl, now
                    self._cache[(ITEM, owner, item_id)] = ref
                continue
            response_id = self._refs.get((owner, item_id)) or derived_from(item_id)
            entry = self._turn(owner, response_id) if response_id is not None else None
            if entry is not None:
                entry.kept = True
                if entry.ttl < ttl or now - entry.refreshed >= self._refresh_after:
                    entry.ttl, entry.refreshed = ttl, now
                    self._cache[(TURN, owner, entry.record.id)] = entry

    def _add(self, owner: str, talk: ConversationEntry, items: Sequence[NewItem]) -> None:
        """Append items to a conversation, all or none."""
        referenced = [item_id for item_id, value in items if value is None]
        missing = set(referenced) - set(self._items(owner, referenced, strict=False))
        if missing:
            raise ItemsMissing(f"no stored item with id {sorted(missing)[0]!r}")
        now = self._timer()
        kept = [
            (item_id, ItemEntry(item_id, None, value, self.conversation_ttl, now))
            for item_id, value in items
            if value is not None
        ]
        if any(item.size > self.max_bytes for _, item in kept):
            raise StoreError("an item exceeds the store's max_bytes")
        for item_id, item in kept:
            self._cache[(ITEM, owner, item_id)] = item
        talk.extend([item_id for item_id, _ in items])

    def _items(self, owner: str, ids: Sequence[str], *, strict: bool) -> dict[str, bytes]:
        """The JSON of each id found; with ``strict``, ``ItemsMissing`` unless all are."""
        found: dict[str, bytes] = {}
        turns: dict[str, dict[str, bytes]] = {}
        for item_id in ids:
            if item_id in found:
                continue
            ref = self._cache.get((ITEM, owner, item_id))
            value: bytes | None = None
            if isinstance(ref, ItemEntry):  # kept here, added by the API
                value = ref.value
            else:
                response_id = self._refs.get((owner, item_id)) or derived_from(item_id)
                if response_id is not None:
                    if response_id not in turns:
                        entry = self._turn(owner, response_id)
                        turns[response_id] = (
                            dict(record_items(entry.record)) if entry is not None else {}
                        )
                    value = turns[response_id].get(item_id)
            if value is not None:
                found[item_id] = value
            elif strict:
                raise ItemsMissing(f"item {item_id} is no longer stored")
        return found
