"""What only the Redis store has to prove, against a real ``redis-server``: constant
round trips, Redis-side sliding TTLs, whole-or-nothing chains and conversations, bytes
kept per conversation item, sharing between instances, failing fast while Redis is down,
Valkey clients, and the optional import.

The behaviour every store shares runs against Redis through the ``store_kind`` suite.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import msgspec
import pytest
import redis.asyncio
import valkey.asyncio
from redis.crc import key_slot

import state_middleware
from state_middleware import RedisStore, Store, StoreUnavailable, TurnRecord
from state_middleware._ids import (
    derived_from,
    derived_item_id,
    new_conversation_id,
    new_response_id,
    tree_of,
)
from state_middleware._record import ConversationRecord, record_item_ids
from state_middleware._store import ItemsMissing
from state_middleware._stores.redis_client import MISSING_EXTRA_MESSAGE

from ._redis import RedisServer, flush
from ._sync import soon

pytestmark = pytest.mark.anyio

OWNER = "owner"


def record(response_id: str, parent_id: str | None = None, size: int = 40) -> TurnRecord:
    return TurnRecord(
        id=response_id,
        parent_id=parent_id,
        created_at=1_700_000_000,
        input_items=b'[{"role":"user","content":"' + b"u" * size + b'"}]',
        output_items=b'[{"type":"message","content":"' + b"a" * size + b'"}]',
        response=b'{"id":"' + response_id.encode() + b'","object":"response"}',
    )


def item(item_id: str, text: str = "hi", role: str = "user") -> bytes:
    """A conversation item as the API stores it."""
    part = {"type": "output_text" if role == "assistant" else "input_text", "text": text}
    fields = {"type": "message", "id": item_id, "status": "completed", "role": role}
    return msgspec.json.encode({**fields, "content": [part]})


async def put_chain(store: Store, turns: int, name: str = "t") -> list[str]:
    ids = [f"{name}{n}" for n in range(turns)]
    parent = None
    for response_id in ids:
        await store.put(OWNER, record(response_id, parent))
        parent = response_id
    return ids


class CountingConnection(redis.asyncio.Connection):
    """A connection that counts the commands (or pipelines) it sends: round trips."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


class ConnectingConnection(redis.asyncio.Connection):
    """A connection that counts its attempts to open a socket."""

    attempts = 0

    async def _connect(self) -> None:
        ConnectingConnection.attempts += 1
        await super()._connect()


def watching_polls() -> tuple[type[redis.asyncio.Connection], asyncio.Queue[bytes]]:
    """A connection class that reports the key of every ``EXISTS`` it sends (how a
    store looks at a pending mark), and the queue it reports to."""
    polls: asyncio.Queue[bytes] = asyncio.Queue()

    class PollReportingConnection(redis.asyncio.Connection):
        async def send_command(self, *args: Any, **kwargs: Any) -> None:
            await super().send_command(*args, **kwargs)
            if str(args[0]).upper() == "EXISTS":
                polls.put_nowait(str(args[1]).encode())

    return PollReportingConnection, polls


def list_lengths(reply: Any) -> list[int]:
    """The length of every list in a reply, outermost first."""
    if not isinstance(reply, list):
        return []
    return [len(reply), *(length for part in reply for length in list_lengths(part))]


def counting_nested_replies() -> Any:
    """A connection class that records, for every list Redis answers with, the length
    of each list in it (``list_lengths``)."""

    class NestedReplyCountingConnection(CountingConnection):
        lengths: ClassVar[list[list[int]]] = []

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            response = await super().read_response(*args, **kwargs)
            if isinstance(response, list):
                NestedReplyCountingConnection.lengths.append(list_lengths(response))
            return response

    return NestedReplyCountingConnection


async def commands_run(admin: Any, action: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    """The commands Redis ran for ``action`` (those its scripts ran included): how many
    times each."""
    before = await admin.info("commandstats")
    await action()
    after = await admin.info("commandstats")
    ran = {
        name.removeprefix("cmdstat_"): stats["calls"] - before.get(name, {"calls": 0})["calls"]
        for name, stats in after.items()
    }
    return {name: calls for name, calls in ran.items() if calls and name != "info"}


async def round_trips(action: Callable[[], Awaitable[Any]]) -> int:
    before = CountingConnection.sent
    await action()
    return CountingConnection.sent - before


async def script_runs(admin: Any, action: Callable[[], Awaitable[Any]]) -> tuple[int, int]:
    """The round trips ``action`` takes, and how many scripts Redis ran for it."""
    before = (await admin.info("commandstats"))["cmdstat_evalsha"]["calls"]
    trips = await round_trips(action)
    after = (await admin.info("commandstats"))["cmdstat_evalsha"]["calls"]
    return trips, after - before


@pytest.fixture
def url(redis_server: str) -> str:
    flush(redis_server)
    return redis_server


@pytest.fixture
async def store(url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(url, key_prefix="t:")
    yield store
    await store.aclose()


@pytest.fixture
async def admin(url: str) -> AsyncIterator[Any]:
    """A plain client to look at (and tamper with) what the store wrote."""
    client = redis.asyncio.Redis.from_url(url)
    yield client
    await client.aclose()


async def tree_key(admin: Any) -> bytes:
    """The key of the one tree stored (every test id of another form than ours is in
    its owner's one tree)."""
    return await one_key(admin, "t:tree:*")


async def pending_key(admin: Any, response_id: str) -> bytes:
    keys = await admin.keys(f"t:pending:*:{response_id}")
    assert len(keys) == 1
    key: bytes = keys[0]
    return key


async def one_key(admin: Any, pattern: str) -> bytes:
    keys = await admin.keys(pattern)
    assert len(keys) == 1, pattern
    key: bytes = keys[0]
    return key


async def conversation_keys(admin: Any, conversation_id: str) -> list[bytes]:
    """The conversation's hash and its item list's key."""
    return [
        await one_key(admin, f"t:conversation:*:{conversation_id}"),
        await one_key(admin, f"t:conversation_items:*:{conversation_id}"),
    ]


async def item_keys(admin: Any, response_id: str) -> list[bytes]:
    """The pointer keys of a turn's item ids (ids derived from its own id need none)."""
    return [
        await one_key(admin, f"t:item:*:{item_id}")
        for item_id in record_item_ids(record(response_id))
        if derived_from(item_id) != response_id
    ]


async def start_conversation(store: Store, conversation_id: str, *items: Any) -> None:
    await store.create_conversation(OWNER, ConversationRecord(conversation_id, 0), items)


async def expired_key(pubsub: Any, key: bytes) -> None:
    """Return once Redis announces that ``key`` expired."""
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        if message is not None and message["data"] == key:
            return


async def test_a_redis_store_is_a_store(store: RedisStore) -> None:
    assert isinstance(store, Store)


async def test_loading_a_1000_turn_chain_takes_one_round_trip_like_a_10_turn_one(
    url: str, admin: Any
) -> None:
    writer = RedisStore.from_url(url, key_prefix="t:")
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=CountingConnection)
    try:
        await put_chain(writer, 10, "short")
        await put_chain(writer, 1000, "long")
        await store.get_chain(OWNER, "missing")  # the first run of a script loads it
        short = await round_trips(lambda: store.get_chain(OWNER, "short9"))
        long, runs = await script_runs(admin, lambda: store.get_chain(OWNER, "long999"))
        chain = await RedisStore.from_url(url, key_prefix="t:").get_chain(OWNER, "long999")
    finally:
        await store.aclose()
        await writer.aclose()
    assert short == long == 1  # a process that never saw the chain: one script walks it
    assert runs == 1
    assert chain is not None
    assert [r.id for r in chain] == [f"long{n}" for n in range(1000)]


async def test_a_process_holding_a_chain_asks_redis_only_whether_it_is_there(
    url: str, admin: Any
) -> None:
    """The Redis work of a turn does not grow with its chain: a process that has seen a
    chain gets no record back for it (only the ones it has not seen), whatever its
    length, on one script run."""
    replies = counting_nested_replies()
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=replies)
    other = RedisStore.from_url(url, key_prefix="t:")
    try:
        await put_chain(store, 10, "short")
        await put_chain(store, 1000, "long")
        sizes = {}
        for head in ("short9", "long999"):
            replies.lengths.clear()
            trips, runs = await script_runs(admin, lambda h=head: store.get_chain(OWNER, h))
            sizes[head] = (trips, runs, list(replies.lengths))
        await other.put(OWNER, record("long1000", "long999"))  # a turn stored elsewhere
        replies.lengths.clear()
        chain = await store.get_chain(OWNER, "long1000")
    finally:
        await store.aclose()
        await other.aclose()
    assert sizes["short9"] == sizes["long999"] == (1, 1, [[0]])
    assert replies.lengths == [[1]]  # only the record it had not seen
    assert chain is not None
    assert [r.id for r in chain] == [f"long{n}" for n in range(1001)]


async def test_storing_a_turn_takes_two_round_trips_whatever_the_chain_length(url: str) -> None:
    """One script stores the turn; then one pipeline points its item ids at it (each
    item key may live on another cluster node)."""
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=CountingConnection)
    try:
        await put_chain(store, 10, "short")
        await put_chain(store, 1000, "long")
        short = await round_trips(lambda: store.put(OWNER, record("next-short", "short9")))
        long = await round_trips(lambda: store.put(OWNER, record("next-long", "long999")))
    finally:
        await store.aclose()
    assert short == long == 2


async def test_a_tree_is_one_hash_and_each_turn_holds_only_its_own_items(
    store: RedisStore, admin: Any
) -> None:
    await put_chain(store, 3)
    key = await tree_key(admin)
    for item_key in await admin.keys("t:item:*"):  # one per item id, naming the turn only
        assert (await admin.get(item_key)).startswith(b"@t")
    fields = await admin.hgetall(key)
    assert fields[b"p:t2"] == b"t1"
    assert fields[b"c:t2"] == b"0"
    assert fields[b"c:t1"] == b"1"
    assert b"d:t2" not in fields
    assert len(fields[b"r:t2"]) < 2 * record("t2").size  # not the whole history


async def test_trees_spread_over_slots_and_a_tree_stays_in_one(
    store: RedisStore, admin: Any
) -> None:
    roots = [new_response_id() for _ in range(64)]
    for root in roots:
        await store.put(OWNER, record(root))
        child = new_response_id(tree_of(root))
        await store.put(OWNER, record(child, root))
        await store.begin(OWNER, child)
        await store.remember(OWNER, {child: b"note"})
    trees = await admin.keys("t:tree:*")
    assert len(trees) == 64  # a child joins its parent's tree
    slots = {key_slot(key) for key in trees}
    assert len(slots) > 48  # spread (64 random tags: about 64 distinct slots)
    for key in await admin.keys("t:pending:*"):  # a turn's keys share its tree's slot
        assert key_slot(key) in slots
    assert len({key_slot(key) for key in await admin.keys("t:note:*")}) == 1


async def test_loading_a_chain_slides_its_trees_ttl(store: RedisStore, admin: Any) -> None:
    store.ttl = 60.0
    await put_chain(store, 3)
    key = await tree_key(admin)
    await admin.pexpire(key, 1000)  # as if aged
    assert await store.get_chain(OWNER, "t2") is not None
    assert await admin.pttl(key) > 55_000


async def test_storing_a_turn_slides_its_trees_ttl(store: RedisStore, admin: Any) -> None:
    store.ttl = 60.0
    await put_chain(store, 3)
    key = await tree_key(admin)
    await admin.pexpire(key, 1000)
    await store.put(OWNER, record("t3", "t2"))
    assert await admin.pttl(key) > 55_000


async def test_turns_expire_on_redis_own_clock(url: str, admin: Any) -> None:
    store = RedisStore.from_url(url, key_prefix="t:", ttl=0.5)
    await admin.config_set("notify-keyspace-events", "Ex")  # announce expiries
    try:
        async with admin.pubsub() as pubsub:
            await pubsub.subscribe("__keyevent@0__:expired")
            await store.put(OWNER, record("a"))
            key = await tree_key(admin)
            assert 0 < await admin.pttl(key) <= 500
            assert await store.get(OWNER, "a") is not None
            await soon(expired_key(pubsub, key), "Redis expiring the turn on its own")
        assert await store.get(OWNER, "a") is None  # held by the process, gone in Redis
        assert await store.get_chain(OWNER, "a") is None
    finally:
        await admin.config_set("notify-keyspace-events", "")
        await store.aclose()


async def test_a_chain_missing_any_ancestor_is_not_replayed_at_all(
    store: RedisStore, admin: Any, url: str
) -> None:
    await put_chain(store, 5)
    await admin.hdel(await tree_key(admin), "r:t2")  # lost behind the store's back
    fresh = RedisStore.from_url(url, key_prefix="t:")
    try:
        assert await fresh.get_chain(OWNER, "t4") is None
        assert await fresh.get_chain(OWNER, "t1") is not None
        assert await fresh.get(OWNER, "t4") is not None  # the turn itself is still there
    finally:
        await fresh.aclose()
    chain = await store.get_chain(OWNER, "t4")  # the process that holds it: all of it
    assert chain is not None
    assert [r.id for r in chain] == ["t0", "t1", "t2", "t3", "t4"]


async def test_a_turn_stored_after_its_parent_was_gone_is_never_continued(
    store: RedisStore, admin: Any
) -> None:
    await put_chain(store, 2)
    await admin.delete(await tree_key(admin))  # the tree expired while t2 ran
    await store.put(OWNER, record("t2", "t1"))
    assert await store.get(OWNER, "t2") is not None
    assert await store.get_chain(OWNER, "t2") is None  # t0 and t1 are gone from Redis


async def test_deleting_the_last_descendant_frees_every_tombstone(
    store: RedisStore, admin: Any
) -> None:
    await put_chain(store, 3)
    key = await tree_key(admin)
    assert await store.delete(OWNER, "t1") is True
    assert await admin.hexists(key, "r:t1")  # t1 stays for t2
    assert await store.delete(OWNER, "t2") is True
    assert sorted(await admin.hkeys(key)) == [b"c:t0", b"r:t0"]  # t2 and t1 are gone
    assert await store.get(OWNER, "t0") is not None


async def test_loading_a_1000_item_conversation_takes_the_round_trips_of_a_10_item_one(
    url: str, admin: Any
) -> None:
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=CountingConnection)
    try:
        for name, turns in (("short", 5), ("long", 500)):
            await start_conversation(store, name)
            for n in range(turns):  # two items each
                await store.put(OWNER, record(f"{name}{n}"), conversation=name)
        await store.conversation_items(OWNER, "missing")  # the first run of a script loads it
        short = await round_trips(lambda: store.conversation_items(OWNER, "short"))
        long, runs = await script_runs(admin, lambda: store.conversation_items(OWNER, "long"))
        items = await store.conversation_items(OWNER, "long")
        ids = [item_id for item_id, _ in items or []]
        await store.get_items(OWNER, ["warm"])
        found = await round_trips(lambda: store.get_items(OWNER, ids))
    finally:
        await store.aclose()
    assert short == long == 1
    assert runs == 1  # one script run, reading the 1000 items inside Redis
    assert found == 2  # the 1000 pointer keys in one pipeline, then a script per tree
    assert ids == [i for n in range(500) for i in record_item_ids(record(f"long{n}"))]


async def test_a_process_holding_a_conversation_gets_back_only_what_was_appended_since(
    url: str, admin: Any
) -> None:
    """The Redis work of loading a conversation a process has loaded before does not
    grow with the conversation: one script running the same commands for 10 items as
    for 1000, whose reply holds only the items appended since (here by another
    process)."""
    replies = counting_nested_replies()
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=replies)
    other = RedisStore.from_url(url, key_prefix="t:")
    fresh = RedisStore.from_url(url, key_prefix="t:")

    async def load(name: str) -> tuple[int, list[list[int]], dict[str, int]]:
        """The round trips of a load, the lists in Redis' replies, the commands run."""
        replies.lengths.clear()
        sent = CountingConnection.sent
        commands = await commands_run(admin, lambda: store.conversation_items(OWNER, name))
        return CountingConnection.sent - sent, list(replies.lengths), commands

    try:
        for name, count in (("short", 10), ("long", 1000)):
            added = [(f"msg_{name}{n}", item(f"msg_{name}{n}")) for n in range(count)]
            await start_conversation(other, name, *added)
        first = {name: await load(name) for name in ("short", "long")}
        again = {name: await load(name) for name in ("short", "long")}
        await other.put(OWNER, record("r"), conversation="long")
        await other.add_items(OWNER, "long", [("msg_new", item("msg_new"))])
        appended = await load("long")
        items = await store.conversation_items(OWNER, "long")
        whole = await fresh.conversation_items(OWNER, "long")
    finally:
        for each in (store, other, fresh):
            await each.aclose()
    # {mark, where its ids start, ids, their values, the records they name, refresh}
    assert first["long"][1] == [[6, 1000, 1000, 0, 0]]  # never seen: all of it, once
    assert again["short"][:2] == again["long"][:2] == (1, [[6, 0, 0, 0, 0]])
    short, long = again["short"][2], again["long"][2]
    for commands in (short, long):  # a TTL extended is set again if a millisecond went by
        assert 2 <= commands.pop("pexpire") <= 3
    assert short == long  # the same commands, whatever the length
    assert again["long"][2]["evalsha"] == again["long"][2]["lrange"] == 1
    assert appended[:2] == (1, [[6, 3, 3, 2, 0]])  # the turn's two items and its record
    assert items == whole
    assert [item_id for item_id, _ in whole or []] == [
        *(f"msg_long{n}" for n in range(1000)),
        *record_item_ids(record("r")),
        "msg_new",
    ]


async def test_using_a_1000_item_conversation_takes_a_few_round_trips(url: str) -> None:
    """A script on the conversation's slot; a pipeline after it to write the pointer
    keys of what it added (they may live on other cluster nodes); adding an item by id
    looks it up first (``get_items``: two)."""
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=CountingConnection)
    try:
        await start_conversation(store, "c", *((f"msg_{n}", item(f"msg_{n}")) for n in range(1000)))
        await store.put(OWNER, record("warm"), conversation="c")
        for warm in (  # the first run of each script loads it
            store.add_items(OWNER, "c", []),
            store.remove_item(OWNER, "c", "msg_none"),
            store.get_conversation(OWNER, "c"),
            store.lock_conversation(OWNER, "c", "warm", 5.0),
            store.unlock_conversation(OWNER, "c", "warm"),
        ):
            await warm
        turn = await round_trips(lambda: store.put(OWNER, record("r"), conversation="c"))
        added = await round_trips(lambda: store.add_items(OWNER, "c", [("msg_new", item("m"))]))
        attached = await round_trips(lambda: store.add_items(OWNER, "c", [("msg_0", None)]))
        removed = await round_trips(lambda: store.remove_item(OWNER, "c", "msg_0"))
        read = await round_trips(lambda: store.get_conversation(OWNER, "c"))
        locked = await round_trips(lambda: store.lock_conversation(OWNER, "c", "token", 5.0))
        unlocked = await round_trips(lambda: store.unlock_conversation(OWNER, "c", "token"))
    finally:
        await store.aclose()
    assert turn == added == 2
    assert attached == 4
    assert removed == read == locked == unlocked == 1


async def test_appending_touches_only_what_it_appends_until_a_refresh_is_due(
    store: RedisStore, admin: Any
) -> None:
    store.ttl = store.conversation_ttl = 60.0
    await start_conversation(store, "c", ("msg_a", item("msg_a")), ("msg_b", item("msg_b")))
    aged = [await one_key(admin, "t:item:*:msg_a"), await one_key(admin, "t:item:*:msg_b")]
    for key in aged:
        await admin.pexpire(key, 1000)
    assert await store.add_items(OWNER, "c", [("msg_c", item("msg_c"))]) is True
    for key in aged:  # refreshed when created, less than ttl / 64 ago: not walked again
        assert await admin.pttl(key) <= 1000
    conversation, _ = await conversation_keys(admin, "c")
    await admin.hset(conversation, "refreshed", 0)  # as if refreshed long ago
    assert await store.add_items(OWNER, "c", [("msg_d", item("msg_d"))]) is True
    for key in aged:
        assert await admin.pttl(key) > 59_000


async def test_a_conversation_slides_and_what_it_names_outlives_it(url: str, admin: Any) -> None:
    store = RedisStore.from_url(url, key_prefix="t:", ttl=60.0, conversation_ttl=600.0)
    try:
        await start_conversation(store, "c", ("msg_x", item("msg_x")))
        await store.put(OWNER, record("r"), conversation="c")
        talk = await conversation_keys(admin, "c")
        tree = await tree_key(admin)
        pointers = [await one_key(admin, "t:item:*:msg_x"), *await item_keys(admin, "r")]
        for key in talk:
            assert 590_000 < await admin.pttl(key) <= 600_000
        for key in [tree, *pointers]:
            assert await admin.pttl(key) > 600_000  # a refresh interval more than it
        for key in [*talk, tree, *pointers]:
            await admin.pexpire(key, 1000)  # as if aged
        assert await store.conversation_items(OWNER, "c") is not None
        for key in talk:
            assert await admin.pttl(key) > 590_000
        assert await admin.pttl(tree) > 600_000  # extended on every use
        for key in pointers:  # refreshed less than ttl / 64 ago: not walked again
            assert await admin.pttl(key) <= 1000
        await admin.hset(talk[0], "refreshed", 0)  # as if refreshed long ago
        assert await store.conversation_items(OWNER, "c") is not None
        for key in pointers:
            assert await admin.pttl(key) > 600_000
        for key in [*talk, tree]:
            await admin.pexpire(key, 1000)
        assert await store.conversation_items(OWNER, "c") is not None  # held: read nothing
        for key in talk:
            assert await admin.pttl(key) > 590_000  # and slid all the same
        assert await admin.pttl(tree) > 600_000
        assert await store.get_chain(OWNER, "r") is not None  # slides by ttl: never shortens
        assert await admin.pttl(tree) > 600_000
    finally:
        await store.aclose()


async def test_conversation_ttl_defaults_to_the_store_ttl(url: str, admin: Any) -> None:
    store = RedisStore.from_url(url, key_prefix="t:", ttl=60.0)
    try:
        assert store.conversation_ttl == 60.0
        await start_conversation(store, "c", ("msg_x", item("msg_x")))
        for key in await conversation_keys(admin, "c"):
            assert 55_000 < await admin.pttl(key) <= 60_000
    finally:
        await store.aclose()


async def test_a_conversation_without_ttl_persists_with_everything_it_names(
    url: str, admin: Any
) -> None:
    store = RedisStore.from_url(url, key_prefix="t:", ttl=60.0, conversation_ttl=None)
    conversation = new_conversation_id()
    plain, attached = new_response_id(), new_response_id()
    inside = new_response_id(tree_of(conversation))
    try:
        await store.put(OWNER, record(plain))
        await store.put(OWNER, record(attached))
        attached_id = record_item_ids(record(attached))[0]
        await start_conversation(store, conversation, ("msg_x", item("msg_x")), (attached_id, None))
        await store.put(OWNER, record(inside), conversation=conversation)
        await store.get_chain(OWNER, inside)  # sliding by ttl leaves it persistent
        persistent = [
            *await conversation_keys(admin, conversation),
            await one_key(admin, "t:item:*:msg_x"),
            await one_key(admin, f"t:item:*:{attached_id}"),  # its copy in the conversation
            await one_key(admin, f"t:tree:*.{tree_of(conversation)}}}"),
        ]
        for key in persistent:
            assert await admin.pttl(key) == -1, key
        for response_id in (plain, attached):  # the attached item was copied
            key = await one_key(admin, f"t:tree:*.{tree_of(response_id)}}}")
            assert 0 < await admin.pttl(key) <= 60_000, key
        await admin.delete(await one_key(admin, f"t:tree:*.{tree_of(attached)}}}"))  # expired
        assert await store.get_items(OWNER, [attached_id]) != {}
        assert await store.conversation_items(OWNER, conversation) is not None
    finally:
        await store.aclose()


async def test_a_conversation_lock_lasts_its_lease_in_redis(store: RedisStore, admin: Any) -> None:
    assert await store.lock_conversation(OWNER, "c", "one", 30.0) is True
    key = await one_key(admin, "t:lock:*:c")
    assert 29_000 < await admin.pttl(key) <= 30_000  # Redis drops it when the lease ends
    assert await store.lock_conversation(OWNER, "c", "one", 60.0) is True  # renewed
    assert await admin.pttl(key) > 59_000
    await store.unlock_conversation(OWNER, "c", "one")
    assert not await admin.exists(key)


async def test_a_conversation_missing_any_item_is_not_loaded_at_all(
    store: RedisStore, admin: Any, url: str
) -> None:
    await start_conversation(store, "c", ("msg_x", item("msg_x")))
    await store.put(OWNER, record("r"), conversation="c")
    tree = await tree_key(admin)
    await admin.hdel(tree, "i:msg_x")  # gone behind its back
    with pytest.raises(ItemsMissing):
        await store.conversation_items(OWNER, "c")
    assert await store.remove_item(OWNER, "c", "msg_x") is True
    assert await store.conversation_items(OWNER, "c") is not None
    await admin.hdel(tree, "r:r")  # one field: Redis itself only ever drops a tree whole
    assert await store.conversation_items(OWNER, "c") is not None  # what it holds: all
    fresh = RedisStore.from_url(url, key_prefix="t:")
    try:
        with pytest.raises(ItemsMissing):
            await fresh.conversation_items(OWNER, "c")
    finally:
        await fresh.aclose()
    with pytest.raises(ItemsMissing):  # once one process found it missing, none trusts
        await store.conversation_items(OWNER, "c")  # what it holds
    with pytest.raises(ItemsMissing):  # an id pointing into a turn that is gone
        await store.add_items(OWNER, "c", [(record_item_ids(record("r"))[0], None)])


async def test_a_conversation_is_whole_in_its_trees_slot(url: str, admin: Any) -> None:
    """Its hash, list, lock and tree share one slot (the conversation id's tree); the
    pointer keys of its items are spread, and items of several trees are found in two
    round trips."""
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=CountingConnection)
    conversation = new_conversation_id()
    elsewhere = [new_response_id() for _ in range(3)]
    try:
        for response_id in elsewhere:
            await store.put(OWNER, record(response_id))
        added = [(f"msg_{n}", item(f"msg_{n}")) for n in range(16)]
        await start_conversation(store, conversation, *added)
        await store.put(
            OWNER, record(new_response_id(tree_of(conversation))), conversation=conversation
        )
        await store.lock_conversation(OWNER, conversation, "token", 5.0)
        ids = [
            item_id for response_id in elsewhere for item_id in record_item_ids(record(response_id))
        ]
        await store.get_items(OWNER, ["warm"])
        trips = await round_trips(lambda: store.get_items(OWNER, [*ids, "msg_0"]))
        found = await store.get_items(OWNER, [*ids, "msg_0"])
    finally:
        await store.aclose()
    together = [
        *await conversation_keys(admin, conversation),
        await one_key(admin, f"t:lock:*:{conversation}"),
        await one_key(admin, f"t:tree:*.{tree_of(conversation)}}}"),
    ]
    assert len({key_slot(key) for key in together}) == 1
    pointers = [await one_key(admin, f"t:item:*:{item_id}") for item_id, _ in added]
    assert len({key_slot(key) for key in pointers}) > 8  # 16 keys without a hash tag
    assert trips == 2  # the pointer keys, then a script per tree (four trees here)
    assert set(found) == {*ids, "msg_0"}


async def test_deleting_a_conversation_without_ttl_gives_what_it_named_the_ttl(
    url: str, admin: Any
) -> None:
    store = RedisStore.from_url(url, key_prefix="t:", ttl=60.0, conversation_ttl=None)
    conversation, other = new_conversation_id(), new_conversation_id()
    turn = new_response_id(tree_of(conversation))
    try:
        await start_conversation(store, conversation, ("msg_x", item("msg_x")))
        await store.put(OWNER, record(turn), conversation=conversation)
        await start_conversation(store, other, ("msg_y", item("msg_y")))
        await store.add_items(OWNER, conversation, [("msg_y", None)])  # other's pointer now
        await start_conversation(store, other, ("msg_y", item("msg_y")))  # and back
        tree = await one_key(admin, f"t:tree:*.{tree_of(conversation)}}}")
        assert await admin.pttl(tree) == -1
        assert await store.delete_conversation(OWNER, conversation) is True
        assert 0 < await admin.pttl(tree) <= 60_000
        assert 0 < await admin.pttl(await one_key(admin, "t:item:*:msg_x")) <= 60_000
        assert await admin.pttl(await one_key(admin, "t:item:*:msg_y")) == -1  # not its own
        found = await store.get_items(OWNER, ["msg_x", *record_item_ids(record(turn))])
        assert len(found) == 3  # still found by id, for ttl
    finally:
        await store.aclose()


async def test_deleting_responses_nothing_needs_leaves_no_key_behind(
    store: RedisStore, admin: Any
) -> None:
    await put_chain(store, 3)
    assert len(await admin.keys("t:item:*")) == 6
    assert await store.delete(OWNER, "t1") is True
    assert len(await admin.keys("t:item:*")) == 6  # t1 stays for t2, so do its items
    assert await store.delete(OWNER, "t2") is True
    assert await store.delete(OWNER, "t0") is True
    assert await admin.keys("t:*") == []


async def test_a_conversation_stores_its_items_once(url: str, admin: Any) -> None:
    """Realistic ids and items of a few hundred bytes, the default key prefix: the bytes
    of every key involved (its name and values), and what Redis reports it uses for
    them, against the bytes of the items."""
    store = RedisStore.from_url(url)
    try:
        conversation = new_conversation_id()
        added = []
        for _ in range(10):
            item_id = "msg_" + secrets.token_hex(24)
            added.append((item_id, item(item_id, "question " * 30)))
        await start_conversation(store, conversation, *added)
        for _ in range(20):
            response_id = new_response_id(tree_of(conversation))
            reply = item("msg_" + secrets.token_hex(24), "answer " * 60, "assistant")
            await store.put(
                OWNER,
                TurnRecord(
                    id=response_id,
                    parent_id=None,
                    created_at=1_700_000_000,
                    input_items=msgspec.json.encode([{"role": "user", "content": "ask " * 75}]),
                    output_items=b"[" + reply + b"]",
                    response=b"{}",  # the response object is the response's, not the items'
                ),
                conversation=conversation,
            )
        items = await store.conversation_items(OWNER, conversation)
        assert items is not None
        item_bytes = sum(len(value) for _, value in items)
        memory = held = names = 0
        for key in await admin.keys("*"):
            memory += await admin.memory_usage(key, samples=0)
            held += len(key)
            kind = await admin.type(key)
            if kind == b"string":
                held += await admin.strlen(key)
            elif kind == b"hash":
                fields = await admin.hgetall(key)
                held += sum(len(value) for value in fields.values())
                names += sum(len(field) for field in fields)
            else:
                held += sum(len(value) for value in await admin.lrange(key, 0, -1))
    finally:
        await store.aclose()
    assert 350 < item_bytes / len(items) < 700
    # Each item once; its id in the list, in its pointer key's name and (but for a
    # derived id) in an i: field's name: measured 1.34 without the hash field names...
    assert held / item_bytes <= 1.5
    # ...which carry ids too in a tree (r:, c:, k: of each turn, i: of each item it
    # names): measured 1.54 with them (the layout of one key per turn measured 1.47).
    assert (held + names) / item_bytes <= 1.6
    # Redis' own bookkeeping (object headers, dict entries, allocator rounding) adds
    # about 100 bytes to each key, and there is a key per item id that does not say
    # where it is: measured 1.85 here.
    assert memory / item_bytes <= 2.0


async def test_notes_are_kept_per_owner_for_the_ttl_and_only_found_ones_come_back(
    store: RedisStore, admin: Any
) -> None:
    store.ttl = 60.0
    await store.remember(OWNER, {"call_1": b"thinking", "call_2": b"more"})
    assert await store.recall(OWNER, ["call_1", "call_3"]) == {"call_1": b"thinking"}
    assert await store.recall("someone else", ["call_1"]) == {}
    keys = await admin.keys("t:note:*")
    assert len(keys) == 2
    for key in keys:
        assert 55_000 < await admin.pttl(key) <= 60_000


async def test_owners_never_collide_whatever_their_names(store: RedisStore) -> None:
    await store.put("a:b", record("c"))
    assert await store.get("a", "b:c") is None
    assert await store.get("a:b", "c") is not None


async def test_another_instance_on_the_same_server_sees_everything(
    store: RedisStore, url: str
) -> None:
    await put_chain(store, 3)
    await store.delete(OWNER, "t0")
    other = RedisStore.from_url(url, key_prefix="t:")
    try:
        chain = await other.get_chain(OWNER, "t2")
        assert chain is not None
        assert [r.id for r in chain] == ["t0", "t1", "t2"]
        assert await other.get(OWNER, "t0") is None
        assert await other.get(OWNER, "t2") == record("t2", "t1")
    finally:
        await other.aclose()


async def test_a_key_prefix_keeps_stores_apart(store: RedisStore, url: str) -> None:
    await store.put(OWNER, record("a"))
    other = RedisStore.from_url(url, key_prefix="elsewhere:")
    try:
        assert await other.get(OWNER, "a") is None
    finally:
        await other.aclose()


async def test_a_turn_begun_elsewhere_is_waited_for_until_it_ends(url: str, admin: Any) -> None:
    connection_class, polls = watching_polls()
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=connection_class)
    other = RedisStore.from_url(url, key_prefix="t:")
    try:
        await other.begin(OWNER, "a")
        key = await pending_key(admin, "a")
        waiter = asyncio.ensure_future(store.wait(OWNER, "a", 3600.0))
        assert await soon(polls.get(), "the waiter looking at the mark") == key
        assert await soon(polls.get(), "the waiter looking again") == key
        assert not waiter.done()  # it saw the mark twice, and the turn has not ended
        await other.end(OWNER, "a")
        assert await soon(waiter, "the waiter returning once the turn ended") is True
        assert await soon(store.wait(OWNER, "a", 3600.0), "a wait without a mark") is False
    finally:
        await store.aclose()
        await other.aclose()


async def test_a_crashed_producer_blocks_followers_only_for_pending_ttl(
    url: str, admin: Any
) -> None:
    crashed = RedisStore.from_url(url, key_prefix="t:", pending_ttl=0.5)
    follower = RedisStore.from_url(url, key_prefix="t:")
    try:
        await crashed.begin(OWNER, "a")  # and never ends
        key = await pending_key(admin, "a")
        assert 0 < await admin.pttl(key) <= 500
        waited = follower.wait(OWNER, "a", 3600.0)
        assert await soon(waited, "the follower going on once Redis dropped the mark") is True
        assert not await admin.exists(key)
    finally:
        await crashed.aclose()
        await follower.aclose()


async def test_waiting_gives_up_after_the_timeout(url: str, admin: Any) -> None:
    connection_class, polls = watching_polls()
    store = RedisStore.from_url(url, key_prefix="t:", connection_class=connection_class)
    try:
        await store.begin(OWNER, "a")  # pending_ttl is 300 s: the mark outlives the test
        assert await soon(store.wait(OWNER, "a", 0.1), "the wait giving up") is True
        assert polls.qsize() >= 2  # it looked again before giving up...
        assert await admin.exists(await pending_key(admin, "a"))  # ...and the turn is on
    finally:
        await store.aclose()


CALLS: dict[str, Callable[[Store], Awaitable[Any]]] = {
    "put": lambda s: s.put(OWNER, record("b", "a")),
    "get": lambda s: s.get(OWNER, "a"),
    "get_chain": lambda s: s.get_chain(OWNER, "a"),
    "delete": lambda s: s.delete(OWNER, "a"),
    "begin": lambda s: s.begin(OWNER, "a"),
    "end": lambda s: s.end(OWNER, "a"),
    "wait": lambda s: s.wait(OWNER, "a", 5.0),
    "remember": lambda s: s.remember(OWNER, {"call": b"note"}),
    "recall": lambda s: s.recall(OWNER, ["call"]),
    "get_items": lambda s: s.get_items(OWNER, ["msg_a"]),
    "create_conversation": lambda s: s.create_conversation(OWNER, ConversationRecord("c", 0), []),
    "get_conversation": lambda s: s.get_conversation(OWNER, "c"),
    "update_conversation": lambda s: s.update_conversation(OWNER, "c", b"{}"),
    "delete_conversation": lambda s: s.delete_conversation(OWNER, "c"),
    "conversation_items": lambda s: s.conversation_items(OWNER, "c"),
    "add_items": lambda s: s.add_items(OWNER, "c", [("msg_a", None)]),
    "remove_item": lambda s: s.remove_item(OWNER, "c", "msg_a"),
    "lock_conversation": lambda s: s.lock_conversation(OWNER, "c", "token", 5.0),
    "unlock_conversation": lambda s: s.unlock_conversation(OWNER, "c", "token"),
}


async def test_every_method_fails_fast_while_redis_is_down_and_recovers() -> None:
    with RedisServer() as server:
        store = RedisStore.from_url(
            server.url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            connection_class=ConnectingConnection,
        )
        try:
            await store.put(OWNER, record("a"))
            server.stop()
            for name, call in CALLS.items():
                before = ConnectingConnection.attempts
                with pytest.raises(StoreUnavailable) as caught:
                    await soon(call(store), f"{name} failing")
                # No retry loop: one attempt and the one immediate reconnect at most.
                assert ConnectingConnection.attempts - before <= 2, name
                assert caught.value.code == "store_unavailable"
            server.start()  # same port, empty: Redis kept nothing
            assert await store.get(OWNER, "a") is None
            await store.put(OWNER, record("a"))
            assert await store.get_chain(OWNER, "a") is not None
        finally:
            await store.aclose()


async def test_a_frozen_redis_fails_within_the_socket_timeout() -> None:
    with RedisServer() as server:
        store = RedisStore.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            await store.put(OWNER, record("a"))
            server.pause()
            try:
                with pytest.raises(StoreUnavailable) as caught:
                    await soon(store.get_chain(OWNER, "a"), "get_chain failing")
                # It gave up because the socket timed out, not for any other reason.
                assert isinstance(caught.value.__cause__, redis.exceptions.TimeoutError)
            finally:
                server.resume()
            assert await store.get_chain(OWNER, "a") is not None
        finally:
            await store.aclose()


async def test_a_valkey_client_works_too(url: str) -> None:
    client = valkey.asyncio.Valkey.from_url(url)
    try:
        store = RedisStore(client, key_prefix="v:")
        await put_chain(store, 3)
        chain = await store.get_chain(OWNER, "t2")
        assert chain is not None
        assert [r.id for r in chain] == ["t0", "t1", "t2"]
        assert await store.delete(OWNER, "t1") is True
        assert await store.get(OWNER, "t1") is None
        await store.begin(OWNER, "x")
        assert await store.wait(OWNER, "x", 0.05) is True
        await store.end(OWNER, "x")
        await store.remember(OWNER, {"call": b"note"})
        assert await store.recall(OWNER, ["call", "other"]) == {"call": b"note"}
        await start_conversation(store, "c", ("msg_x", item("msg_x")))
        await store.put(OWNER, record("r"), conversation="c")
        items = await store.conversation_items(OWNER, "c")
        assert [item_id for item_id, _ in items or []] == ["msg_x", *record_item_ids(record("r"))]
        assert await store.lock_conversation(OWNER, "c", "token", 5.0) is True
        await store.aclose()  # the client is the caller's: still usable
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_valkey_client_fails_fast_too() -> None:
    with RedisServer() as server:
        url = server.url
    client = valkey.asyncio.Valkey.from_url(url, socket_connect_timeout=0.5)
    try:
        store = RedisStore(client)
        with pytest.raises(StoreUnavailable):
            await store.get_chain(OWNER, "a")
    finally:
        await client.aclose()


async def test_a_client_decoding_responses_is_refused(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStore(client)
    finally:
        await client.aclose()


@pytest.mark.parametrize("keyword", ["ttl", "conversation_ttl", "pending_ttl"])
async def test_non_positive_ttls_are_refused(url: str, keyword: str) -> None:
    options: dict[str, Any] = {keyword: 0}
    with pytest.raises(ValueError, match="positive"):
        RedisStore.from_url(url, **options)


def test_one_store_serves_one_event_loop_after_another(redis_server: str) -> None:
    """Connections belong to the loop that opened them: each loop gets its own client,
    closed when that loop ends (no connection is left open, no warning is raised)."""
    flush(redis_server)
    store = RedisStore.from_url(redis_server, key_prefix="t:")

    async def clients() -> int:
        async with redis.asyncio.Redis.from_url(redis_server) as admin:
            info = await admin.info("clients")
            return int(info["connected_clients"]) - 1

    asyncio.run(store.put(OWNER, record("a")))
    assert asyncio.run(store.get(OWNER, "a")) is not None
    assert asyncio.run(store.get_chain(OWNER, "a")) is not None
    gc.collect()
    assert asyncio.run(clients()) == 0


def test_the_package_imports_without_redis_and_names_the_extra_on_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(sys.modules):
        if name == "redis" or name.startswith("redis."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "state_middleware._stores.redis")
    monkeypatch.setattr(state_middleware._stores, "redis", state_middleware._stores.redis)
    fresh = importlib.import_module("state_middleware._stores.redis")
    assert state_middleware.RedisStore is fresh.RedisStore
    with pytest.raises(ImportError, match=r'pip install "state-middleware\[redis\]"') as caught:
        fresh.RedisStore.from_url("redis://127.0.0.1:1/0")
    assert str(caught.value) == MISSING_EXTRA_MESSAGE


async def test_items_sent_without_ids_need_no_item_key(store: RedisStore, admin: Any) -> None:
    response_id = new_response_id()
    user = msgspec.json.encode([{"role": "user", "content": "no id"}])
    answer = msgspec.json.encode([{"type": "message", "id": "msg_up_1", "role": "assistant"}])
    await store.put("o", TurnRecord(response_id, None, 0, user, answer, b"{}"))
    keys = {key.decode().rsplit(":", 1)[-1] for key in await admin.keys("t:item:*")}
    assert keys == {"msg_up_1"}  # the input's derived id says where it is
    derived = derived_item_id(response_id, 0, "message")
    found = await store.get_items("o", [derived, "msg_up_1"])
    assert set(found) == {derived, "msg_up_1"}
    assert msgspec.json.decode(found[derived])["content"][0]["text"] == "no id"
