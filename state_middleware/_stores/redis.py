"""A store shared by several processes: turns kept in Redis (or Valkey).

``RedisStore.from_url("redis://127.0.0.1:6379/0")`` or ``RedisStore(client)`` with an
existing ``redis.asyncio`` (or ``valkey.asyncio``) client. Needs the ``redis`` extra:
``pip install "state-middleware[redis]"``.

``RedisStore`` keeps turns, pending marks and notes itself and composes the other
parts: the client and error mapping (``redis_client.py``, which also states the failure
policy), items and conversations (``redis_conversations.py``) and background responses
(``redis_background.py``). The Lua scripts of turns are in ``redis_turn_scripts.py``.

Layout (issue 14: the same scripts on one server and on Redis Cluster). A response id
names its tree (``_ids.tree_of``): a first turn starts a tree, a follow-up joins its
parent's, a conversation's turns join the conversation's. Every key of one tree carries
the hash tag ``{O.T}`` (owner digest and tree, see ``redis_client.py``), so a tree is in
one cluster slot while trees spread over all of them, and each script touches one slot.

- ``{key_prefix}tree:{O.T}``: a hash holding the whole tree, with ONE TTL. Per turn:
  ``r:{id}`` the msgpack-encoded ``TurnRecord`` (its own items only), ``p:{id}`` its
  parent, ``c:{id}`` how many stored turns continue it (present for every stored turn),
  ``d:{id}`` once deleted, ``k:{id}`` once a conversation names its items, ``o:{id}`` if
  it was stored after its parent was gone (it is never continued). A conversation's
  ``i:`` fields are described in ``redis_conversations.py``.
- ``{key_prefix}item:{O}:{item id}``: where ``get_items`` finds an item by id (spread
  over the slots; see ``redis_items.py``). ``put`` writes one per item id that
  does not say where it is, after the turn, in one pipeline.
- ``{key_prefix}pending:{O.T}:{response id}``: set while the turn is being produced,
  with a TTL of ``pending_ttl`` so a crashed process never blocks followers for longer.
- ``{key_prefix}note:{O}:{note key}`` (tag ``{O}``: an owner's notes share a slot): one
  note (``remember``), a plain string with a TTL of ``ttl``.

Work per turn. Records never change, so each process keeps those it has stored or
loaded (``redis_cache.py``, ``cache_bytes``). ``get_chain`` is one script that checks the
head is there (stored, not deleted, not an orphan), slides the tree's TTL, and returns
only the records the process does not hold, walking up from the first one it lacks to
one it holds (it names the newest it holds of that tree) or the root. A second script,
walking to the root, runs only if the cache lost a record on the way. ``put`` is one
script (store the record, count it as its parent's child, slide the tree) and one
pipeline for its item ids. Neither grows with the chain: a process that has seen a
chain gets nothing back for it but the turns added elsewhere since. A process that
never saw a chain loads it whole once (one script, its length in records).
``delete`` is one script, plus one pipeline forgetting the item ids of the turns it
dropped (tombstones nothing depends on any more).

Whole or nothing. A record on a walk that is missing makes ``get_chain`` answer nil. A
turn's ancestors are only ever removed with their whole tree (expiry, eviction of the
key) or as tombstones without children, so a head that is there has its chain there;
records held by the process are the same bytes Redis holds.

Retention. A tree lives ``ttl`` from its last use (storing a turn in it or loading a
chain of it; extending never shortens a longer TTL); a conversation's tree lives as
long as what the conversation names (``redis_conversations.py``). Item ids of a turn
and notes live ``ttl`` from when they were written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .. import _defaults
from .._ids import derived_from, tree_of
from .._record import TurnRecord, decode_record, encode_record, record_item_ids
from .._store import StoreError
from .redis_background import BackgroundParts
from .redis_cache import RecordCache
from .redis_client import import_extra, milliseconds, owner_digest
from .redis_conversations import ConversationParts
from .redis_mode import serves_cluster
from .redis_turn_scripts import DELETE, FORGET_ITEM, GET_CHAIN, PUT

__all__ = ["RedisStore"]

_MAX_DEPTH = 100_000  # guards a corrupted parent loop inside Redis; far beyond real chains
_POLL_INTERVAL = 0.02  # seconds between checks of a pending turn
#: the client classes ``from_url`` makes, by library: for one server, for a cluster
_CLIENT_CLASSES = {"redis": ("Redis", "RedisCluster"), "valkey": ("Valkey", "ValkeyCluster")}


class RedisStore(ConversationParts, BackgroundParts):
    """Turns kept in Redis, shared by every process that uses the same server and
    ``key_prefix``.

    ``ttl`` (seconds) is sliding: storing a turn or loading its chain refreshes every
    turn of the chain. ``conversation_ttl`` is the sliding TTL of conversations (by
    default ``ttl``; ``None``: they never expire), and what a conversation names lives
    at least as long as it does. ``pending_ttl`` bounds how long a turn in progress
    (``begin`` without ``end``, say after a crash) makes followers wait. ``event_ttl`` is
    how long a finished background response's events can still be read. The client must
    return bytes (``decode_responses=False``, the default).
    """

    def __init__(
        self,
        client: Any,
        *,
        ttl: float = _defaults.REDIS_TTL,
        conversation_ttl: float | Literal["ttl"] | None = _defaults.REDIS_CONVERSATION_TTL,
        key_prefix: str = _defaults.REDIS_KEY_PREFIX,
        pending_ttl: float = _defaults.REDIS_PENDING_TTL,
        event_ttl: float = _defaults.EVENT_TTL,
        cache_bytes: int = _defaults.REDIS_CACHE_BYTES,
    ) -> None:
        if conversation_ttl == "ttl":
            conversation_ttl = ttl
        if (
            ttl <= 0
            or pending_ttl <= 0
            or event_ttl <= 0
            or (conversation_ttl is not None and conversation_ttl <= 0)
        ):
            raise ValueError("ttl, conversation_ttl, pending_ttl and event_ttl must be positive")
        pool = getattr(client, "connection_pool", client)  # a cluster client has none
        if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self.ttl = ttl
        self.conversation_ttl = conversation_ttl
        self.pending_ttl = pending_ttl
        self.event_ttl = event_ttl
        self.key_prefix = key_prefix
        self._cache = RecordCache(cache_bytes)
        self._use_client(client)
        self._get_chain = client.register_script(GET_CHAIN)
        self._put = client.register_script(PUT)
        self._delete = client.register_script(DELETE)
        self._load_conversation_scripts(client, cache_bytes)
        self._load_background_scripts(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl: float = _defaults.REDIS_TTL,
        conversation_ttl: float | Literal["ttl"] | None = _defaults.REDIS_CONVERSATION_TTL,
        key_prefix: str = _defaults.REDIS_KEY_PREFIX,
        pending_ttl: float = _defaults.REDIS_PENDING_TTL,
        event_ttl: float = _defaults.EVENT_TTL,
        socket_timeout: float = _defaults.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout: float = _defaults.REDIS_SOCKET_CONNECT_TIMEOUT,
        cache_bytes: int = _defaults.REDIS_CACHE_BYTES,
        library: Literal["redis", "valkey"] = "redis",
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store owning its ``redis.asyncio`` clients, made with
        ``redis.asyncio.Redis.from_url(url, ...)``, or with
        ``redis.asyncio.cluster.RedisCluster.from_url(url, ...)`` when the server at
        ``url`` runs in cluster mode (asked once, here; a server that is down counts as
        a single one). Any node of a cluster will do: the client finds the others.
        ``library="valkey"`` makes valkey-py clients (``Valkey``, ``ValkeyCluster``)
        instead.

        ``socket_timeout`` bounds every command and ``socket_connect_timeout`` every
        connection attempt, so a dead Redis costs a request seconds, not a hang. A
        dropped connection is retried once at once (Redis restarted); anything else
        fails straight away (a cluster client also follows the cluster's redirections
        and re-reads its layout, a few times, as redis-py does). Other keywords go to
        ``from_url`` and win.
        """
        client_module = import_extra(f"{library}.asyncio")
        retry = import_extra(f"{library}.asyncio.retry")
        backoff = import_extra(f"{library}.backoff")
        exceptions = import_extra(f"{library}.exceptions")
        single, cluster = _CLIENT_CLASSES[library]
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "retry": retry.Retry(backoff.NoBackoff(), 1),
            "retry_on_error": [exceptions.ConnectionError],
            **client_kwargs,
        }

        def new_client() -> Any:
            return getattr(client_module, single).from_url(url, **options)

        if serves_cluster(
            new_client, (exceptions.ConnectionError, exceptions.ResponseError, OSError)
        ):
            cluster_module = import_extra(f"{library}.asyncio.cluster")

            def new_client() -> Any:
                return getattr(cluster_module, cluster).from_url(url, **options)

        store = cls(
            new_client(),
            ttl=ttl,
            conversation_ttl=conversation_ttl,
            key_prefix=key_prefix,
            pending_ttl=pending_ttl,
            event_ttl=event_ttl,
            cache_bytes=cache_bytes,
        )
        store._new_client = new_client
        return store

    # -- turns ------------------------------------------------------------------------
    async def put(
        self,
        owner: str,
        record: TurnRecord,
        *,
        conversation: str | None = None,
        item_ids: Sequence[str] | None = None,
    ) -> None:
        tree = self._tree_key(owner, record.id)
        keys = [tree]
        if conversation is not None:
            if tree_of(conversation) != tree_of(record.id):
                # its id says where it lives: in another tree, the conversation would
                # never find it (and a cluster would refuse the script)
                raise StoreError(f"{record.id} is not an id of conversation {conversation}")
            keys += self._conversation_keys(owner, conversation)
        ids = list(item_ids) if item_ids is not None else record_item_ids(record)
        named = [item_id for item_id in ids if derived_from(item_id) != record.id]
        talk, kept, _ = self._conversation_ttls()
        encoded = encode_record(record)
        args = [
            milliseconds(self.ttl),
            talk,
            kept,
            record.id,
            encoded,
            record.parent_id or "",
            len(ids),
            *ids,
            *named,
        ]
        with self._errors():
            client = await self._ready_client()
            joined = await self._put(keys=keys, args=args, client=client)
            if named:  # found by id from now on: written after what they point at
                life = kept if joined else milliseconds(self.ttl)
                base, reference = self._item_base(owner), b"@" + record.id.encode()
                async with client.pipeline(transaction=False) as pipe:
                    for item_id in named:
                        pipe.set(base + item_id, reference, px=life or None)
                    await pipe.execute()
        self._cache.add(owner_digest(owner), tree, record, len(encoded))

    async def get(self, owner: str, response_id: str) -> TurnRecord | None:
        digest, tree = owner_digest(owner), self._tree_key(owner, response_id)
        held = self._cache.get(digest, response_id)
        first = ("c:" if held is not None else "r:") + response_id
        with self._errors():
            found, deleted = await (await self._ready_client()).hmget(
                tree, first, "d:" + response_id
            )
        if found is None or deleted is not None:
            return None
        if held is None:
            held = decode_record(found)
            self._cache.add(digest, tree, held, len(found))
        return held

    async def get_chain(self, owner: str, response_id: str) -> list[TurnRecord] | None:
        digest, tree = owner_digest(owner), self._tree_key(owner, response_id)
        chain = list(self._cache.walk(digest, response_id))  # newest first
        known = self._cache.known(digest, tree)
        # Redis is always asked whether the chain is still there. A second time only if
        # the cache lost a record on the way, then for everything up to the root.
        for _ in range(2):
            start = chain[-1].parent_id if chain else response_id
            found = await self._load(tree, response_id, start or "", known)
            if found is None:
                return None
            for data in found:
                record = decode_record(data)
                self._cache.add(digest, tree, record, len(data))
                chain.append(record)
            if found:
                chain += self._cache.walk(digest, chain[-1].parent_id)
            if chain and chain[-1].parent_id is None:
                return chain[::-1]
            known = []
        return None

    async def delete(self, owner: str, response_id: str) -> bool:
        with self._errors():
            client = await self._ready_client()
            dropped: list[bytes] | None = await self._delete(
                keys=[self._tree_key(owner, response_id)],
                args=[response_id, _MAX_DEPTH],
                client=client,
            )
            if dropped:  # turns nothing needs any more: their item ids go too
                base = self._item_base(owner)
                async with client.pipeline(transaction=False) as pipe:
                    for data in dropped:
                        gone = decode_record(data)
                        reference = b"@" + gone.id.encode()
                        for item_id in record_item_ids(gone):
                            if derived_from(item_id) != gone.id:
                                pipe.eval(FORGET_ITEM, 1, base + item_id, reference)
                    await pipe.execute()
        return dropped is not None

    async def _load(self, tree: str, head: str, start: str, known: list[str]) -> list[bytes] | None:
        """The records from ``start`` up to one of ``known`` or the root, newest first,
        if the chain of ``head`` is there; one script."""
        with self._errors():
            found: list[bytes] | None = await self._get_chain(
                keys=[tree],
                args=[head, milliseconds(self.ttl), start, _MAX_DEPTH, *known],
                client=await self._ready_client(),
            )
        return found

    # -- pending marks ----------------------------------------------------------------
    async def begin(self, owner: str, response_id: str) -> None:
        with self._errors():
            await (await self._ready_client()).set(
                self._pending_key(owner, response_id), b"1", px=milliseconds(self.pending_ttl)
            )

    async def end(self, owner: str, response_id: str) -> None:
        with self._errors():
            await (await self._ready_client()).delete(self._pending_key(owner, response_id))

    async def wait(self, owner: str, response_id: str, timeout: float) -> bool:
        key = self._pending_key(owner, response_id)
        with self._errors():
            client = await self._ready_client()
            if not await client.exists(key):
                return False
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(_POLL_INTERVAL, remaining))
                if not await client.exists(key):
                    break
        return True

    # -- notes ------------------------------------------------------------------------
    async def remember(self, owner: str, notes: Mapping[str, bytes]) -> None:
        if not notes:
            return
        base = self._note_base(owner)
        ttl = milliseconds(self.ttl)
        with self._errors():
            async with (await self._ready_client()).pipeline(transaction=False) as pipe:
                for key, value in notes.items():
                    pipe.set(base + key, value, px=ttl)
                await pipe.execute()

    async def recall(self, owner: str, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        base = self._note_base(owner)
        with self._errors():
            values = await (await self._ready_client()).mget([base + key for key in keys])
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    # -- keys -------------------------------------------------------------------------
    def _note_base(self, owner: str) -> str:
        return f"{self.key_prefix}note:{{{owner_digest(owner)}}}:"  # one slot per owner

    def _pending_key(self, owner: str, response_id: str) -> str:
        return f"{self.key_prefix}pending:{self._tag(owner, response_id)}:{response_id}"
