"""A store shared by several processes: turns kept in Redis (or Valkey).

``RedisStore.from_url("redis://127.0.0.1:6379/0")`` or ``RedisStore(client)`` with an
existing ``redis.asyncio`` (or ``valkey.asyncio``) client. Needs the ``redis`` extra:
``pip install "state-middleware[redis]"``.

``RedisStore`` keeps turns, pending marks and notes itself and composes the other
parts: the client and error mapping (``redis_client.py``, which also states the failure
policy), items and conversations (``redis_conversations.py``) and background responses
(``redis_background.py``). The Lua scripts of turns are in ``redis_turn_scripts.py``.

Keys (``{owner}`` as in ``redis_client.py``; items and conversations, and background
responses, keep theirs as their modules say):

- ``{key_prefix}turn:{owner}:{response id}``: a hash with ``record`` (the
  msgpack-encoded ``TurnRecord``), ``parent`` (the parent id, absent for a first turn),
  ``children`` (how many stored turns name this one as parent), ``deleted`` (present
  once deleted) and ``kept`` (present once a conversation names its items). Its Redis
  TTL is the sliding ``ttl``.
- ``{key_prefix}pending:{owner}:{response id}``: set while the turn is being produced,
  with a TTL of ``pending_ttl`` so a crashed process never blocks followers for longer.
- ``{key_prefix}note:{owner}:{note key}``: one note (``remember``), a plain string with a
  TTL of ``ttl``.

Round trips. A turn keeps only what it added, so a chain costs the bytes of its items,
and every item is kept once; every operation is a constant number of round trips.
``get_chain`` and ``put`` are one Lua script each (sent with ``EVALSHA``) that follows
``parent`` links inside Redis and refreshes the TTL of every turn it passes; ``put``
also points the turn's item ids at it and, with ``conversation=``, appends them to the
conversation. ``delete`` is one script, plus one to forget the item ids of the turns it
dropped. ``get_chain`` answers nil when any link is missing, so a chain is never
replayed in part; each write is one script, so nothing is read half written. The
scripts build turn and item keys themselves, which Redis Cluster does not allow: use a
single Redis (with replicas or Sentinel if you like).

Retention. Turns, their item ids and notes live ``ttl`` from their last use (a turn's
item ids from when it was stored). Loading a chain slides its turns by ``ttl`` but never
shortens a longer TTL (a turn a conversation names lives longer: see
``redis_conversations.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .. import _defaults
from .._cluster_guard import CLUSTER_UNSUPPORTED_MESSAGE, is_cluster_client, serves_cluster
from .._record import TurnRecord, decode_record, encode_record, record_item_ids
from .redis_background import BackgroundParts
from .redis_client import import_extra, milliseconds, owner_digest
from .redis_conversations import ConversationParts
from .redis_turn_scripts import DELETE, FORGET_ITEMS, GET_CHAIN, PUT

__all__ = ["RedisStore"]

_MAX_DEPTH = 100_000  # guards a corrupted parent loop inside Redis; far beyond real chains
_POLL_INTERVAL = 0.02  # seconds between checks of a pending turn


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
        if is_cluster_client(client):
            raise ValueError(CLUSTER_UNSUPPORTED_MESSAGE)
        pool = getattr(client, "connection_pool", None)
        if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self.ttl = ttl
        self.conversation_ttl = conversation_ttl
        self.pending_ttl = pending_ttl
        self.event_ttl = event_ttl
        self.key_prefix = key_prefix
        self._use_client(client)
        self._get_chain = client.register_script(GET_CHAIN)
        self._put = client.register_script(PUT)
        self._delete = client.register_script(DELETE)
        self._forget_items = client.register_script(FORGET_ITEMS)
        self._load_conversation_scripts(client)
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
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store owning its ``redis.asyncio`` clients, made with
        ``redis.asyncio.Redis.from_url(url, ...)``.

        ``socket_timeout`` bounds every command and ``socket_connect_timeout`` every
        connection attempt, so a dead Redis costs a request seconds, not a hang. A
        dropped connection is retried once at once (Redis restarted); anything else
        fails straight away. Other keywords go to ``Redis.from_url`` and win. A server in
        cluster mode is refused with ``ValueError`` (asked once, here; not when it is down).
        """
        redis_asyncio = import_extra("redis.asyncio")
        retry = import_extra("redis.asyncio.retry")
        backoff = import_extra("redis.backoff")
        exceptions = import_extra("redis.exceptions")
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "retry": retry.Retry(backoff.NoBackoff(), 1),
            "retry_on_error": [exceptions.ConnectionError],
            **client_kwargs,
        }

        def new_client() -> Any:
            return redis_asyncio.Redis.from_url(url, **options)

        if serves_cluster(new_client, (exceptions.RedisError, OSError)):
            raise ValueError(CLUSTER_UNSUPPORTED_MESSAGE)
        store = cls(
            new_client(),
            ttl=ttl,
            conversation_ttl=conversation_ttl,
            key_prefix=key_prefix,
            pending_ttl=pending_ttl,
            event_ttl=event_ttl,
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
        keys = [self._turn_base(owner) + record.id]
        if conversation is not None:
            keys += self._conversation_keys(owner, conversation)
        args = [
            *self._context(owner),
            milliseconds(self.ttl),
            encode_record(record),
            record.parent_id or "",
            _MAX_DEPTH,
            *(item_ids if item_ids is not None else record_item_ids(record)),
        ]
        with self._errors():
            await self._put(keys=keys, args=args, client=self._current_client())

    async def get(self, owner: str, response_id: str) -> TurnRecord | None:
        with self._errors():
            data, deleted = await self._current_client().hmget(
                self._turn_base(owner) + response_id, "record", "deleted"
            )
        if data is None or deleted is not None:
            return None
        return decode_record(data)

    async def get_chain(self, owner: str, response_id: str) -> list[TurnRecord] | None:
        base = self._turn_base(owner)
        with self._errors():
            found: list[bytes] | None = await self._get_chain(
                keys=[base + response_id],
                args=[base, milliseconds(self.ttl), _MAX_DEPTH],
                client=self._current_client(),
            )
        if found is None:
            return None
        return [decode_record(data) for data in reversed(found)]

    async def delete(self, owner: str, response_id: str) -> bool:
        base = self._turn_base(owner)
        with self._errors():
            client = self._current_client()
            dropped: list[bytes] | None = await self._delete(
                keys=[base + response_id], args=[base, _MAX_DEPTH], client=client
            )
            if dropped:  # turns nothing needs any more: their item ids go too
                forget: list[str | int] = [self._item_base(owner)]
                for data in dropped:
                    gone = decode_record(data)
                    item_ids = record_item_ids(gone)
                    forget += [gone.id, len(item_ids), *item_ids]
                await self._forget_items(keys=[], args=forget, client=client)
        return dropped is not None

    # -- pending marks ----------------------------------------------------------------
    async def begin(self, owner: str, response_id: str) -> None:
        with self._errors():
            await self._current_client().set(
                self._pending_key(owner, response_id), b"1", px=milliseconds(self.pending_ttl)
            )

    async def end(self, owner: str, response_id: str) -> None:
        with self._errors():
            await self._current_client().delete(self._pending_key(owner, response_id))

    async def wait(self, owner: str, response_id: str, timeout: float) -> bool:
        key = self._pending_key(owner, response_id)
        with self._errors():
            client = self._current_client()
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
            async with self._current_client().pipeline(transaction=True) as pipe:
                for key, value in notes.items():
                    pipe.set(base + key, value, px=ttl)
                await pipe.execute()

    async def recall(self, owner: str, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        base = self._note_base(owner)
        with self._errors():
            values = await self._current_client().mget([base + key for key in keys])
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    # -- keys -------------------------------------------------------------------------
    def _note_base(self, owner: str) -> str:
        return f"{self.key_prefix}note:{owner_digest(owner)}:"

    def _pending_key(self, owner: str, response_id: str) -> str:
        return f"{self.key_prefix}pending:{owner_digest(owner)}:{response_id}"
