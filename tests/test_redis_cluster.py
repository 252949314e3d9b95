"""``RedisStore`` on a real six-node Redis Cluster (three primaries, a replica each): the
clients it takes, where it puts a tree, and a primary failing over under traffic from
the official SDK. The behaviour every store shares runs on the cluster through the
``store_kind`` suite (``redis_cluster`` and ``valkey_cluster``).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import valkey.asyncio.cluster

from state_middleware import RedisStore, ResponsesStateMiddleware, TurnRecord
from state_middleware._ids import new_response_id, tree_of
from state_middleware._stores.redis_client import owner_digest
from state_middleware.testing import ScriptedResponsesApp

from ._redis import RedisServer
from ._redis_cluster import LocalCluster
from ._servers import serve

pytestmark = pytest.mark.slow

OWNER = "tenant"


def turn(response_id: str, parent_id: str | None = None) -> TurnRecord:
    return TurnRecord(
        id=response_id,
        parent_id=parent_id,
        created_at=1_700_000_000,
        input_items=b'[{"role":"user","content":"hi"}]',
        output_items=b'[{"type":"message","id":"msg_' + response_id[5:].encode() + b'"}]',
        response=b'{"id":"' + response_id.encode() + b'","object":"response"}',
    )


def tree_key(prefix: str, response_id: str) -> str:
    """Where the store keeps the tree of ``response_id`` (README: key layout)."""
    return f"{prefix}tree:{{{owner_digest(OWNER)}.{tree_of(response_id)}}}"


async def exercise(store: RedisStore) -> None:
    """A chain, a fork, a deletion, an item found by id, notes and a pending mark."""
    root = new_response_id()
    child = new_response_id(tree_of(root))
    fork = new_response_id(tree_of(root))
    await store.put(OWNER, turn(root))
    await store.put(OWNER, turn(child, root))
    await store.put(OWNER, turn(fork, root))
    chain = await store.get_chain(OWNER, child)
    assert [record.id for record in chain or []] == [root, child]
    assert await store.delete(OWNER, root) is True
    assert [record.id for record in await store.get_chain(OWNER, fork) or []] == [root, fork]
    found = await store.get_items(OWNER, ["msg_" + child[5:]])
    assert list(found) == ["msg_" + child[5:]]
    await store.remember(OWNER, {"a": b"1", "b": b"2"})
    assert await store.recall(OWNER, ["a", "b", "c"]) == {"a": b"1", "b": b"2"}
    await store.begin(OWNER, child)
    assert await store.wait(OWNER, child, 0.0) is True
    await store.end(OWNER, child)


@pytest.mark.anyio
async def test_from_url_of_any_node_makes_a_cluster_store(redis_cluster: LocalCluster) -> None:
    for node in redis_cluster.nodes[:3]:
        store = RedisStore.from_url(node.url, key_prefix="url:")
        try:
            await exercise(store)
        finally:
            await store.aclose()


@pytest.mark.anyio
async def test_a_cluster_client_passed_in_works_redis_py_and_valkey_py(
    redis_cluster: LocalCluster,
) -> None:
    clients: list[Any] = [
        redis.asyncio.cluster.RedisCluster.from_url(redis_cluster.url),
        valkey.asyncio.cluster.ValkeyCluster.from_url(redis_cluster.url),
    ]
    for client in clients:
        try:
            await exercise(RedisStore(client, key_prefix="client:"))
        finally:
            await client.aclose()


@pytest.mark.anyio
async def test_trees_spread_over_every_primary(redis_cluster: LocalCluster) -> None:
    store = RedisStore.from_url(redis_cluster.url, key_prefix="spread:")
    roots = [new_response_id() for _ in range(30)]
    try:
        for root in roots:
            await store.put(OWNER, turn(root))
            await store.put(OWNER, turn(new_response_id(tree_of(root)), root))
    finally:
        await store.aclose()
    holders = {redis_cluster.primary_for(tree_key("spread:", root)).port for root in roots}
    assert len(holders) == 3  # 30 random trees: each primary holds some (1 in 10^5 not)


@pytest.mark.anyio
async def test_a_plain_client_to_a_single_redis_still_works(redis_server: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        await exercise(RedisStore(client, key_prefix="single:"))
    finally:
        await client.aclose()


def test_from_url_of_a_server_that_is_down_still_makes_a_store() -> None:
    with RedisServer() as server:
        url = server.url
    store = RedisStore.from_url(url, socket_connect_timeout=0.5)  # fails on use
    assert store.key_prefix


# -- failover ---------------------------------------------------------------------------
def history_upstream() -> Any:
    """The scripted upstream, answering every request with the user texts of its whole
    input joined by ``/``: the reply shows exactly which history reached it."""
    upstream = ScriptedResponsesApp()

    def answer(request: Any) -> dict[str, Any]:
        texts = [
            item["content"]
            for item in request.body["input"]
            if isinstance(item, dict) and item.get("role") == "user"
        ]
        return {"text": "/".join(texts)}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            upstream.script.append(answer)  # every entry is the same: order is no matter
        await upstream(scope, receive, send)

    return app


@pytest.fixture
def failing_cluster() -> Iterator[LocalCluster]:
    """A cluster of the test's own: it loses a primary."""
    with LocalCluster() as cluster:
        yield cluster


def test_a_primary_failing_over_costs_503s_never_a_wrong_history(
    failing_cluster: LocalCluster,
) -> None:
    """Chains on every primary; one primary is killed (SIGKILL). Until its replica takes
    over, every turn either answers with exactly its chain's history or fails with the
    documented 503 (``store_unavailable``), never anything else; once the cluster is ok,
    every chain goes on, in the same process, with its whole history."""
    cluster = failing_cluster
    store = RedisStore.from_url(cluster.url, socket_timeout=1.0, socket_connect_timeout=0.5)
    app = ResponsesStateMiddleware(history_upstream(), store=store, identity=lambda _: OWNER)
    with serve(app) as base_url:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0)
        said: dict[str, list[str]] = {}  # a chain's last response id -> its user texts
        for n in range(24):
            first = client.responses.create(model="m", input=f"c{n}t0")
            said[first.id] = [f"c{n}t0"]
        victim = cluster.primary_for(tree_key("state_middleware:", next(iter(said))))
        on_victim = [
            last
            for last in said
            if cluster.primary_for(tree_key("state_middleware:", last)) is victim
        ]
        assert on_victim  # the first chain at least

        def go_on(last: str, text: str, stream: bool) -> tuple[str, str] | None:
            """One more turn: the new last id and its reply, or None when it failed
            as documented (503 ``store_unavailable``; a stream: ``error``, then
            ``response.failed`` with that code)."""
            failure: Any
            try:
                if stream:
                    with client.responses.stream(
                        model="m", input=text, previous_response_id=last
                    ) as events:
                        final = events.get_final_response()
                    if final.status == "completed":
                        return final.id, final.output_text
                    failure = (503, {"code": final.error.code if final.error else None})
                else:
                    response = client.responses.create(
                        model="m", input=text, previous_response_id=last
                    )
                    return response.id, response.output_text
            except openai.APIStatusError as error:
                failure = (error.status_code, error.body)
            except openai.APIError as error:  # the SDK raising on the error event
                stored = "could not be stored (store_unavailable)" not in str(error)
                failure = (503, {} if stored else {"code": "store_unavailable"})
            assert failure[0] == 503, failure
            assert failure[1]["code"] == "store_unavailable", failure
            return None

        cluster.kill(victim)
        run_round(said, "t1", go_on)  # while the primary is dead: 503s allowed
        promoted = cluster.wait_for_failover(victim)
        assert promoted is not victim
        # The cluster is ok again: nothing fails, and nothing was restarted.
        assert run_round(said, "t2", go_on) == 0
        cluster.restart(victim)  # back, as a replica
        assert run_round(said, "t3", go_on) == 0


def run_round(said: dict[str, list[str]], label: str, go_on: Any) -> int:
    """A turn on every chain at once (streamed and JSON alternately), checking each
    reply is exactly its chain's history; moves ``said`` on; returns the 503s."""
    chains = list(said.items())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = [
            (last, texts, text, pool.submit(go_on, last, text, n % 2 == 0))
            for n, (last, texts) in enumerate(chains)
            for text in [texts[0].removesuffix("t0") + label]
        ]
        failed = 0
        for last, texts, text, job in jobs:
            outcome = job.result()
            if outcome is None:
                failed += 1
                continue
            new_id, reply = outcome
            assert reply == "/".join([*texts, text])  # the whole history, in order
            del said[last]
            said[new_id] = [*texts, text]
    return failed
