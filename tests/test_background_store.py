"""Background responses, as every store keeps them: run against each store kind.

Time passes differently for each kind: a MemoryStore reads an injected clock, which a
test moves on; Redis expires keys on its own clock, so a test gives a tiny lease (or
event TTL) and waits for Redis to say the key expired. Nothing here sleeps.

At the end, what only Redis has to prove: one round trip per call, the TTLs Redis holds,
and two replicas racing to fail a lost worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec
import pytest
import redis.asyncio

from state_middleware import MemoryStore, RedisStore, Store
from state_middleware._errors import WORKER_LOST_MESSAGE
from state_middleware._record import BackgroundState

from ._sync import soon
from .test_redis_store import CountingConnection, round_trips

pytestmark = pytest.mark.anyio

OWNER = "owner"
LEASE = 60.0  # a worker that is alive: its lease never ends during a test
TINY_LEASE = 0.05  # a worker about to be lost
SHORT_EVENT_TTL = 0.2
QUEUED = b'{"id":"resp_1","object":"response","status":"queued","output":[]}'
DONE = b'{"id":"resp_1","object":"response","status":"completed","output":[]}'


def event(number: int) -> bytes:
    return msgspec.json.encode({"type": "response.output_text.delta", "sequence_number": number})


def events(first: int, count: int) -> list[bytes]:
    return [event(number) for number in range(first, first + count)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Time(Protocol):
    """How a test lets a store's time pass, and sees a reader wait, for one store kind."""

    def store(self, **options: Any) -> Store: ...

    def replica(self, store: Store) -> Store:
        """Another process's view of the same store."""
        ...

    async def lease_ends(self, store: Store, response_id: str) -> None: ...

    async def events_expire(self, store: Store, response_id: str) -> None: ...

    def reader_blocked(
        self, store: Store, response_id: str
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """Entered before a reader starts; ``await``-ing what it yields with the reader's
        task returns once the reader is waiting for events."""
        ...


class MemoryTime:
    def __init__(self, make_store: Callable[..., Store]) -> None:
        self.clock = Clock()
        self._make_store = make_store

    def store(self, **options: Any) -> Store:
        return self._make_store(timer=self.clock, **options)

    def replica(self, store: Store) -> Store:
        return store  # one process: the replicas are two callers of one store

    async def lease_ends(self, store: Store, response_id: str) -> None:
        self.clock.now += 1  # past TINY_LEASE, not LEASE

    async def events_expire(self, store: Store, response_id: str) -> None:
        assert isinstance(store, MemoryStore)
        self.clock.now += store.event_ttl + 1

    @contextlib.asynccontextmanager
    async def reader_blocked(self, store: Store, response_id: str) -> AsyncIterator[Any]:
        async def blocked(reader: asyncio.Task[Any]) -> None:
            for _ in range(10):  # every step a reader could take without waiting
                await asyncio.sleep(0)
            assert not reader.done()

        yield blocked


class RedisTime:
    """Time on Redis' clock. ``node_url(key)`` is the URL of the server holding ``key``
    (on a cluster, its slot's primary: notifications and ``MONITOR`` are per node)."""

    def __init__(self, make_store: Callable[..., Store], node_url: Callable[[str], str]) -> None:
        self._make_store = make_store
        self._node_url = node_url
        self._admins: dict[str, Any] = {}

    def admin(self, key: str) -> Any:
        """A plain client of the server holding ``key``."""
        url = self._node_url(key)
        if url not in self._admins:
            self._admins[url] = redis.asyncio.Redis.from_url(url)
        return self._admins[url]

    def store(self, **options: Any) -> Store:
        return self._make_store(**options)

    def replica(self, store: Store) -> Store:
        assert isinstance(store, RedisStore)
        replica = self._make_store()
        assert isinstance(replica, RedisStore)
        replica.key_prefix = store.key_prefix
        return replica

    async def lease_ends(self, store: Store, response_id: str) -> None:
        await self.expired(store, response_id, 2)

    async def events_expire(self, store: Store, response_id: str) -> None:
        await self.expired(store, response_id, 1)

    async def expired(self, store: Store, response_id: str, key_number: int = 2) -> None:
        """Wait until Redis has expired a key of the response (by default its lease):
        for its notification, or at most its remaining TTL, then look (which expires
        it, if it is due)."""
        key = keys(store, response_id)[key_number]
        admin = self.admin(key)
        setting = "notify-keyspace-events"
        old = (await admin.config_get(setting))[setting]
        await admin.config_set(setting, "Kgx")
        try:
            async with admin.pubsub() as pubsub:
                await pubsub.subscribe(f"__keyspace@0__:{key}")
                await soon(pubsub.get_message(timeout=None), f"subscribing to {key}")
                while (left := await admin.pttl(key)) != -2:
                    assert left >= 0, f"{key} does not expire"
                    await soon(pubsub.get_message(timeout=left / 1000), f"{key} expiring")
        finally:
            await admin.config_set(setting, old)

    @contextlib.asynccontextmanager
    async def reader_blocked(self, store: Store, response_id: str) -> AsyncIterator[Any]:
        events_key = keys(store, response_id)[1]
        async with self.admin(events_key).monitor() as monitor:

            async def blocked(reader: asyncio.Task[Any]) -> None:
                # Redis shows a command once it ran: the XREAD is blocked in Redis.
                while True:
                    command = await soon(monitor.next_command(), "a blocking read")
                    if command["command"].startswith("XREAD") and events_key in command["command"]:
                        break
                assert not reader.done()

            yield blocked

    async def aclose(self) -> None:
        for admin in self._admins.values():
            await admin.aclose()


def keys(store: Store, response_id: str) -> list[str]:
    """A background response's Redis keys: state, events, lease."""
    assert isinstance(store, RedisStore)
    return store._background_keys(OWNER, response_id)


@pytest.fixture
async def time(
    store_kind: str, make_store: Callable[..., Store], request: pytest.FixtureRequest
) -> AsyncIterator[Time]:
    if store_kind == "memory":
        yield MemoryTime(make_store)
        return
    if store_kind == "redis":
        url: str = request.getfixturevalue("redis_server")
        redis_time = RedisTime(make_store, lambda key: url)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        redis_time = RedisTime(make_store, lambda key: cluster.primary_for(key).url)
    yield redis_time
    await redis_time.aclose()


@pytest.fixture
def store(time: Time) -> Store:
    return time.store()


async def running(store: Store, response_id: str = "resp_1", *, lease: float = LEASE) -> str:
    await store.start_background(OWNER, response_id, QUEUED, stream=True, lease=lease)
    return response_id


# -- starting, recording, reading --------------------------------------------------------
async def test_a_started_response_is_queued_with_no_events(store: Store) -> None:
    await running(store)
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.response, state.stream, state.events) == ("queued", QUEUED, True, 0)
    assert not state.cancel_requested
    assert not state.finished
    assert await store.read_events(OWNER, "resp_1", -1, 0) == ([], False)


async def test_recorded_events_are_numbered_on_from_the_last_and_set_the_status(
    store: Store,
) -> None:
    await running(store)
    assert (
        await store.record_events(OWNER, "resp_1", events(0, 2), status="queued", lease=LEASE)
        is False
    )
    assert (
        await store.record_events(OWNER, "resp_1", events(2, 3), status="in_progress", lease=LEASE)
        is False
    )
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.events) == ("in_progress", 5)
    assert await store.read_events(OWNER, "resp_1", -1, 0) == (events(0, 5), False)


async def test_reading_after_n_returns_only_the_later_events(store: Store) -> None:
    await running(store)
    await store.record_events(OWNER, "resp_1", events(0, 6), status="in_progress", lease=LEASE)
    assert await store.read_events(OWNER, "resp_1", 3, 0) == (events(4, 2), False)
    assert await store.read_events(OWNER, "resp_1", 5, 0) == ([], False)


async def test_a_reader_with_nothing_new_gets_nothing_when_its_timeout_ends(store: Store) -> None:
    await running(store)
    await store.record_events(OWNER, "resp_1", events(0, 2), status="in_progress", lease=LEASE)
    assert await store.read_events(OWNER, "resp_1", 1, 0.01) == ([], False)


async def test_a_reader_with_nothing_new_waits_and_is_woken_by_recorded_events(
    store: Store, time: Time
) -> None:
    await running(store)
    await store.record_events(OWNER, "resp_1", events(0, 2), status="in_progress", lease=LEASE)
    async with time.reader_blocked(store, "resp_1") as blocked:
        reader = asyncio.create_task(store.read_events(OWNER, "resp_1", 1, 30))
        await blocked(reader)
        await store.record_events(OWNER, "resp_1", events(2, 1), status="in_progress", lease=LEASE)
        assert await soon(reader, "the reader waking") == ([event(2)], False)


async def test_a_reader_waiting_when_it_finishes_gets_the_last_events_and_the_end_at_once(
    store: Store, time: Time
) -> None:
    await running(store)
    async with time.reader_blocked(store, "resp_1") as blocked:
        reader = asyncio.create_task(store.read_events(OWNER, "resp_1", -1, 30))
        await blocked(reader)
        await store.finish_background(OWNER, "resp_1", "completed", DONE, events(0, 2))
        assert await soon(reader, "the reader waking") == (events(0, 2), True)


async def test_a_finished_response_reads_as_finished_after_its_last_event(store: Store) -> None:
    await running(store)
    await store.record_events(OWNER, "resp_1", events(0, 2), status="in_progress", lease=LEASE)
    await store.finish_background(OWNER, "resp_1", "completed", DONE, events(2, 2))
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.response, state.events, state.finished) == (
        "completed",
        DONE,
        4,
        True,
    )
    assert await store.read_events(OWNER, "resp_1", 1, 30) == (events(2, 2), True)
    assert await store.read_events(OWNER, "resp_1", 3, 30) == ([], True)  # at once


async def test_a_response_finished_without_events_reads_as_finished(store: Store) -> None:
    await store.start_background(OWNER, "resp_1", QUEUED, stream=False, lease=LEASE)
    await store.finish_background(OWNER, "resp_1", "completed", DONE)
    assert await store.read_events(OWNER, "resp_1", -1, 30) == ([], True)


async def test_events_expire_event_ttl_after_it_finishes_but_its_state_remains(time: Time) -> None:
    store = time.store(event_ttl=SHORT_EVENT_TTL)
    await running(store)
    await store.finish_background(OWNER, "resp_1", "completed", DONE, events(0, 1))
    await time.events_expire(store, "resp_1")
    assert await store.read_events(OWNER, "resp_1", -1, 0) is None
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.response, state.events) == ("completed", DONE, 1)


async def test_unknown_responses_have_no_state_and_no_events(store: Store) -> None:
    assert await store.get_background(OWNER, "resp_none") is None
    assert await store.read_events(OWNER, "resp_none", -1, 0) is None
    assert await store.cancel_background(OWNER, "resp_none") is None
    assert await store.record_events(
        OWNER, "resp_none", events(0, 1), status="in_progress", lease=LEASE
    )
    await store.finish_background(OWNER, "resp_none", "completed", DONE)
    assert await store.get_background(OWNER, "resp_none") is None


async def test_other_owners_see_nothing(store: Store) -> None:
    await running(store)
    await store.record_events(OWNER, "resp_1", events(0, 1), status="in_progress", lease=LEASE)
    assert await store.get_background("intruder", "resp_1") is None
    assert await store.read_events("intruder", "resp_1", -1, 0) is None
    assert await store.cancel_background("intruder", "resp_1") is None
    assert await store.record_events(
        "intruder", "resp_1", events(1, 1), status="in_progress", lease=LEASE
    )
    await store.finish_background("intruder", "resp_1", "failed", DONE)
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.events, state.cancel_requested) == ("in_progress", 1, False)


# -- cancelling -------------------------------------------------------------------------
async def test_a_cancel_is_seen_by_the_next_record_events(store: Store) -> None:
    await running(store)
    await store.record_events(OWNER, "resp_1", events(0, 1), status="in_progress", lease=LEASE)
    state = await store.cancel_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.cancel_requested) == ("in_progress", True)
    stop = await store.record_events(
        OWNER, "resp_1", events(1, 1), status="in_progress", lease=LEASE
    )
    assert stop is True
    await store.finish_background(OWNER, "resp_1", "cancelled", DONE)
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.events) == ("cancelled", 2)


async def test_cancelling_a_finished_response_changes_nothing(store: Store) -> None:
    await running(store)
    await store.finish_background(OWNER, "resp_1", "completed", DONE, events(0, 1))
    before = await store.get_background(OWNER, "resp_1")
    assert before is not None
    assert await store.cancel_background(OWNER, "resp_1") == before
    assert not before.cancel_requested
    assert await store.get_background(OWNER, "resp_1") == before


async def test_a_finished_response_is_never_finished_again(store: Store) -> None:
    await running(store)
    await store.finish_background(OWNER, "resp_1", "cancelled", DONE, events(0, 1))
    await store.finish_background(OWNER, "resp_1", "completed", QUEUED, events(1, 1))
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert (state.status, state.response, state.events) == ("cancelled", DONE, 1)
    assert await store.read_events(OWNER, "resp_1", -1, 0) == (events(0, 1), True)


# -- a lost worker ----------------------------------------------------------------------
def ends_failed(read: tuple[list[bytes], bool] | None, state: BackgroundState) -> bool:
    """The read ends the stream with the lost worker's ``error`` and ``response.failed``,
    numbered on from the events before them, carrying the failed response."""
    assert read is not None
    events, finished = read
    decoded = [json.loads(event) for event in events[-2:]]
    assert [event["type"] for event in decoded] == ["error", "response.failed"]
    assert [event["sequence_number"] for event in decoded] == [state.events - 2, state.events - 1]
    assert decoded[0]["message"] == WORKER_LOST_MESSAGE
    assert json.dumps(decoded[1]["response"], sort_keys=True) == json.dumps(
        json.loads(state.response), sort_keys=True
    )
    return finished


def failed_as_lost(response: bytes) -> bool:
    value = msgspec.json.decode(response)
    return bool(
        value["status"] == "failed"
        and value["error"] == {"code": "server_error", "message": WORKER_LOST_MESSAGE}
        and value["id"] == "resp_1"
    )


async def test_a_response_whose_lease_ended_reads_as_failed_with_the_worker_lost(
    store: Store, time: Time
) -> None:
    await running(store, lease=TINY_LEASE)
    await time.lease_ends(store, "resp_1")
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert state.status == "failed"
    assert failed_as_lost(state.response)
    assert ends_failed(await store.read_events(OWNER, "resp_1", -1, 30), state)
    assert await store.get_background(OWNER, "resp_1") == state


async def test_a_reader_of_a_lost_worker_is_told_it_finished(store: Store, time: Time) -> None:
    await running(store, lease=TINY_LEASE)
    await time.lease_ends(store, "resp_1")
    read = await store.read_events(OWNER, "resp_1", -1, 30)
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert failed_as_lost(state.response)
    assert ends_failed(read, state)


async def test_two_replicas_finding_the_worker_lost_at_once_both_see_one_failure(
    store: Store, time: Time
) -> None:
    other = time.replica(store)
    await running(store, lease=TINY_LEASE)
    await time.lease_ends(store, "resp_1")
    seen = await asyncio.gather(
        store.get_background(OWNER, "resp_1"), other.get_background(OWNER, "resp_1")
    )
    assert seen[0] == seen[1]
    assert seen[0] is not None
    assert failed_as_lost(seen[0].response)


async def test_a_lost_worker_is_told_to_stop_and_its_late_finish_changes_nothing(
    store: Store, time: Time
) -> None:
    await running(store, lease=TINY_LEASE)
    await time.lease_ends(store, "resp_1")
    failed = await store.get_background(OWNER, "resp_1")
    assert failed is not None
    assert await store.record_events(
        OWNER, "resp_1", events(0, 1), status="in_progress", lease=LEASE
    )
    await store.finish_background(OWNER, "resp_1", "completed", DONE, events(0, 1))
    assert await store.get_background(OWNER, "resp_1") == failed
    assert ends_failed(await store.read_events(OWNER, "resp_1", -1, 0), failed)


async def test_cancelling_a_lost_worker_returns_the_failure(store: Store, time: Time) -> None:
    await running(store, lease=TINY_LEASE)
    await time.lease_ends(store, "resp_1")
    state = await store.cancel_background(OWNER, "resp_1")
    assert state is not None
    assert failed_as_lost(state.response)
    assert not state.cancel_requested


async def test_recording_renews_the_lease(store: Store, time: Time) -> None:
    await running(store, lease=TINY_LEASE)
    await store.record_events(OWNER, "resp_1", events(0, 1), status="in_progress", lease=LEASE)
    if isinstance(time, MemoryTime):
        time.clock.now += 1  # past the first lease, not the renewed one
    else:
        lease_key = keys(store, "resp_1")[2]
        assert await time.admin(lease_key).pttl(lease_key) > TINY_LEASE * 1000
    state = await store.get_background(OWNER, "resp_1")
    assert state is not None
    assert state.status == "in_progress"


# -- Redis only ---------------------------------------------------------------------------
@pytest.fixture
def redis_url(store_kind: str, redis_server: str) -> str:
    if store_kind != "redis":
        pytest.skip("about Redis only")
    return redis_server


async def test_each_background_call_is_one_round_trip(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore.from_url(redis_url, key_prefix=prefix, connection_class=CountingConnection)
    eight = events(0, 8)
    try:
        await running(store, "resp_0")  # the first run of each script loads it
        await store.record_events(OWNER, "resp_0", [], status="queued", lease=LEASE)
        await store.read_events(OWNER, "resp_0", -1, 0)
        await store.cancel_background(OWNER, "resp_0")
        await store.get_background(OWNER, "resp_0")
        await store.finish_background(OWNER, "resp_0", "cancelled", DONE)
        trips = [
            await round_trips(lambda: running(store)),
            await round_trips(
                lambda: store.record_events(OWNER, "resp_1", eight, status="queued", lease=LEASE)
            ),
            await round_trips(lambda: store.read_events(OWNER, "resp_1", 3, 30)),
            await round_trips(lambda: store.get_background(OWNER, "resp_1")),
            await round_trips(lambda: store.cancel_background(OWNER, "resp_1")),
            await round_trips(
                lambda: store.finish_background(OWNER, "resp_1", "cancelled", DONE, eight)
            ),
            await round_trips(lambda: store.read_events(OWNER, "resp_1", 9, 30)),
        ]
        await running(store, "resp_2")
        # nothing to read yet: the look, then one blocking read
        waiting = await round_trips(lambda: store.read_events(OWNER, "resp_2", -1, 0.01))
        await running(store, "resp_3", lease=TINY_LEASE)
        watcher = RedisTime(lambda **_: store, lambda _: redis_url)
        try:
            await watcher.expired(store, "resp_3")
        finally:
            await watcher.aclose()
        lost = await round_trips(lambda: store.get_background(OWNER, "resp_3"))
    finally:
        await store.aclose()
    assert trips == [1] * 7
    assert waiting == 2
    assert lost == 2  # finding the worker lost, then failing it (compare-and-set)


async def test_finished_events_live_event_ttl_and_the_state_ttl(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore.from_url(redis_url, key_prefix=prefix, ttl=3600, event_ttl=60)
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        await running(store)
        await store.record_events(OWNER, "resp_1", events(0, 1), status="in_progress", lease=LEASE)
        state_key, events_key, lease_key = keys(store, "resp_1")
        assert 60_000 < await admin.pttl(events_key) <= 3_600_000
        assert 0 < await admin.pttl(lease_key) <= LEASE * 1000
        await store.finish_background(OWNER, "resp_1", "completed", DONE)
        assert 0 < await admin.pttl(events_key) <= 60_000
        assert 60_000 < await admin.pttl(state_key) <= 3_600_000
        assert await admin.exists(lease_key) == 0
    finally:
        await store.aclose()
        await admin.aclose()


async def test_two_redis_replicas_race_to_fail_a_lost_worker_and_one_writes(
    redis_url: str, time: Time
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    first = RedisStore.from_url(redis_url, key_prefix=prefix)
    second = RedisStore.from_url(redis_url, key_prefix=prefix)
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        for store in (first, second):  # connected, scripts loaded
            await store.get_background(OWNER, "resp_0")
        await running(first, lease=TINY_LEASE)
        await time.lease_ends(first, "resp_1")
        before = (await admin.info("commandstats"))["cmdstat_evalsha"]["calls"]
        seen = await asyncio.gather(
            first.get_background(OWNER, "resp_1"), second.get_background(OWNER, "resp_1")
        )
        runs = (await admin.info("commandstats"))["cmdstat_evalsha"]["calls"] - before
        entries = await admin.xrange(keys(first, "resp_1")[1])
    finally:
        for store in (first, second):
            await store.aclose()
        await admin.aclose()
    assert runs == 4  # both read it unfinished and both tried to fail it...
    # ...one error, one response.failed and one end were written
    assert [entry_id for entry_id, _ in entries] == [b"0-1", b"0-2", b"1-0"]
    assert seen[0] == seen[1]
    assert seen[0] is not None
    assert failed_as_lost(seen[0].response)


async def test_blocking_reads_leave_connections_of_the_pool_for_other_calls(
    redis_url: str,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore.from_url(redis_url, key_prefix=prefix, max_connections=4)
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        await running(store)
        async with admin.monitor() as monitor:
            # As many readers as connections: half of them may block in Redis...
            readers = [
                asyncio.create_task(store.read_events(OWNER, "resp_1", -1, 30)) for _ in range(4)
            ]
            blocked = 0
            while blocked < 2:
                command = await soon(monitor.next_command(), "two blocking reads")
                blocked += command["command"].upper().startswith("XREAD")
            for _ in range(10):  # the others, with their look done, wait for their turn
                await asyncio.sleep(0)
            assert not any(reader.done() for reader in readers)
            # ...so the worker still gets a connection, and wakes them all.
            await store.record_events(OWNER, "resp_1", events(0, 1), status="queued", lease=LEASE)
            results = await soon(asyncio.gather(*readers), "the readers waking")
    finally:
        await store.aclose()
        await admin.aclose()
    assert results == [([event(0)], False)] * 4
