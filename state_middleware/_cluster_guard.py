"""Refusing Redis Cluster until ``RedisStore`` supports it.

The store's scripts build turn and item keys inside Redis and touch keys of many hash
slots in one call, which a cluster refuses (``CROSSSLOT``, or a node answering only for
its own slots). Rather than fail on the first request, ``RedisStore`` refuses a cluster
client at construction, and ``RedisStore.from_url`` refuses a URL whose server runs in
cluster mode.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

__all__ = ["CLUSTER_UNSUPPORTED_MESSAGE", "is_cluster_client", "serves_cluster"]

CLUSTER_UNSUPPORTED_MESSAGE = (
    "RedisStore does not support Redis Cluster yet: its scripts use keys of many hash "
    "slots in one call. Use a single Redis primary (with replicas or Sentinel if you like)."
)

_CLUSTER_CLASSES = {("redis", "RedisCluster"), ("valkey", "ValkeyCluster")}


def is_cluster_client(client: Any) -> bool:
    """Whether ``client`` is a redis-py or valkey-py cluster client (or a subclass)."""
    return any(
        (cls.__module__.partition(".")[0], cls.__name__) in _CLUSTER_CLASSES
        for cls in type(client).__mro__
    )


def serves_cluster(new_client: Callable[[], Any], errors: tuple[type[BaseException], ...]) -> bool:
    """Whether the server that ``new_client()`` reaches says ``cluster_enabled:1``.

    Asked once, from a thread with its own event loop, so it works whether or not the
    caller runs a loop; bounded by the client's timeouts. When the server cannot be
    asked (one of ``errors``: down, or ``INFO`` not allowed) the answer is False and the
    store fails on use as for any server that is down.
    """

    async def ask() -> bool:
        client = new_client()
        try:
            info = await client.info("cluster")
        finally:
            await client.aclose()
        return bool(info.get("cluster_enabled"))

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        try:
            return thread.submit(asyncio.run, ask()).result()
        except errors:
            return False
