"""A store shared by several processes: turns kept in Redis (or Valkey).

``RedisStore.from_url("redis://127.0.0.1:6379/0")`` or ``RedisStore(client)`` with an
existing ``redis.asyncio`` (or ``valkey.asyncio``) client. Needs the ``redis`` extra:
``pip install "state-middleware[redis]"``.

Key layout (``{owner}`` is the 32-hex blake2b digest of the owner, so any owner string
gives a fixed-size, unambiguous key):

- ``{key_prefix}turn:{owner}:{response id}``: a hash with ``record`` (the
  msgpack-encoded ``TurnRecord``), ``parent`` (the parent id, absent for a first turn),
  ``children`` (how many stored turns name this one as parent) and ``deleted`` (present
  once deleted). Its Redis TTL is the sliding ``ttl``.
- ``{key_prefix}pending:{owner}:{response id}``: set while the turn is being produced,
  with a TTL of ``pending_ttl`` so a crashed process never blocks followers for longer.
- ``{key_prefix}note:{owner}:{note key}``: one note (``remember``), a plain string with a
  TTL of ``ttl``.

A turn keeps only what it added, so a chain costs the bytes of its items, and every
operation is a constant number of round trips: ``get_chain`` and ``put`` are one Lua
script each (sent with ``EVALSHA``) that follows ``parent`` links inside Redis and
refreshes the TTL of every turn it passes. ``get_chain`` answers nil when any link is
missing, so a chain is never replayed half expired; a ``put`` is one script, so nothing
is read half written. The scripts build ancestor keys themselves, which Redis Cluster
does not allow: use a single Redis (with replicas or Sentinel if you like).

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
- a new turn whose pending mark (``begin``) cannot be set: the middleware does not catch
  that yet, so the server answers its own plain 500 (see ``docs/redis.md``).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from . import _defaults
from ._record import TurnRecord, decode_record, encode_record
from ._redis_scripts import DELETE, GET_CHAIN, PUT
from ._store import StoreError, StoreUnavailable

__all__ = ["MISSING_EXTRA_MESSAGE", "RedisStore"]

MISSING_EXTRA_MESSAGE = 'RedisStore needs the redis client: pip install "state-middleware[redis]"'

_MAX_DEPTH = 100_000  # guards a corrupted parent loop inside Redis; far beyond real chains
_POLL_INTERVAL = 0.02  # seconds between checks of a pending turn


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
    turn of the chain. ``pending_ttl`` bounds how long a turn in progress (``begin``
    without ``end``, say after a crash) makes followers wait. The client must return
    bytes (``decode_responses=False``, the default).
    """

    def __init__(
        self,
        client: Any,
        *,
        ttl: float = _defaults.REDIS_TTL,
        key_prefix: str = _defaults.REDIS_KEY_PREFIX,
        pending_ttl: float = _defaults.REDIS_PENDING_TTL,
    ) -> None:
        if ttl <= 0 or pending_ttl <= 0:
            raise ValueError("ttl and pending_ttl must be positive")
        pool = getattr(client, "connection_pool", None)
        if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self.ttl = ttl
        self.pending_ttl = pending_ttl
        self.key_prefix = key_prefix
        self._client = client
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

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl: float = _defaults.REDIS_TTL,
        key_prefix: str = _defaults.REDIS_KEY_PREFIX,
        pending_ttl: float = _defaults.REDIS_PENDING_TTL,
        socket_timeout: float = _defaults.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout: float = _defaults.REDIS_SOCKET_CONNECT_TIMEOUT,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store owning its ``redis.asyncio`` clients, made with
        ``redis.asyncio.Redis.from_url(url, ...)``.

        ``socket_timeout`` bounds every command and ``socket_connect_timeout`` every
        connection attempt, so a dead Redis costs a request seconds, not a hang. A
        dropped connection is retried once at once (Redis restarted); anything else
        fails straight away. Other keywords go to ``Redis.from_url`` and win.
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

        store = cls(new_client(), ttl=ttl, key_prefix=key_prefix, pending_ttl=pending_ttl)
        store._new_client = new_client
        return store

    # -- the Store protocol -----------------------------------------------------------
    async def put(self, owner: str, record: TurnRecord) -> None:
        base = self._turn_base(owner)
        with self._errors():
            await self._put(
                keys=[base + record.id],
                args=[
                    base,
                    _milliseconds(self.ttl),
                    encode_record(record),
                    record.parent_id or "",
                    _MAX_DEPTH,
                ],
                client=self._current_client(),
            )

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
            deleted = await self._delete(
                keys=[base + response_id],
                args=[base, _MAX_DEPTH],
                client=self._current_client(),
            )
        return bool(deleted)

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


def _owner_digest(owner: str) -> str:
    return hashlib.blake2b(owner.encode(), digest_size=16, person=b"state-mw-key").hexdigest()
