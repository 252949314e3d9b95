"""``RedisStore``'s items, conversations and conversation locks.

Keys (``{owner}`` as in ``redis_client.py``):

- ``{key_prefix}item:{owner}:{item id}``: where an item is found by id. ``@`` and a
  response id for an item of that stored turn (every item id of every turn, derived
  ones included: only the reference, the item itself lives in the turn), or the item's
  JSON for an item added by the conversations API. The latest stored wins.
- ``{key_prefix}conversation:{owner}:{conversation id}``: a hash with ``created_at``,
  ``metadata`` and ``refreshed`` (when, in Redis' milliseconds, the TTLs of what it
  names were last refreshed).
- ``{key_prefix}conversation_items:{owner}:{conversation id}``: the conversation's item
  ids, oldest first (a list; absent while empty).
- ``{key_prefix}lock:{owner}:{conversation id}``: the token holding the conversation's
  lock, with a TTL of the lease.

Round trips. ``conversation_items`` is one script that reads the id list, the item keys
and the turns they point into (the items are cut out of the turns here); ``get_items``
is the same without the list. It raises ``ItemsMissing`` when any item is missing, so a
conversation is never replayed in part. Every other method is one script too (deleting
a conversation is one transaction), so nothing is read half written.

Retention. A conversation and its list live ``conversation_ttl`` (by default ``ttl``;
``None``: until deleted) from their last use: reading it or its items, adding or
removing items, appending a turn. Whatever a conversation names (item keys, and the
turns they point into, which are then ``kept``: deleting the response hides it but keeps
its items) lives at least ``max(ttl, conversation_ttl)`` plus
``min(ttl, conversation_ttl) / 64`` from the last refresh, or never expires with
``conversation_ttl=None``; a conversation in use refreshes all of it when it was last
refreshed longer ago than that ``/ 64`` (listing its items always does), so an append
otherwise costs only what it appends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._record import ConversationRecord, decode_record, record_items
from .._store import ItemsMissing, NewItem
from .redis_client import RedisClient, milliseconds, owner_digest
from .redis_conversation_scripts import (
    ADD_ITEMS,
    CONVERSATION,
    CONVERSATION_ITEMS,
    GET_ITEMS,
    LOCK,
    REMOVE_ITEM,
    UNLOCK,
)

__all__ = ["ConversationParts"]

_REFERENCE = b"@"  # an item key holding this and a response id points into that turn


class ConversationParts(RedisClient):
    """Items, conversations and conversation locks (``RedisStore`` composes this)."""

    def _load_conversation_scripts(self, client: Any) -> None:
        self._get_items = client.register_script(GET_ITEMS)
        self._conversation = client.register_script(CONVERSATION)
        self._conversation_items = client.register_script(CONVERSATION_ITEMS)
        self._add_items = client.register_script(ADD_ITEMS)
        self._remove_item = client.register_script(REMOVE_ITEM)
        self._lock = client.register_script(LOCK)
        self._unlock = client.register_script(UNLOCK)

    # -- items ------------------------------------------------------------------------
    async def get_items(self, owner: str, ids: Sequence[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        with self._errors():
            values, records = await self._get_items(
                keys=[], args=[*self._context(owner), *wanted], client=self._current_client()
            )
        return _resolve(wanted, values, records)

    # -- conversations ----------------------------------------------------------------
    async def create_conversation(
        self, owner: str, conversation: ConversationRecord, items: Sequence[NewItem]
    ) -> None:
        keys = self._conversation_keys(owner, conversation.id)
        await self._add(owner, keys, [conversation.created_at, conversation.metadata], items)

    async def get_conversation(self, owner: str, conversation_id: str) -> ConversationRecord | None:
        return await self._use_conversation(owner, conversation_id, [])

    async def update_conversation(
        self, owner: str, conversation_id: str, metadata: bytes
    ) -> ConversationRecord | None:
        return await self._use_conversation(owner, conversation_id, [metadata])

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        record_key, list_key = self._conversation_keys(owner, conversation_id)
        with self._errors():
            async with self._current_client().pipeline(transaction=True) as pipe:
                pipe.delete(record_key)
                pipe.delete(list_key)
                deleted, _ = await pipe.execute()
        return bool(deleted)

    async def conversation_items(
        self, owner: str, conversation_id: str
    ) -> list[tuple[str, bytes]] | None:
        with self._errors():
            found = await self._conversation_items(
                keys=self._conversation_keys(owner, conversation_id),
                args=self._context(owner),
                client=self._current_client(),
            )
        if found is None:
            return None
        encoded_ids, values, records = found
        ids = [item_id.decode() for item_id in encoded_ids]
        items = _resolve(ids, values, records)
        for item_id in ids:
            if item_id not in items:
                raise ItemsMissing(f"item {item_id} is no longer stored")
        return [(item_id, items[item_id]) for item_id in ids]

    async def add_items(self, owner: str, conversation_id: str, items: Sequence[NewItem]) -> bool:
        keys = self._conversation_keys(owner, conversation_id)
        return await self._add(owner, keys, ["", ""], items)

    async def remove_item(self, owner: str, conversation_id: str, item_id: str) -> bool:
        with self._errors():
            removed = await self._remove_item(
                keys=self._conversation_keys(owner, conversation_id),
                args=[*self._context(owner), item_id],
                client=self._current_client(),
            )
        return bool(removed)

    # -- conversation locks -----------------------------------------------------------
    async def lock_conversation(
        self, owner: str, conversation_id: str, token: str, lease: float
    ) -> bool:
        with self._errors():
            taken = await self._lock(
                keys=[self._lock_key(owner, conversation_id)],
                args=[token, milliseconds(lease)],
                client=self._current_client(),
            )
        return bool(taken)

    async def unlock_conversation(self, owner: str, conversation_id: str, token: str) -> None:
        with self._errors():
            await self._unlock(
                keys=[self._lock_key(owner, conversation_id)],
                args=[token],
                client=self._current_client(),
            )

    # -- internals --------------------------------------------------------------------
    async def _add(
        self, owner: str, keys: list[str], create: list[Any], items: Sequence[NewItem]
    ) -> bool:
        """Create a conversation (``create``: created_at and metadata) or add to one
        (``create``: two empty strings), all items or none."""
        args = [
            *self._context(owner),
            *create,
            *(item_id for item_id, _ in items),
            *(value or b"" for _, value in items),
        ]
        with self._errors():
            added = await self._add_items(keys=keys, args=args, client=self._current_client())
        if isinstance(added, bytes):
            raise ItemsMissing(f"no stored item with id {added.decode()!r}")
        return bool(added)

    async def _use_conversation(
        self, owner: str, conversation_id: str, metadata: list[bytes]
    ) -> ConversationRecord | None:
        with self._errors():
            found = await self._conversation(
                keys=self._conversation_keys(owner, conversation_id),
                args=[*self._context(owner), *metadata],
                client=self._current_client(),
            )
        if found is None:
            return None
        created_at, stored_metadata = found
        return ConversationRecord(conversation_id, int(created_at), stored_metadata)

    def _conversation_keys(self, owner: str, conversation_id: str) -> list[str]:
        """The conversation's key and the key of its list of item ids."""
        digest = owner_digest(owner)
        return [
            f"{self.key_prefix}conversation:{digest}:{conversation_id}",
            f"{self.key_prefix}conversation_items:{digest}:{conversation_id}",
        ]

    def _lock_key(self, owner: str, conversation_id: str) -> str:
        return f"{self.key_prefix}lock:{owner_digest(owner)}:{conversation_id}"

    def _context(self, owner: str) -> list[str | int]:
        """What every item and conversation script gets first: the owner's item and turn
        key bases, the conversation TTL, the TTL of what a conversation names, and how
        often a conversation in use refreshes what it names (milliseconds; 0: never
        expires).

        What a conversation names lives ``max(ttl, conversation_ttl)`` from its last
        refresh, plus the refresh interval: so it outlives the conversation, which
        refreshes it at least that often while in use."""
        if self.conversation_ttl is None:
            talk = kept = 0
            every = milliseconds(self.ttl / 64)
        else:
            talk = milliseconds(self.conversation_ttl)
            every = milliseconds(min(self.ttl, self.conversation_ttl) / 64)
            kept = milliseconds(max(self.ttl, self.conversation_ttl)) + every
        return [self._item_base(owner), self._turn_base(owner), talk, kept, every]


def _resolve(
    ids: Sequence[str], values: Sequence[bytes | None], records: Sequence[bytes]
) -> dict[str, bytes]:
    """The JSON of each id found, from what a script read: per id its item JSON or a
    reference to a turn, and the turns referenced (response id, record, ...)."""
    turns = {
        response_id: dict(record_items(decode_record(data)))
        for response_id, data in zip(records[::2], records[1::2], strict=True)
    }
    found: dict[str, bytes] = {}
    for item_id, value in zip(ids, values, strict=True):
        if value is None:
            continue
        if value.startswith(_REFERENCE):
            item = turns.get(value[1:], {}).get(item_id)
            if item is not None:
                found[item_id] = item
        else:
            found[item_id] = value
    return found
