"""What every part of ``RedisStore`` shares: its client (one per event loop when the
store owns them), the mapping of Redis errors to store errors, and the key bases.

Keys. Every key is ``{key_prefix}{kind}:{...}:{id}``. ``{O}`` is the 32-hex blake2b
digest of the owner, so any owner string gives a fixed-size, unambiguous key. The keys
of one tree (a first turn and all that continues it, or a conversation and its turns:
its id says which, see ``_ids.tree_of``) carry the hash tag ``{O.T}``, ``T`` being the
tree, so they share a Redis Cluster slot; item pointer keys carry no tag and spread.
Each part describes the kinds it keeps.

Failure policy. Every method raises ``StoreUnavailable`` (code ``store_unavailable``)
when Redis refuses the connection, drops it or does not answer within
``socket_timeout``, and ``StoreError`` (code ``store_error``) for any other Redis error
(for instance ``OOM`` under ``maxmemory``). On a cluster, a slot without a primary (a
failover under way: ``CLUSTERDOWN``, ``TRYAGAIN``) or no node answering counts as
unavailable too. A client made by ``from_url`` retries
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
from collections.abc import Callable, Iterator
from typing import Any

from .._ids import NO_TREE, tree_of
from .._store import StoreError, StoreUnavailable

__all__ = [
    "MISSING_EXTRA_MESSAGE",
    "RedisClient",
    "import_extra",
    "milliseconds",
    "owner_digest",
]

MISSING_EXTRA_MESSAGE = 'RedisStore needs the redis client: pip install "state-middleware[redis]"'


def import_extra(module: str) -> Any:
    """A module of the ``redis`` extra (or of valkey-py); ``ImportError`` naming what to
    install when missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if module.startswith("valkey"):
            raise ImportError(
                'RedisStore(library="valkey") needs valkey-py: pip install valkey'
            ) from exc
        raise ImportError(MISSING_EXTRA_MESSAGE) from exc


def _client_library(client: Any) -> str:
    """``"redis"`` or ``"valkey"``: whose exceptions the client raises."""
    for cls in type(client).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in ("redis", "valkey"):
            return root
    return "redis"


def milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def owner_digest(owner: str) -> str:
    return hashlib.blake2b(owner.encode(), digest_size=16, person=b"state-mw-key").hexdigest()


class RedisClient:
    """The base of every part of ``RedisStore``: the settings its ``__init__`` sets, the
    client to use from the running loop, error mapping, and the key bases the scripts of
    more than one part build keys from."""

    ttl: float
    conversation_ttl: float | None
    pending_ttl: float
    event_ttl: float
    key_prefix: str

    def _use_client(self, client: Any) -> None:
        """Use ``client`` (from one loop, never closed), and map its library's errors."""
        self._client = client
        self._new_client: Callable[[], Any] | None = None  # set when the store owns clients
        self._loop_clients: dict[asyncio.AbstractEventLoop, tuple[Any, asyncio.Task[None]]] = {}
        library = _client_library(client)
        exceptions = import_extra(f"{library}.exceptions")
        self._unavailable: tuple[type[BaseException], ...] = (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            OSError,
            TimeoutError,
            # a cluster without a primary for the slot, yet: a failover under way
            exceptions.ClusterDownError,
            exceptions.TryAgainError,
            exceptions.SlotNotCoveredError,
            # no node of the cluster answers
            getattr(
                exceptions,
                "RedisClusterException" if library == "redis" else "ValkeyClusterException",
            ),
        )
        #: cluster clients already initialised, or being (by id; the client is kept)
        self._initialized: dict[int, tuple[Any, asyncio.Future[Any]]] = {}
        self._failed: type[BaseException] = (
            exceptions.ValkeyError if hasattr(exceptions, "ValkeyError") else exceptions.RedisError
        )

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

    async def _ready_client(self) -> Any:
        """The client to use from the running event loop, ready: a cluster client is
        initialised (it learns the cluster's layout) once, before its first command.
        redis-py's asyncio cluster client, given many concurrent first commands, fails
        some of them (``benchmarks/cluster_race.py``); after ``initialize()`` none."""
        client = self._current_client()
        if not hasattr(client, "nodes_manager"):  # not a cluster client
            return client
        entry = self._initialized.get(id(client))
        if entry is None or (entry[1].done() and entry[1].exception() is not None):
            entry = self._initialized[id(client)] = (
                client,
                asyncio.ensure_future(client.initialize()),
            )
        await asyncio.shield(entry[1])
        return client

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
            self._initialized.pop(id(client), None)
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
        except AttributeError as exc:
            # redis-py's asyncio cluster client (7.4 to 8.1 at least) sometimes writes
            # to a connection it has just dropped, while it (re)learns the cluster's
            # layout: nothing was sent, so it is a connection lost, and the client
            # recovers by itself.
            if "writelines" not in str(exc):
                raise
            raise StoreUnavailable(f"Redis did not answer: {exc}") from exc

    # -- keys shared by turns and items -------------------------------------------------
    def _turn_base(self, owner: str) -> str:
        return f"{self.key_prefix}turn:{owner_digest(owner)}:"

    def _item_base(self, owner: str) -> str:
        return f"{self.key_prefix}item:{owner_digest(owner)}:"

    def _tag(self, owner: str, some_id: str) -> str:
        """The hash tag of the tree ``some_id`` (a response, conversation or derived
        item id) belongs to: every key of one tree is in one Redis Cluster slot."""
        return "{" + owner_digest(owner) + "." + (tree_of(some_id) or NO_TREE) + "}"

    def _tree_key(self, owner: str, some_id: str) -> str:
        """The hash holding the whole tree ``some_id`` belongs to."""
        return f"{self.key_prefix}tree:{self._tag(owner, some_id)}"
