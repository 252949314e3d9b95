"""Shared fixtures: the anyio backend, stores of every kind, SDK clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from state_middleware import MemoryStore, RedisStore, Store
from state_middleware.testing import StreamingASGITransport

from ._codex import codex_bin  # noqa: F401  (the Codex binary, or a skip)
from ._redis import redis_server  # noqa: F401  (the session fixture make_store asks for)
from ._redis_cluster import redis_cluster  # noqa: F401  (started only when asked for)

#: every store kind the behaviour suite runs against: a ``MemoryStore``, a ``RedisStore``
#: on one ``redis-server``, and on a six-node Redis Cluster with a redis-py client and
#: with a valkey-py one
STORE_KINDS = ["memory", "redis", "redis_cluster", "valkey_cluster"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_store(store_kind: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Store]]:
    """A factory of fresh, empty stores of the parametrised kind (keywords: ttl,
    max_bytes)."""
    if store_kind == "memory":
        yield lambda **kw: MemoryStore(**kw)
        return
    if store_kind in ("redis", "redis_cluster", "valkey_cluster"):
        url: str = (
            request.getfixturevalue("redis_server")
            if store_kind == "redis"
            else request.getfixturevalue("redis_cluster").url
        )
        made: list[RedisStore] = []

        def make_redis_store(**kw: Any) -> Store:
            if "max_bytes" in kw or "timer" in kw:
                pytest.skip("RedisStore is bounded by maxmemory and expires on Redis' clock")
            # A prefix of its own keeps every store fresh and empty on the shared server.
            prefix = f"test:{uuid.uuid4().hex}:"
            library: Any = "valkey" if store_kind == "valkey_cluster" else "redis"
            made.append(RedisStore.from_url(url, key_prefix=prefix, library=library, **kw))
            return made[-1]

        yield make_redis_store
        for store in made:  # clients also close with the loop that used them
            asyncio.run(store.aclose())
        return
    raise AssertionError(f"unknown store kind {store_kind}")  # pragma: no cover


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


@pytest.fixture
def memory_store() -> Store:
    """For a test whose requests never reach the store (refused, passed through, failed
    upstream): it runs once, not once per store kind."""
    return MemoryStore()


@asynccontextmanager
async def sdk_client(
    app: Any, api_key: str = "sk-test", **headers: str
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK talking to ``app`` in process, chunks delivered as sent."""
    async with (
        httpx.AsyncClient(
            transport=StreamingASGITransport(app), base_url="http://testserver", timeout=30
        ) as http,
        openai.AsyncOpenAI(
            base_url="http://testserver/v1",
            api_key=api_key,
            http_client=http,
            max_retries=0,
            default_headers=headers or None,
        ) as client,
    ):
        yield client


def text_events(deltas: int) -> list[str]:
    """The event types of a streamed one-message reply, in order."""
    return [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
