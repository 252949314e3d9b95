"""``RedisStore``'s items, conversations and conversation locks.

Keys (``{O}`` the owner digest, ``{O.T}`` the hash tag of a tree, as in
``redis_client.py``; a conversation's ``T`` is the tree of its id, which its turns share):

- ``{key_prefix}tree:{O.T}``: the tree's hash (its turns: see ``redis.py``). A
  conversation keeps there ``i:{item id}`` for each item it names whose id does not say
  where it is: the item's JSON (added by the conversations API; one added by id is
  copied in from wherever it was), or ``@`` and the response id of the turn of this tree
  whose record holds it. A derived item id of a turn of the tree needs no field. And
  ``g:{conversation id}``, the conversation's mark (below), while it has one.
- ``{key_prefix}conversation:{O.T}:{conversation id}``: a hash with ``created_at``,
  ``metadata`` and ``refreshed`` (when, in Redis' milliseconds, the pointer keys of what
  it names were last refreshed).
- ``{key_prefix}conversation_items:{O.T}:{conversation id}``: the conversation's item
  ids, oldest first (a list; absent while empty).
- ``{key_prefix}lock:{O.T}:{conversation id}``: the token holding the conversation's
  lock, with a TTL of the lease.
- ``{key_prefix}item:{O}:{item id}`` (no hash tag: spread over a cluster's slots): where
  ``get_items`` finds an item, ``@`` and a response id (in that turn's record) or ``^``
  and a conversation id (that conversation's ``i:`` field). The latest stored wins. It is
  written after what it points at (a pointer to nothing is an item missing). A derived
  item id needs none: its id says ``@`` and its response id, which is where it is looked
  for when it has no pointer key (a client may send an id of that form as its own).

So a conversation is whole in one slot, and every script touches the keys of one slot.

Round trips. ``conversation_items`` is one script reading the list, the ``i:`` fields and
the turns they name (the items are cut out of the turns here); it raises
``ItemsMissing`` when any item is missing, so a conversation is never replayed in part.
``get_items`` is two pipelines: the pointer keys, then one script per tree they name.
Every other method is one script, plus one pipeline when pointer keys are to be written
or retimed (adding items, a refresh that is due, deleting a conversation that never
expires), and ``get_items`` first when items are added by id: a constant number of round
trips whatever the conversation's length.

Work per turn. A process keeps the conversations it has loaded
(``redis_conversation_cache.py``, a second cache of ``cache_bytes``) and reads again only
the items appended since: the Redis work of a turn does not grow with its conversation
(but every ``/ 64`` of the TTL, when the pointer keys are refreshed, below). A process
that never saw a conversation reads it whole, once. What makes this safe is the
conversation's mark: a read finding the whole conversation sets one (a random token) if
there is none; anything but an append takes it out (removing an item, creating the
conversation, deleting it; losing the tree takes it along), and so does a read finding
an item missing or the list not going on from what its caller holds (a write lost in a
failover, the list lost on its own). A process trusts what it holds only under the mark
still there, and then gets what lies past it in the list (checking that the last item
it holds is still where it was); else it reads the whole conversation. Appends, from
any process, only add to the end of the list, and an id listed again takes its new item
everywhere, there as in Redis. As with chains, a single field lost behind the store's
back (Redis itself only drops a whole key) is noticed by a whole read, not by a process
holding it; once noticed, the mark goes and every process raises ``ItemsMissing``.

Retention. A conversation and its list live ``conversation_ttl`` (by default ``ttl``;
``None``: until deleted) from their last use: reading it or its items, adding or
removing items, appending a turn. Its tree, and the pointer keys of what it names, live
``kept``: ``max(ttl, conversation_ttl)`` plus ``min(ttl, conversation_ttl) / 64``, or never
expire with ``conversation_ttl=None`` (see ``_conversation_ttls``); a turn put into it is
kept (deleting the response hides it but keeps its items). Each use extends the tree (one
command); the pointer keys, one per item, are refreshed only when the last refresh is
that ``/ 64`` old, so they outlive the conversation and an append costs only what it
appends. Deleting a conversation gives a tree that never expires (and the pointer keys
into it) the plain ``ttl``; a removed item, like a deleted conversation's, is still found
by id while its tree lives.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from .._record import ConversationRecord
from .._store import ItemsMissing, NewItem
from .redis_client import milliseconds, owner_digest
from .redis_conversation_cache import ConversationCache, HeldConversation
from .redis_conversation_scripts import (
    ADD_ITEMS,
    CONVERSATION,
    CONVERSATION_ITEMS,
    DELETE_CONVERSATION,
    LOCK,
    REMOVE_ITEM,
    RETIME,
    UNLOCK,
)
from .redis_items import IN_CONVERSATION, ItemParts, Turns, pairs

__all__ = ["ConversationParts"]


class ConversationParts(ItemParts):
    """Items, conversations and conversation locks (``RedisStore`` composes this)."""

    def _load_conversation_scripts(self, client: Any, cache_bytes: int) -> None:
        # a second cache as big as the record cache: see redis_conversation_cache.py
        self._held = ConversationCache(cache_bytes)
        self._conversation = client.register_script(CONVERSATION)
        self._conversation_items = client.register_script(CONVERSATION_ITEMS)
        self._add_items = client.register_script(ADD_ITEMS)
        self._remove_item = client.register_script(REMOVE_ITEM)
        self._delete_conversation = client.register_script(DELETE_CONVERSATION)
        self._lock = client.register_script(LOCK)
        self._unlock = client.register_script(UNLOCK)

    # -- conversations ----------------------------------------------------------------
    async def create_conversation(
        self, owner: str, conversation: ConversationRecord, items: Sequence[NewItem]
    ) -> None:
        create = [conversation.created_at, conversation.metadata]
        await self._add(owner, conversation.id, create, items)

    async def get_conversation(self, owner: str, conversation_id: str) -> ConversationRecord | None:
        return await self._use_conversation(owner, conversation_id, [])

    async def update_conversation(
        self, owner: str, conversation_id: str, metadata: bytes
    ) -> ConversationRecord | None:
        return await self._use_conversation(owner, conversation_id, [metadata])

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        with self._errors():
            client = await self._ready_client()
            named: list[bytes] | None = await self._delete_conversation(
                keys=self._talk_keys(owner, conversation_id),
                args=[milliseconds(self.ttl), conversation_id],
                client=client,
            )
            self._held.forget(owner_digest(owner), conversation_id)
            if named:
                await self._retime(client, owner, conversation_id, named)
        return named is not None

    async def conversation_items(
        self, owner: str, conversation_id: str
    ) -> list[tuple[str, bytes]] | None:
        """One script. A conversation this process holds under the mark still in its
        tree costs only the items listed after the ones it holds; any other, all of
        them (see ``redis_conversation_cache.py``)."""
        digest = owner_digest(owner)
        held = self._held.get(digest, conversation_id)
        holds = ["", 0, ""] if held is None else [held.mark, len(held.items), held.last]
        with self._errors():
            client = await self._ready_client()
            found = await self._conversation_items(
                keys=self._talk_keys(owner, conversation_id),
                args=[
                    *self._conversation_ttls(),
                    conversation_id,
                    secrets.token_hex(8),  # its mark if this read makes one
                    *holds,
                ],
                client=client,
            )
            if found is None:
                self._held.forget(digest, conversation_id)
                return None
            mark, start, encoded_ids, values, records, refresh = found
            await self._after_use(client, owner, refresh)
        turns = Turns(pairs(records))
        items: list[tuple[str, bytes]] = []
        for encoded_id, value in zip(encoded_ids, values, strict=True):
            item_id = encoded_id.decode()
            item = turns.item(item_id, value)
            if item is None:
                self._held.forget(digest, conversation_id)
                raise ItemsMissing(f"item {item_id} is no longer stored")
            items.append((item_id, item))
        if start:  # the items listed after the ones it holds, under its mark
            assert held is not None  # the script goes on only from what it holds
            now = held.extended(items)
        elif mark is None:  # nothing to hold (no item)
            self._held.forget(digest, conversation_id)
            return items
        else:
            now = HeldConversation.read(mark, items)
        self._held.keep(digest, conversation_id, now)
        return list(now.items)

    async def add_items(self, owner: str, conversation_id: str, items: Sequence[NewItem]) -> bool:
        return await self._add(owner, conversation_id, ["", ""], items)

    async def remove_item(self, owner: str, conversation_id: str, item_id: str) -> bool:
        with self._errors():
            client = await self._ready_client()
            found = await self._remove_item(
                keys=self._talk_keys(owner, conversation_id),
                args=[*self._conversation_ttls(), item_id, conversation_id],
                client=client,
            )
            if found is None:
                return False
            removed, refresh = found
            await self._after_use(client, owner, refresh)
        return bool(removed)

    # -- conversation locks -----------------------------------------------------------
    async def lock_conversation(
        self, owner: str, conversation_id: str, token: str, lease: float
    ) -> bool:
        with self._errors():
            taken = await self._lock(
                keys=[self._lock_key(owner, conversation_id)],
                args=[token, milliseconds(lease)],
                client=await self._ready_client(),
            )
        return bool(taken)

    async def unlock_conversation(self, owner: str, conversation_id: str, token: str) -> None:
        with self._errors():
            await self._unlock(
                keys=[self._lock_key(owner, conversation_id)],
                args=[token],
                client=await self._ready_client(),
            )

    # -- internals --------------------------------------------------------------------
    def _conversation_ttls(self) -> tuple[int, int, int]:
        """What the conversation scripts get first (``ITEM_HELPERS``' ARGV[1..3]), in
        milliseconds: the TTL of a conversation and its list (``talk``), the TTL of what
        it names (``kept``: its tree hash and the pointer keys of its items), and how
        often a conversation in use refreshes those pointer keys (``every``). ``talk``
        and ``kept`` are 0 (never expire) with ``conversation_ttl=None``.

        ``kept`` is ``max(ttl, conversation_ttl) + every``: a pointer key refreshed (or
        written) at most ``every`` before the conversation's last use outlives it. ``PUT``
        gives a turn put into a conversation, and the pointer keys of its items, ``kept``.
        """
        if self.conversation_ttl is None:
            return 0, 0, milliseconds(self.ttl / 64)
        every = milliseconds(min(self.ttl, self.conversation_ttl) / 64)
        kept = milliseconds(max(self.ttl, self.conversation_ttl)) + every
        return milliseconds(self.conversation_ttl), kept, every

    async def _add(
        self, owner: str, conversation_id: str, create: list[Any], items: Sequence[NewItem]
    ) -> bool:
        """Create a conversation (``create``: created_at and metadata) or add to one
        (``create``: two empty strings), all items or none. An item given by id only is
        looked up first and copied in."""
        attached = [item_id for item_id, value in items if value is None]
        stored = await self.get_items(owner, attached) if attached else {}
        missing = next((item_id for item_id in attached if item_id not in stored), "")
        values = [stored.get(item_id, b"") if value is None else value for item_id, value in items]
        args = [
            *self._conversation_ttls(),
            *create,
            missing,
            conversation_id,
            *(item_id for item_id, _ in items),
            *values,
        ]
        with self._errors():
            client = await self._ready_client()
            added = await self._add_items(
                keys=self._talk_keys(owner, conversation_id), args=args, client=client
            )
            if isinstance(added, list):
                written = [item_id for item_id, _ in items]
                await self._after_use(client, owner, added, conversation_id, written)
        if isinstance(added, bytes):
            raise ItemsMissing(f"no stored item with id {added.decode()!r}")
        return added is not None

    async def _use_conversation(
        self, owner: str, conversation_id: str, metadata: list[bytes]
    ) -> ConversationRecord | None:
        with self._errors():
            client = await self._ready_client()
            found = await self._conversation(
                keys=self._talk_keys(owner, conversation_id),
                args=[*self._conversation_ttls(), *metadata],
                client=client,
            )
            if found is None:
                return None
            created_at, stored_metadata, refresh = found
            await self._after_use(client, owner, refresh)
        return ConversationRecord(conversation_id, int(created_at), stored_metadata)

    async def _after_use(
        self,
        client: Any,
        owner: str,
        refresh: Sequence[bytes],
        conversation_id: str = "",
        added: Sequence[str] = (),
    ) -> None:
        """One pipeline (none if there is nothing to do): the pointer keys of ``refresh``
        live ``kept`` more, and those of ``added`` (the items the API just put in the
        conversation) point at it from now on."""
        if not refresh and not added:
            return
        _, kept, _ = self._conversation_ttls()
        base = self._item_base(owner).encode()
        pointer = IN_CONVERSATION + conversation_id.encode()
        async with client.pipeline(transaction=False) as pipe:
            for item_id in refresh:
                pipe.pexpire(base + item_id, kept)
            for added_id in dict.fromkeys(added):
                pipe.set(base + added_id.encode(), pointer, px=kept or None)
            await pipe.execute()

    async def _retime(
        self, client: Any, owner: str, conversation_id: str, named: Sequence[bytes]
    ) -> None:
        """Pointer keys into a deleted conversation's tree that never expired get the
        plain ``ttl``, as the tree did; ``named``: item id, then ``@`` and a response id
        or ``^`` (the conversation's own), for each."""
        base = self._item_base(owner).encode()
        ttl = milliseconds(self.ttl)
        async with client.pipeline(transaction=False) as pipe:
            for item_id, kind in zip(named[::2], named[1::2], strict=True):
                held = kind + conversation_id.encode() if kind == IN_CONVERSATION else kind
                pipe.eval(RETIME, 1, base + item_id, held, ttl)
            await pipe.execute()

    # -- keys -------------------------------------------------------------------------
    def _conversation_keys(self, owner: str, conversation_id: str) -> list[str]:
        """The conversation's hash and its list of item ids (in its tree's slot)."""
        tag = self._tag(owner, conversation_id)
        return [
            f"{self.key_prefix}conversation:{tag}:{conversation_id}",
            f"{self.key_prefix}conversation_items:{tag}:{conversation_id}",
        ]

    def _talk_keys(self, owner: str, conversation_id: str) -> list[str]:
        """The KEYS of every conversation script: its tree, its hash, its list."""
        tree = self._tree_key(owner, conversation_id)
        return [tree, *self._conversation_keys(owner, conversation_id)]

    def _lock_key(self, owner: str, conversation_id: str) -> str:
        return f"{self.key_prefix}lock:{self._tag(owner, conversation_id)}:{conversation_id}"
