"""Until ``RedisStore`` supports Redis Cluster, it refuses one at construction, against
a real six-node cluster: a redis-py or valkey-py cluster client, and a ``from_url`` URL
of a node in cluster mode. A single Redis is still welcome."""

from __future__ import annotations

import pytest
import redis.asyncio
import redis.asyncio.cluster
import valkey.asyncio.cluster

from state_middleware import RedisStore, TurnRecord
from state_middleware._cluster_guard import CLUSTER_UNSUPPORTED_MESSAGE

from ._redis import RedisServer
from ._redis_cluster import LocalCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TURN = TurnRecord(
    id="resp_1",
    parent_id=None,
    created_at=1_700_000_000,
    input_items=b'[{"role":"user","content":"hi"}]',
    output_items=b'[{"type":"message","content":"hello"}]',
    response=b'{"id":"resp_1","object":"response"}',
)


async def test_a_redis_py_cluster_client_is_refused_at_construction(
    redis_cluster: LocalCluster,
) -> None:
    client = redis.asyncio.cluster.RedisCluster.from_url(redis_cluster.url)
    try:
        with pytest.raises(ValueError, match="does not support Redis Cluster") as refused:
            RedisStore(client)
        assert str(refused.value) == CLUSTER_UNSUPPORTED_MESSAGE
    finally:
        await client.aclose()


async def test_a_valkey_cluster_client_is_refused_at_construction(
    redis_cluster: LocalCluster,
) -> None:
    client = valkey.asyncio.cluster.ValkeyCluster.from_url(redis_cluster.url)
    try:
        with pytest.raises(ValueError, match="does not support Redis Cluster"):
            RedisStore(client)
    finally:
        await client.aclose()


def test_from_url_refuses_a_node_in_cluster_mode(redis_cluster: LocalCluster) -> None:
    with pytest.raises(ValueError, match="does not support Redis Cluster"):
        RedisStore.from_url(redis_cluster.url)


async def test_from_url_refuses_a_cluster_node_inside_a_running_loop(
    redis_cluster: LocalCluster,
) -> None:
    with pytest.raises(ValueError, match="does not support Redis Cluster"):
        RedisStore.from_url(redis_cluster.url)


async def test_a_plain_client_to_a_single_redis_still_works(redis_server: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        store = RedisStore(client, key_prefix="guard:")
        await store.put("owner", TURN)
        assert await store.get("owner", "resp_1") == TURN
    finally:
        await client.aclose()


async def test_from_url_of_a_single_redis_still_works(redis_server: str) -> None:
    store = RedisStore.from_url(redis_server, key_prefix="guard-url:")
    try:
        await store.put("owner", TURN)
        assert await store.get("owner", "resp_1") == TURN
    finally:
        await store.aclose()


def test_from_url_of_a_server_that_is_down_still_makes_a_store() -> None:
    with RedisServer() as server:
        url = server.url
    store = RedisStore.from_url(url, socket_connect_timeout=0.5)  # fails on use, as before
    assert store.key_prefix
