"""Whether a Redis URL reaches a server in cluster mode: ``RedisStore.from_url`` asks
once, and makes a cluster client if it does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

__all__ = ["serves_cluster"]


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
