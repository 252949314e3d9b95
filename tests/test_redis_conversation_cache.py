"""What a ``RedisStore`` process holds of the conversations it has loaded: nothing that
another process does to a conversation (appending, removing an item, deleting it and
creating it again), and nothing lost behind the store's back, makes it answer a wrong or
partial conversation. Two stores sharing a key prefix stand for two middleware replicas,
on one ``redis-server`` and on the six-node cluster (redis-py and valkey-py clients).

How little a load of a held conversation costs is measured in ``test_redis_store.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio
import redis.asyncio.cluster

from state_middleware import RedisStore, TurnRecord
from state_middleware._ids import new_conversation_id, new_response_id, tree_of
from state_middleware._record import ConversationRecord, record_item_ids
from state_middleware._store import ItemsMissing
from state_middleware._stores.redis_client import owner_digest
from state_middleware._stores.redis_conversation_cache import (
    PER_ITEM,
    ConversationCache,
    HeldConversation,
)

from .test_redis_store import item, record

pytestmark = pytest.mark.anyio

OWNER = "owner"


@dataclass
class Replicas:
    """Two stores on the same Redis and key prefix, and a plain client to look at (and
    tamper with) what they wrote."""

    holder: RedisStore  # loads the conversation, and holds it
    other: RedisStore  # changes it
    admin: Any
    url: str
    prefix: str
    library: Any

    def tree_key(self, conversation: str) -> str:
        return f"{self.prefix}tree:{{{owner_digest(OWNER)}.{tree_of(conversation)}}}"

    async def fresh_items(self, conversation: str) -> list[tuple[str, bytes]] | None:
        """The conversation as a process that never saw it loads it."""
        fresh = RedisStore.from_url(self.url, key_prefix=self.prefix, library=self.library)
        try:
            return await fresh.conversation_items(OWNER, conversation)
        finally:
            await fresh.aclose()

    def list_key(self, conversation: str) -> str:
        tag = f"{{{owner_digest(OWNER)}.{tree_of(conversation)}}}"
        return f"{self.prefix}conversation_items:{tag}:{conversation}"


@pytest.fixture(params=["redis", "redis_cluster", "valkey_cluster"])
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    kind: str = request.param
    if kind == "redis":
        url: str = request.getfixturevalue("redis_server")
        admin: Any = redis.asyncio.Redis.from_url(url)
    else:
        url = request.getfixturevalue("redis_cluster").url
        admin = redis.asyncio.cluster.RedisCluster.from_url(url)
    library = "valkey" if kind == "valkey_cluster" else "redis"
    prefix = f"test:{uuid.uuid4().hex}:"
    stores = [RedisStore.from_url(url, key_prefix=prefix, library=library) for _ in range(2)]
    yield Replicas(*stores, admin, url, prefix, library)
    for store in stores:
        await store.aclose()
    await admin.aclose()


async def create(store: RedisStore, conversation: str, *names: str) -> None:
    items = [(name, item(name)) for name in names]
    await store.create_conversation(OWNER, ConversationRecord(conversation, 0), items)


def turn_of(conversation: str) -> TurnRecord:
    """A new turn of the conversation (its id in the conversation's tree)."""
    return record(new_response_id(tree_of(conversation)))


async def listed(store: RedisStore, conversation: str) -> list[str]:
    items = await store.conversation_items(OWNER, conversation)
    assert items is not None
    return [item_id for item_id, _ in items]


async def test_what_another_process_appends_or_removes_is_seen(replicas: Replicas) -> None:
    holder, other = replicas.holder, replicas.other
    conversation = new_conversation_id()
    turn = new_response_id(tree_of(conversation))
    await create(other, conversation, "msg_x", "msg_y")
    assert await listed(holder, conversation) == ["msg_x", "msg_y"]  # held from now on
    await other.put(OWNER, record(turn), conversation=conversation)
    turn_items = record_item_ids(record(turn))
    assert await listed(holder, conversation) == ["msg_x", "msg_y", *turn_items]
    await other.add_items(OWNER, conversation, [("msg_z", item("msg_z"))])
    assert await listed(holder, conversation) == ["msg_x", "msg_y", *turn_items, "msg_z"]
    assert await other.remove_item(OWNER, conversation, "msg_y") is True  # in the middle
    assert await listed(holder, conversation) == ["msg_x", *turn_items, "msg_z"]
    # as long again as what it holds, and ending as it does: only the removal tells
    assert await other.remove_item(OWNER, conversation, "msg_x") is True
    await other.add_items(OWNER, conversation, [("msg_z", None)])
    assert await listed(holder, conversation) == [*turn_items, "msg_z", "msg_z"]
    assert await holder.conversation_items(OWNER, conversation) == await replicas.fresh_items(
        conversation
    )


async def test_an_item_added_again_with_another_body_is_that_body_everywhere(
    replicas: Replicas,
) -> None:
    """Redis names an item by its id: every position of an id shows its latest item, in
    a process holding the conversation as in one loading it whole."""
    holder, other = replicas.holder, replicas.other
    conversation = new_conversation_id()
    await create(other, conversation, "msg_x", "msg_y")
    assert await listed(holder, conversation) == ["msg_x", "msg_y"]
    again = item("msg_x", "said again")
    await other.add_items(OWNER, conversation, [("msg_x", again)])
    items = await holder.conversation_items(OWNER, conversation)
    assert items == [("msg_x", again), ("msg_y", item("msg_y")), ("msg_x", again)]
    assert items == await replicas.fresh_items(conversation)


async def test_a_tree_lost_behind_its_back_is_items_missing(replicas: Replicas) -> None:
    holder, other, admin = replicas.holder, replicas.other, replicas.admin
    conversation = new_conversation_id()
    await create(other, conversation, "msg_x")
    await other.put(OWNER, turn_of(conversation), conversation=conversation)
    assert await holder.conversation_items(OWNER, conversation) is not None  # held
    assert await admin.delete(replicas.tree_key(conversation)) == 1  # evicted
    with pytest.raises(ItemsMissing):
        await holder.conversation_items(OWNER, conversation)
    with pytest.raises(ItemsMissing):
        await other.conversation_items(OWNER, conversation)


async def test_a_tree_lost_and_made_again_by_a_new_turn_is_items_missing(
    replicas: Replicas,
) -> None:
    """The tree is there again, with the new turn only: what the conversation named
    before is still gone."""
    holder, other, admin = replicas.holder, replicas.other, replicas.admin
    conversation = new_conversation_id()
    await create(other, conversation, "msg_x")
    assert await holder.conversation_items(OWNER, conversation) is not None  # held
    assert await admin.delete(replicas.tree_key(conversation)) == 1  # evicted
    await other.put(OWNER, turn_of(conversation), conversation=conversation)
    assert await admin.exists(replicas.tree_key(conversation)) == 1
    with pytest.raises(ItemsMissing):
        await holder.conversation_items(OWNER, conversation)


async def test_a_conversation_deleted_and_created_again_is_the_new_one(
    replicas: Replicas,
) -> None:
    holder, other = replicas.holder, replicas.other
    conversation = new_conversation_id()
    await create(other, conversation, "msg_a", "msg_b")
    assert await listed(holder, conversation) == ["msg_a", "msg_b"]  # held
    assert await other.delete_conversation(OWNER, conversation) is True
    assert await holder.conversation_items(OWNER, conversation) is None
    await create(other, conversation, "msg_a", "msg_b")
    assert await listed(holder, conversation) == ["msg_a", "msg_b"]  # held again
    # gone and back without the holder looking: longer, and its second item the same
    assert await other.delete_conversation(OWNER, conversation) is True
    await create(other, conversation, "msg_c", "msg_b", "msg_d")
    assert await listed(holder, conversation) == ["msg_c", "msg_b", "msg_d"]
    await create(other, conversation, "msg_e", "msg_b", "msg_d", "msg_f")  # over itself
    assert await listed(holder, conversation) == ["msg_e", "msg_b", "msg_d", "msg_f"]
    assert await other.delete_conversation(OWNER, conversation) is True
    assert await holder.conversation_items(OWNER, conversation) is None
    assert await holder.get_conversation(OWNER, conversation) is None
    fields = await replicas.admin.hkeys(replicas.tree_key(conversation))
    assert not [field for field in fields if field.startswith(b"g:")]  # no mark left


async def test_a_list_lost_on_its_own_and_grown_again_is_read_anew(replicas: Replicas) -> None:
    """Its mark is still there, but the list does not go on from what the holder holds
    (as after a failover that lost writes): it reads what a fresh process reads."""
    holder, other, admin = replicas.holder, replicas.other, replicas.admin
    conversation = new_conversation_id()
    await create(other, conversation, "msg_a", "msg_b")
    assert await listed(holder, conversation) == ["msg_a", "msg_b"]  # held
    assert await admin.delete(replicas.list_key(conversation)) == 1
    news = [(name, item(name)) for name in ("msg_c", "msg_d", "msg_e")]
    await other.add_items(OWNER, conversation, news)
    assert await listed(holder, conversation) == ["msg_c", "msg_d", "msg_e"]
    assert await listed(other, conversation) == ["msg_c", "msg_d", "msg_e"]


async def test_another_owner_never_gets_what_a_process_holds(replicas: Replicas) -> None:
    holder = replicas.holder
    conversation = new_conversation_id()
    await create(holder, conversation, "msg_x")
    assert await listed(holder, conversation) == ["msg_x"]
    assert await holder.conversation_items("someone else", conversation) is None


async def test_a_store_without_a_cache_loads_every_conversation_whole(url: str) -> None:
    store = RedisStore.from_url(url, key_prefix="t:", cache_bytes=0)
    other = RedisStore.from_url(url, key_prefix="t:")
    try:
        conversation = new_conversation_id()
        await create(other, conversation, "msg_x", "msg_y")
        assert await listed(store, conversation) == ["msg_x", "msg_y"]
        await other.remove_item(OWNER, conversation, "msg_x")
        await other.add_items(OWNER, conversation, [("msg_z", item("msg_z"))])
        assert await listed(store, conversation) == ["msg_y", "msg_z"]
    finally:
        await store.aclose()
        await other.aclose()


@pytest.fixture
def url(redis_server: str) -> str:
    return redis_server


# -- the cache itself ------------------------------------------------------------------


def test_a_held_conversation_grows_by_what_is_appended_and_is_never_changed() -> None:
    held = HeldConversation.read(b"mark", [("a", b"1"), ("b", b"2")])
    grown = held.extended([("c", b"3")])
    assert grown.items == (("a", b"1"), ("b", b"2"), ("c", b"3"))
    assert grown.last == "c"
    assert grown.mark == b"mark"
    assert grown.size == held.size + 2 + PER_ITEM
    assert held.items == (("a", b"1"), ("b", b"2"))  # another load may still use it
    assert held.extended([]) is held


def test_an_id_appended_again_with_another_item_changes_every_position_of_it() -> None:
    held = HeldConversation.read(b"mark", [("a", b"1"), ("b", b"2")])
    grown = held.extended([("a", b"one")])
    assert grown.items == (("a", b"one"), ("b", b"2"), ("a", b"one"))
    assert grown.size == 2 * (1 + 3 + PER_ITEM) + 1 + 1 + PER_ITEM
    same = held.extended([("a", b"1")])
    assert same.items == (("a", b"1"), ("b", b"2"), ("a", b"1"))


def test_the_cache_is_bounded_by_bytes_least_recently_used_first_out() -> None:
    one = HeldConversation.read(b"m", [("a", b"x" * 100)])
    cache = ConversationCache(2 * one.size)
    cache.keep("o", "c1", one)
    cache.keep("o", "c2", one)
    assert cache.get("o", "c1") is one  # used: c2 is the least recently used now
    cache.keep("o", "c3", one)
    assert cache.get("o", "c2") is None
    assert cache.get("o", "c1") is one
    assert cache.get("other owner", "c1") is None
    too_big = HeldConversation.read(b"m", [("a", b"x" * 1000)])
    cache.keep("o", "c1", too_big)  # not kept, and what was held of it goes
    assert cache.get("o", "c1") is None
    cache.forget("o", "c3")
    assert cache.get("o", "c3") is None


def test_a_cache_of_no_bytes_keeps_nothing() -> None:
    cache = ConversationCache(0)
    cache.keep("o", "c", HeldConversation.read(b"m", [("a", b"1")]))
    assert cache.get("o", "c") is None
    cache.forget("o", "c")
