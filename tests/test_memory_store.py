"""MemoryStore: byte bound, sliding TTL, chain-or-nothing, tombstones. No event loop
needed beyond running the coroutines."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgspec
import pytest

from state_middleware import MemoryStore, ResponsesStateMiddleware, TurnRecord
from state_middleware.testing import ScriptedResponsesApp

from ._sync import soon
from .conftest import sdk_client


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(rid: str, parent: str | None = None, size: int = 100) -> TurnRecord:
    item = msgspec.json.encode([{"role": "user", "content": "x" * size}])
    return TurnRecord(rid, parent, 0, item, b"[]", b'{"id":"%s"}' % rid.encode())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def chain_ids(store: MemoryStore, rid: str, owner: str = "o") -> list[str] | None:
    chain = run(store.get_chain(owner, rid))
    return None if chain is None else [r.id for r in chain]


def test_chain_is_returned_oldest_first() -> None:
    store = MemoryStore()
    for rid, parent in [("a", None), ("b", "a"), ("c", "b")]:
        run(store.put("o", record(rid, parent)))
    assert chain_ids(store, "c") == ["a", "b", "c"]
    assert chain_ids(store, "c", owner="other") is None


def test_ttl_slides_for_the_whole_chain_when_it_is_continued() -> None:
    clock = Clock()
    store = MemoryStore(ttl=10, timer=clock)
    run(store.put("o", record("a")))
    clock.now = 8
    run(store.put("o", record("b", "a")))  # extending the chain refreshes "a"
    clock.now = 16
    assert chain_ids(store, "b") == ["a", "b"]  # loading refreshes both again
    clock.now = 25
    assert chain_ids(store, "b") == ["a", "b"]
    clock.now = 36
    assert chain_ids(store, "b") is None
    assert run(store.get("o", "a")) is None


def test_an_expired_ancestor_makes_the_whole_chain_missing() -> None:
    clock = Clock()
    store = MemoryStore(ttl=10, timer=clock)
    run(store.put("o", record("a")))
    clock.now = 9
    run(store.put("o", record("unrelated")))
    clock.now = 11  # "a" expired; a child stored without touching it would be orphaned
    run(store.put("o", record("b", "a")))
    assert chain_ids(store, "b") is None  # never half a chain


def test_eviction_by_bytes_never_yields_half_a_chain() -> None:
    probe = MemoryStore()
    run(probe.put("o", record("xx")))
    one = probe.size + 1  # room for a turn (its record and its item's id) and a parent id
    store = MemoryStore(max_bytes=one * 5)
    run(store.put("o", record("a")))
    for n in range(1, 5):
        run(store.put("o", record(f"t{n}")))
    run(store.put("o", record("b", "a")))  # evicts the least recently used: "t1"
    assert chain_ids(store, "b") == ["a", "b"]
    for n in range(5, 12):
        run(store.put("o", record(f"t{n}")))
    assert store.size <= one * 5
    assert chain_ids(store, "b") is None


def test_a_record_larger_than_the_store_is_refused() -> None:
    from state_middleware import StoreError

    store = MemoryStore(max_bytes=500)
    with pytest.raises(StoreError):
        run(store.put("o", record("big", size=1000)))


def test_delete_hides_a_record_but_keeps_it_for_descendants() -> None:
    store = MemoryStore()
    for rid, parent in [("a", None), ("b", "a"), ("c", "b")]:
        run(store.put("o", record(rid, parent)))
    assert run(store.delete("o", "b")) is True
    assert run(store.delete("o", "b")) is False
    assert run(store.get("o", "b")) is None
    assert chain_ids(store, "b") is None
    assert chain_ids(store, "c") == ["a", "b", "c"]
    size = store.size
    assert run(store.delete("o", "c")) is True  # the last user of "b" goes: both go
    assert store.size < size
    assert chain_ids(store, "a") == ["a"]
    assert run(store.delete("o", "a")) is True
    assert store.size == 0


def test_wait_returns_when_the_pending_turn_ends() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        store = MemoryStore()
        await store.begin("o", "r")
        waiter = asyncio.ensure_future(store.wait("o", "r", 3600))

        async def end_the_turn() -> bool:
            # Tasks take their first step in the order they were made: the wait has begun.
            still_waiting = not waiter.done()
            await store.end("o", "r")
            return still_waiting

        ender = asyncio.ensure_future(end_the_turn())
        waited = await soon(waiter, "the wait returning once the turn ended")
        return await ender, waited, await soon(store.wait("o", "r", 3600), "a wait, no mark")

    assert run(scenario()) == (True, True, False)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryStore(max_bytes=0)


@pytest.mark.anyio
async def test_stored_bytes_grow_with_the_items_not_with_the_history() -> None:
    store = MemoryStore()
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    sizes = []
    async with sdk_client(app) as client:
        previous = None
        for _ in range(40):
            kwargs: dict[str, Any] = {"previous_response_id": previous} if previous else {}
            made = await client.responses.create(model="m", input="x" * 300, **kwargs)
            previous = made.id
            sizes.append(store.size)
    growth = [b - a for a, b in itertools.pairwise(sizes)]
    # Each turn adds about the same bytes; a cumulative copy would grow each step.
    assert max(growth) < 1.2 * min(growth)
