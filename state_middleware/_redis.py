"""A store shared by several processes: turns kept in Redis (or Valkey).

``RedisStore.from_url("redis://127.0.0.1:6379/0")`` or ``RedisStore(client)`` with an
existing ``redis.asyncio`` (or ``valkey.asyncio``) client. Needs the ``redis`` extra:
``pip install "state-middleware[redis]"``.

Key layout (``{owner}`` is the 32-hex blake2b digest of the owner, so any owner string
gives a fixed-size, unambiguous key):

- ``{key_prefix}turn:{owner}:{response id}``: a hash with ``record`` (the
  msgpack-encoded ``TurnRecord``), ``parent`` (the parent id, absent for a first turn),
  ``children`` (how many stored turns name this one as parent), ``deleted`` (present
  once deleted) and ``kept`` (present once a conversation names its items). Its Redis
  TTL is the sliding ``ttl``.
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
- ``{key_prefix}pending:{owner}:{response id}``: set while the turn is being produced,
  with a TTL of ``pending_ttl`` so a crashed process never blocks followers for longer.
- ``{key_prefix}note:{owner}:{note key}``: one note (``remember``), a plain string with a
  TTL of ``ttl``.
- ``{key_prefix}background:{owner}:{response id}``: a background response's state, a hash
  with ``status``, ``response`` (the response object as last set), ``stream`` and
  ``cancel`` (``1`` or ``0``) and ``events`` (how many were recorded).
- ``{key_prefix}background_events:{owner}:{response id}``: its events, a stream in which
  event number n has the id ``0-<n+1>`` (so a reader resumes after event n from that id)
  and ``1-0`` marks the end (so no event can follow it, and a reader blocked on the
  stream wakes when the response finishes). Absent until the first event.
- ``{key_prefix}background_lease:{owner}:{response id}``: set while a worker runs the
  response, with a TTL of the lease it asked for; renewed by ``record_events``.

The three keys of one background response differ only in their kind, and every script
gets all three in ``KEYS``.

A turn keeps only what it added, so a chain costs the bytes of its items, and every
item is kept once; every operation is a constant number of round trips. ``get_chain``
and ``put`` are one Lua script each (sent with ``EVALSHA``) that follows ``parent``
links inside Redis and refreshes the TTL of every turn it passes; ``put`` also points
the turn's item ids at it and, with ``conversation=``, appends them to the
conversation. ``conversation_items`` is one script that reads the id list, the item
keys and the turns they point into (the items are cut out of the turns here);
``get_items`` is the same without the list, and ``delete`` is one script, plus one to
forget the item ids of the turns it dropped. ``get_chain`` answers nil when any link is
missing and ``conversation_items`` raises ``ItemsMissing`` when any item is, so neither
is ever replayed in part; each write is one script, so nothing is read half written.
The scripts build turn and item keys themselves, which Redis Cluster does not allow:
use a single Redis (with replicas or Sentinel if you like).

Background responses. Each call is one script, so one round trip, except when it
finds that the worker's lease ended before the response finished: the response object
is then marked ``failed`` here in Python, and a second script writes it only if the
response is still unfinished, without a lease and holding the object that was read (a
compare-and-set), so of several replicas that find the worker lost at once exactly one
writes the failure and all return it. ``read_events`` looks in one script and returns
at once when there are events after ``after`` or the response finished; otherwise it
waits for them in Redis (``XREAD BLOCK`` on the stream, from the id of event
``after``, so nothing recorded in between is missed), a second round trip. A blocking
read holds a connection of the client's pool, so it blocks for at most one second (and
at most half of ``socket_timeout``, which would end it as a failure) and returns nothing
new when that passes: the caller reads again. At most half the pool's connections
(``max_connections``) block at once; further readers wait in this process for their
turn, so the worker that records the events, and everyone else, always gets a
connection.

Retention. Turns, their item ids and notes live ``ttl`` from their last use (a turn's
item ids from when it was stored). A conversation and its list live
``conversation_ttl`` (by default ``ttl``; ``None``: until deleted) from their last use:
reading it or its items, adding or removing items, appending a turn. Whatever a
conversation names (item keys, and the turns they point into, which are then ``kept``:
deleting the response hides it but keeps its items) lives at least
``max(ttl, conversation_ttl)`` plus ``min(ttl, conversation_ttl) / 64`` from the last
refresh, or never expires with ``conversation_ttl=None``; a conversation in use
refreshes all of it when it was last refreshed longer ago than that ``/ 64`` (listing
its items always does), so an append otherwise costs only what it appends. Loading a
chain slides its turns by ``ttl`` but never shortens a longer TTL. A background
response's state and events live ``ttl`` from the last change while it runs; once it
finished, its events live ``event_ttl`` (default 10 minutes) and its state ``ttl``.

Failure policy. Every method raises ``StoreUnavailable`` (code ``store_unavailable``)
when Redis refuses the connection, drops it or does not answer within
``socket_timeout``, and ``StoreError`` (code ``store_error``) for any other Redis error
(for instance ``OOM`` under ``maxmemory``). A client made by ``from_url`` retries
nothing but one immediate reconnect after a dropped connection, so a call fails within
about ``socket_timeout`` (``socket_connect_timeout`` when connecting). The middleware
turns that into:

- a follow-up naming ``previous_response_id``, when the chain cannot be loaded: 503,
  ``type`` ``server_error``, ``code`` ``store_unavailable``; the app is not called;
- ``GET``/``DELETE`` of a stored response and its ``input_items``: the same 503;
- a JSON turn whose result cannot be stored: the same 503 instead of the result;
- a streamed turn whose result cannot be stored after it ran: the failure is logged
  with the response id (logger ``state_middleware``) and the client receives ``error``
  and ``response.failed`` in place of ``response.completed``, so it never holds an id
  that cannot be continued;
- a new turn whose pending mark (``begin``) or conversation lock cannot be set: the same
  503, before the app is called.

The background methods fail the same way (a blocking ``read_events`` included: it never
blocks as long as ``socket_timeout``).

The client reconnects on next use, so the store works again as soon as Redis is back.

A store made by ``from_url`` owns its clients: it keeps one per event loop (a client's
connections belong to the loop that opened them), closes it when that loop shuts down,
and ``aclose()`` closes the current loop's one. A client you pass in stays yours: it is
used from one loop and never closed by the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import msgspec

from . import _defaults
from ._cluster_guard import CLUSTER_UNSUPPORTED_MESSAGE, is_cluster_client, serves_cluster
from ._errors import WORKER_LOST_MESSAGE
from ._record import (
    BackgroundState,
    ConversationRecord,
    TurnRecord,
    decode_record,
    encode_record,
    record_item_ids,
    record_items,
    with_status,
)
from ._redis_scripts import (
    ADD_ITEMS,
    BACKGROUND,
    CANCEL_BACKGROUND,
    CONVERSATION,
    CONVERSATION_ITEMS,
    DELETE,
    FAIL_LOST,
    FINISH_BACKGROUND,
    FORGET_ITEMS,
    GET_CHAIN,
    GET_ITEMS,
    LOCK,
    PUT,
    READ_EVENTS,
    RECORD_EVENTS,
    REMOVE_ITEM,
    START_BACKGROUND,
    UNLOCK,
)
from ._store import ItemsMissing, NewItem, StoreError, StoreUnavailable

__all__ = ["MISSING_EXTRA_MESSAGE", "RedisStore"]

MISSING_EXTRA_MESSAGE = 'RedisStore needs the redis client: pip install "state-middleware[redis]"'

_MAX_DEPTH = 100_000  # guards a corrupted parent loop inside Redis; far beyond real chains
_POLL_INTERVAL = 0.02  # seconds between checks of a pending turn
_REFERENCE = b"@"  # an item key holding this and a response id points into that turn
_MAX_BLOCK = 1.0  # seconds one blocking read of events may hold its connection
_LOST_ERROR = {"code": "server_error", "message": WORKER_LOST_MESSAGE}
_LOST_MESSAGE_JSON = msgspec.json.encode(WORKER_LOST_MESSAGE)


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(MISSING_EXTRA_MESSAGE) from exc


def _client_library(client: Any) -> str:
    """``"redis"`` or ``"valkey"``: whose exceptions the client raises."""
    for cls in type(client).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in ("redis", "valkey"):
            return root
    return "redis"


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore:
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
        self.conversation_ttl: float | None = conversation_ttl
        self.pending_ttl = pending_ttl
        self.event_ttl = event_ttl
        self.key_prefix = key_prefix
        self._client = client
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
        self._new_client: Callable[[], Any] | None = None  # set when the store owns clients
        self._loop_clients: dict[asyncio.AbstractEventLoop, tuple[Any, asyncio.Task[None]]] = {}
        exceptions = _import(f"{_client_library(client)}.exceptions")
        self._unavailable: tuple[type[BaseException], ...] = (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            OSError,
            TimeoutError,
        )
        self._failed: type[BaseException] = (
            exceptions.ValkeyError if hasattr(exceptions, "ValkeyError") else exceptions.RedisError
        )
        self._get_chain = client.register_script(GET_CHAIN)
        self._put = client.register_script(PUT)
        self._delete = client.register_script(DELETE)
        self._forget_items = client.register_script(FORGET_ITEMS)
        self._get_items = client.register_script(GET_ITEMS)
        self._conversation = client.register_script(CONVERSATION)
        self._conversation_items = client.register_script(CONVERSATION_ITEMS)
        self._add_items = client.register_script(ADD_ITEMS)
        self._remove_item = client.register_script(REMOVE_ITEM)
        self._lock = client.register_script(LOCK)
        self._unlock = client.register_script(UNLOCK)
        self._start_background = client.register_script(START_BACKGROUND)
        self._record_events = client.register_script(RECORD_EVENTS)
        self._finish_background = client.register_script(FINISH_BACKGROUND)
        self._fail_lost = client.register_script(FAIL_LOST)
        self._background = client.register_script(BACKGROUND)
        self._cancel_background = client.register_script(CANCEL_BACKGROUND)
        self._read_events = client.register_script(READ_EVENTS)

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
        redis_asyncio = _import("redis.asyncio")
        retry = _import("redis.asyncio.retry")
        backoff = _import("redis.backoff")
        exceptions = _import("redis.exceptions")
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

    # -- the Store protocol -----------------------------------------------------------
    async def put(self, owner: str, record: TurnRecord, *, conversation: str | None = None) -> None:
        keys = [self._turn_base(owner) + record.id]
        if conversation is not None:
            keys += self._conversation_keys(owner, conversation)
        args = [
            *self._context(owner),
            _milliseconds(self.ttl),
            encode_record(record),
            record.parent_id or "",
            _MAX_DEPTH,
            *record_item_ids(record),
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
                args=[base, _milliseconds(self.ttl), _MAX_DEPTH],
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

    async def begin(self, owner: str, response_id: str) -> None:
        with self._errors():
            await self._current_client().set(
                self._pending_key(owner, response_id), b"1", px=_milliseconds(self.pending_ttl)
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

    async def remember(self, owner: str, notes: Mapping[str, bytes]) -> None:
        if not notes:
            return
        base = self._note_base(owner)
        ttl = _milliseconds(self.ttl)
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

    # -- items and conversations ------------------------------------------------------
    async def get_items(self, owner: str, ids: Sequence[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        with self._errors():
            values, records = await self._get_items(
                keys=[], args=[*self._context(owner), *wanted], client=self._current_client()
            )
        return _resolve(wanted, values, records)

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

    async def lock_conversation(
        self, owner: str, conversation_id: str, token: str, lease: float
    ) -> bool:
        with self._errors():
            taken = await self._lock(
                keys=[self._lock_key(owner, conversation_id)],
                args=[token, _milliseconds(lease)],
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

    # -- background responses ---------------------------------------------------------
    async def start_background(
        self, owner: str, response_id: str, response: bytes, *, stream: bool, lease: float
    ) -> None:
        args = [response, int(stream), _milliseconds(lease), _milliseconds(self.ttl)]
        with self._errors():
            await self._start_background(
                keys=self._background_keys(owner, response_id),
                args=args,
                client=self._current_client(),
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
        args = [status, _milliseconds(lease), _milliseconds(self.ttl), *events]
        with self._errors():
            stop = await self._record_events(keys=keys, args=args, client=self._current_client())
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
        args = [status, response, _milliseconds(self.event_ttl), _milliseconds(self.ttl)]
        with self._errors():
            ended = await self._finish_background(
                keys=keys, args=[*args, *events], client=self._current_client()
            )
        if isinstance(ended, bytes):
            await self._fail(keys, ended)

    async def get_background(self, owner: str, response_id: str) -> BackgroundState | None:
        keys = self._background_keys(owner, response_id)
        with self._errors():
            found = await self._background(keys=keys, client=self._current_client())
        return await self._settle(keys, found)

    async def cancel_background(self, owner: str, response_id: str) -> BackgroundState | None:
        keys = self._background_keys(owner, response_id)
        with self._errors():
            found = await self._cancel_background(keys=keys, client=self._current_client())
        return await self._settle(keys, found)

    async def read_events(
        self, owner: str, response_id: str, after: int, timeout: float
    ) -> tuple[list[bytes], bool] | None:
        keys = self._background_keys(owner, response_id)
        cursor = f"0-{max(after, -1) + 1}"  # the stream id of event number `after`
        with self._errors():
            found = await self._read_events(keys=keys, args=[cursor], client=self._current_client())
        if found is None:
            return None
        state, entries = found
        events, finished = _events(entries)
        if not finished and state[5] == 0 and not _finished(state[0]):
            await self._settle(keys, state)  # its worker was lost: failed now, and the
            # events that say so were appended: read them too
            with self._errors():
                found = await self._read_events(
                    keys=keys, args=[cursor], client=self._current_client()
                )
            if found is None:
                return None
            events, finished = _events(found[1])
        if events or finished:
            return events, finished
        return _events(await self._wait_for_entries(keys[1], cursor, timeout))

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
            _milliseconds(self.event_ttl),
            _milliseconds(self.ttl),
            _LOST_MESSAGE_JSON,
        ]
        with self._errors():
            found: list[Any] | None = await self._fail_lost(
                keys=keys, args=args, client=self._current_client()
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
                reply = await self._current_client().xread(
                    {key: cursor}, block=_milliseconds(block)
                )
        finally:
            slots.release()
        return _read_entries(reply)

    # -- lifecycle --------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the client this store made for the running loop (clients made for
        other loops close when their loop shuts down). A client passed to the
        constructor is left open: it belongs to the caller."""
        if self._new_client is None:
            return
        entry = self._loop_clients.get(asyncio.get_running_loop())
        if entry is not None:
            closer = entry[1]
            closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closer

    # -- internals --------------------------------------------------------------------
    def _turn_base(self, owner: str) -> str:
        return f"{self.key_prefix}turn:{_owner_digest(owner)}:"

    def _note_base(self, owner: str) -> str:
        return f"{self.key_prefix}note:{_owner_digest(owner)}:"

    def _pending_key(self, owner: str, response_id: str) -> str:
        return f"{self.key_prefix}pending:{_owner_digest(owner)}:{response_id}"

    def _item_base(self, owner: str) -> str:
        return f"{self.key_prefix}item:{_owner_digest(owner)}:"

    def _conversation_keys(self, owner: str, conversation_id: str) -> list[str]:
        """The conversation's key and the key of its list of item ids."""
        digest = _owner_digest(owner)
        return [
            f"{self.key_prefix}conversation:{digest}:{conversation_id}",
            f"{self.key_prefix}conversation_items:{digest}:{conversation_id}",
        ]

    def _lock_key(self, owner: str, conversation_id: str) -> str:
        return f"{self.key_prefix}lock:{_owner_digest(owner)}:{conversation_id}"

    def _background_keys(self, owner: str, response_id: str) -> list[str]:
        """A background response's state, its events and its worker's lease."""
        tail = f"{_owner_digest(owner)}:{response_id}"
        return [
            f"{self.key_prefix}background:{tail}",
            f"{self.key_prefix}background_events:{tail}",
            f"{self.key_prefix}background_lease:{tail}",
        ]

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
            every = _milliseconds(self.ttl / 64)
        else:
            talk = _milliseconds(self.conversation_ttl)
            every = _milliseconds(min(self.ttl, self.conversation_ttl) / 64)
            kept = _milliseconds(max(self.ttl, self.conversation_ttl)) + every
        return [self._item_base(owner), self._turn_base(owner), talk, kept, every]

    def _current_client(self) -> Any:
        """The client to use from the running event loop."""
        if self._new_client is None:
            return self._client
        loop = asyncio.get_running_loop()
        entry = self._loop_clients.get(loop)
        if entry is None:
            client = self._new_client()
            closer = loop.create_task(self._close_with_loop(loop, client))
            entry = self._loop_clients[loop] = (client, closer)
        return entry[0]

    async def _close_with_loop(self, loop: asyncio.AbstractEventLoop, client: Any) -> None:
        """Wait until cancelled (``aclose``, or the loop shutting down), then close."""
        try:
            await loop.create_future()
        finally:
            self._loop_clients.pop(loop, None)
            with contextlib.suppress(*self._unavailable, self._failed):
                await client.aclose()  # a dead connection needs no goodbye

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._unavailable as exc:
            raise StoreUnavailable(f"Redis did not answer: {exc}") from exc
        except self._failed as exc:
            raise StoreError(f"Redis refused the operation: {exc}") from exc


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


def _owner_digest(owner: str) -> str:
    return hashlib.blake2b(owner.encode(), digest_size=16, person=b"state-mw-key").hexdigest()
