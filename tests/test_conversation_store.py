"""Items and conversations, as every store keeps them: run against each store kind.

What only Redis has to prove (round trips, TTLs in Redis, bytes) is in
``test_redis_store.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from state_middleware import Store, TurnRecord
from state_middleware._ids import derived_item_id
from state_middleware._record import (
    OUTPUT_POSITION,
    ConversationRecord,
    record_item_ids,
    record_items,
)
from state_middleware._store import ItemsMissing

pytestmark = pytest.mark.anyio

OWNER = "owner"
CONVERSATION = "conv_1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def message(item_id: str, text: str, role: str = "user") -> bytes:
    part = "output_text" if role == "assistant" else "input_text"
    item = {
        "type": "message",
        "id": item_id,
        "role": role,
        "status": "completed",
        "content": [{"type": part, "text": text}],
    }
    return msgspec.json.encode(item)


def turn(response_id: str, said: str = "hello", parent_id: str | None = None) -> TurnRecord:
    """A turn whose input is one id-less user message and whose output is an assistant
    message with an id of its own."""
    return TurnRecord(
        id=response_id,
        parent_id=parent_id,
        created_at=1_700_000_000,
        input_items=msgspec.json.encode([{"role": "user", "content": said}]),
        output_items=b"[" + message(f"msg_{response_id}", "hi " + said, "assistant") + b"]",
        response=b'{"id":"' + response_id.encode() + b'","object":"response"}',
    )


async def new_conversation(store: Store, *items: tuple[str, bytes | None]) -> None:
    await store.create_conversation(OWNER, ConversationRecord(CONVERSATION, 1_700_000_000), items)


async def listed_ids(store: Store, conversation_id: str = CONVERSATION) -> list[str]:
    items = await store.conversation_items(OWNER, conversation_id)
    assert items is not None
    return [item_id for item_id, _ in items]


async def test_a_conversation_is_created_read_updated_and_deleted(store: Store) -> None:
    created = ConversationRecord(CONVERSATION, 1_700_000_000, b'{"topic":"tea"}')
    await store.create_conversation(OWNER, created, [])
    assert await store.get_conversation(OWNER, CONVERSATION) == created
    assert await store.conversation_items(OWNER, CONVERSATION) == []
    updated = await store.update_conversation(OWNER, CONVERSATION, b'{"topic":"coffee"}')
    assert updated == ConversationRecord(CONVERSATION, 1_700_000_000, b'{"topic":"coffee"}')
    assert await store.get_conversation(OWNER, CONVERSATION) == updated
    assert await store.delete_conversation(OWNER, CONVERSATION) is True
    assert await store.delete_conversation(OWNER, CONVERSATION) is False
    assert await store.get_conversation(OWNER, CONVERSATION) is None
    assert await store.conversation_items(OWNER, CONVERSATION) is None
    assert await store.update_conversation(OWNER, CONVERSATION, b"{}") is None


async def test_a_missing_conversation_is_none_everywhere(store: Store) -> None:
    assert await store.get_conversation(OWNER, "conv_none") is None
    assert await store.conversation_items(OWNER, "conv_none") is None
    assert await store.add_items(OWNER, "conv_none", [("msg_a", message("msg_a", "a"))]) is False
    assert await store.remove_item(OWNER, "conv_none", "msg_a") is False
    assert await store.get_items(OWNER, ["msg_a"]) == {}  # nothing was kept on the way


async def test_items_added_are_listed_in_order_and_found_by_id(store: Store) -> None:
    first, second, third = (message(f"msg_{n}", f"item {n}") for n in range(3))
    await new_conversation(store, ("msg_0", first), ("msg_1", second))
    assert await store.add_items(OWNER, CONVERSATION, [("msg_2", third)]) is True
    assert await store.conversation_items(OWNER, CONVERSATION) == [
        ("msg_0", first),
        ("msg_1", second),
        ("msg_2", third),
    ]
    found = await store.get_items(OWNER, ["msg_2", "msg_0", "msg_unknown"])
    assert found == {"msg_2": third, "msg_0": first}


async def test_items_are_added_all_or_none(store: Store) -> None:
    await new_conversation(store, ("msg_0", message("msg_0", "kept")))
    new = ("msg_1", message("msg_1", "not added"))
    with pytest.raises(ItemsMissing):
        await store.add_items(OWNER, CONVERSATION, [new, ("msg_unknown", None)])
    assert await listed_ids(store) == ["msg_0"]
    assert await store.get_items(OWNER, ["msg_1"]) == {}
    with pytest.raises(ItemsMissing):
        await store.create_conversation(
            OWNER, ConversationRecord("conv_2", 1), [new, ("msg_unknown", None)]
        )
    assert await store.get_conversation(OWNER, "conv_2") is None
    assert await store.get_items(OWNER, ["msg_1"]) == {}


async def test_a_stored_item_is_attached_again_by_id(store: Store) -> None:
    await store.put(OWNER, turn("resp_a"))
    await new_conversation(store, ("msg_x", message("msg_x", "x")))
    attached = [("msg_resp_a", None), ("msg_x", None)]
    assert await store.add_items(OWNER, CONVERSATION, attached) is True
    items = await store.conversation_items(OWNER, CONVERSATION)
    assert items == [
        ("msg_x", message("msg_x", "x")),
        ("msg_resp_a", dict(record_items(turn("resp_a")))["msg_resp_a"]),
        ("msg_x", message("msg_x", "x")),
    ]


async def test_a_turn_put_into_a_conversation_appends_its_input_then_output(
    store: Store,
) -> None:
    await new_conversation(store, ("msg_seed", message("msg_seed", "seed")))
    first, second = turn("resp_1", "one"), turn("resp_2", "two")
    await store.put(OWNER, first, conversation=CONVERSATION)
    await store.put(OWNER, second, conversation=CONVERSATION)
    assert await store.conversation_items(OWNER, CONVERSATION) == [
        ("msg_seed", message("msg_seed", "seed")),
        *record_items(first),
        *record_items(second),
    ]
    assert await listed_ids(store) == [
        "msg_seed",
        derived_item_id("resp_1", 0, "message"),
        "msg_resp_1",
        derived_item_id("resp_2", 0, "message"),
        "msg_resp_2",
    ]
    assert await store.get(OWNER, "resp_2") == second


async def test_a_turn_put_into_a_gone_conversation_is_stored_and_nothing_appended(
    store: Store,
) -> None:
    await new_conversation(store)
    await store.delete_conversation(OWNER, CONVERSATION)
    await store.put(OWNER, turn("resp_1"), conversation=CONVERSATION)
    assert await store.get(OWNER, "resp_1") == turn("resp_1")
    assert await store.get_conversation(OWNER, CONVERSATION) is None
    await new_conversation(store)  # the same id again starts empty
    assert await listed_ids(store) == []


async def test_items_of_plain_turns_are_found_by_explicit_and_derived_ids(store: Store) -> None:
    record = turn("resp_a")
    await store.put(OWNER, record)
    derived = derived_item_id("resp_a", 0, "message")
    assert record_item_ids(record) == [derived, "msg_resp_a"]
    found = await store.get_items(OWNER, ["msg_resp_a", derived, "msg_unknown"])
    assert found == dict(record_items(record))
    assert await store.get_items(OWNER, []) == {}


async def test_an_output_item_has_a_derived_id_from_its_output_position(store: Store) -> None:
    record = TurnRecord("resp_b", None, 0, b"[]", b'[{"type":"reasoning","summary":[]}]', b"{}")
    await store.put(OWNER, record)
    derived = derived_item_id("resp_b", OUTPUT_POSITION, "reasoning")
    found = await store.get_items(OWNER, [derived])
    assert msgspec.json.decode(found[derived]) == {
        "id": derived,
        "type": "reasoning",
        "summary": [],
    }


async def test_the_latest_stored_holder_of_an_id_wins(store: Store) -> None:
    await store.put(OWNER, turn("resp_a"))
    again = message("msg_resp_a", "said again")
    await new_conversation(store, ("msg_resp_a", again))
    assert await store.get_items(OWNER, ["msg_resp_a"]) == {"msg_resp_a": again}


async def test_a_foreign_owner_sees_no_items_and_no_conversation(store: Store) -> None:
    await store.put(OWNER, turn("resp_a"))
    await new_conversation(store, ("msg_x", message("msg_x", "x")))
    stranger = "someone else"
    assert await store.get_items(stranger, ["msg_resp_a", "msg_x"]) == {}
    assert await store.get_conversation(stranger, CONVERSATION) is None
    assert await store.conversation_items(stranger, CONVERSATION) is None
    assert await store.add_items(stranger, CONVERSATION, []) is False
    assert await store.remove_item(stranger, CONVERSATION, "msg_x") is False
    assert await store.delete_conversation(stranger, CONVERSATION) is False
    with pytest.raises(ItemsMissing):  # another owner's item cannot be attached either
        await store.create_conversation(stranger, ConversationRecord("c", 1), [("msg_x", None)])
    assert await listed_ids(store) == ["msg_x"]


async def test_remove_item_takes_out_one_occurrence(store: Store) -> None:
    x, y = message("msg_x", "x"), message("msg_y", "y")
    await new_conversation(store, ("msg_x", x), ("msg_y", y))
    assert await store.add_items(OWNER, CONVERSATION, [("msg_x", None)]) is True
    assert await store.remove_item(OWNER, CONVERSATION, "msg_x") is True
    assert await listed_ids(store) == ["msg_y", "msg_x"]
    assert await store.remove_item(OWNER, CONVERSATION, "msg_x") is True
    assert await store.remove_item(OWNER, CONVERSATION, "msg_x") is False
    assert await listed_ids(store) == ["msg_y"]
    assert await store.get_items(OWNER, ["msg_x"]) == {"msg_x": x}  # still stored


async def test_items_of_a_deleted_response_named_by_a_conversation_stay(store: Store) -> None:
    await new_conversation(store)
    record = turn("resp_1")
    await store.put(OWNER, record, conversation=CONVERSATION)
    assert await store.delete(OWNER, "resp_1") is True
    assert await store.get(OWNER, "resp_1") is None
    assert await store.conversation_items(OWNER, CONVERSATION) == record_items(record)
    assert await store.get_items(OWNER, ["msg_resp_1"]) == {
        "msg_resp_1": dict(record_items(record))["msg_resp_1"]
    }


async def test_items_attached_from_a_deleted_response_stay(store: Store) -> None:
    record = turn("resp_1")
    await store.put(OWNER, record)
    await new_conversation(store, ("msg_resp_1", None))
    assert await store.delete(OWNER, "resp_1") is True
    assert await store.conversation_items(OWNER, CONVERSATION) == [
        ("msg_resp_1", dict(record_items(record))["msg_resp_1"])
    ]


async def test_deleting_a_response_nothing_needs_forgets_the_ids_pointing_to_it(
    store: Store,
) -> None:
    await store.put(OWNER, turn("resp_a"))
    derived = derived_item_id("resp_a", 0, "message")
    # "resp_b" holds an item under the id "msg_resp_a" too, stored later: it wins.
    later = TurnRecord("resp_b", None, 0, b"[" + message("msg_resp_a", "b") + b"]", b"[]", b"{}")
    await store.put(OWNER, later)
    assert await store.delete(OWNER, "resp_a") is True
    assert await store.get_items(OWNER, [derived, "msg_resp_a"]) == dict(record_items(later))


async def test_a_deleted_conversation_leaves_its_items_findable(store: Store) -> None:
    await new_conversation(store, ("msg_x", message("msg_x", "x")))
    await store.put(OWNER, turn("resp_1"), conversation=CONVERSATION)
    assert await store.delete_conversation(OWNER, CONVERSATION) is True
    found = await store.get_items(OWNER, ["msg_x", "msg_resp_1"])
    assert set(found) == {"msg_x", "msg_resp_1"}


async def test_a_conversation_lock_is_exclusive_per_token_until_unlocked(store: Store) -> None:
    assert await store.lock_conversation(OWNER, CONVERSATION, "one", 60.0) is True
    assert await store.lock_conversation(OWNER, CONVERSATION, "one", 60.0) is True
    assert await store.lock_conversation(OWNER, CONVERSATION, "two", 60.0) is False
    assert await store.lock_conversation("someone else", CONVERSATION, "two", 60.0) is True
    await store.unlock_conversation(OWNER, CONVERSATION, "two")  # not its lock: no effect
    assert await store.lock_conversation(OWNER, CONVERSATION, "two", 60.0) is False
    await store.unlock_conversation(OWNER, CONVERSATION, "one")
    assert await store.lock_conversation(OWNER, CONVERSATION, "two", 60.0) is True


async def test_a_conversation_lock_ends_with_its_lease(make_store: Callable[..., Store]) -> None:
    clock = Clock()
    store = make_store(timer=clock)  # Redis: its own clock (test_redis_store checks PTTL)
    assert await store.lock_conversation(OWNER, CONVERSATION, "crashed", 30.0) is True
    clock.now = 29.0
    assert await store.lock_conversation(OWNER, CONVERSATION, "next", 30.0) is False
    clock.now = 31.0
    assert await store.lock_conversation(OWNER, CONVERSATION, "next", 30.0) is True


async def test_a_conversation_in_use_keeps_what_it_names(make_store: Callable[..., Store]) -> None:
    clock = Clock()
    store = make_store(ttl=10.0, timer=clock)  # Redis: test_redis_store checks the TTLs
    await new_conversation(store, ("msg_x", message("msg_x", "x")))
    await store.put(OWNER, turn("resp_1"), conversation=CONVERSATION)
    named = ["msg_x", *record_item_ids(turn("resp_1"))]
    for now in (8.0, 16.0, 24.0, 32.0):  # reading it, and only reading it, every 8 s
        clock.now = now
        assert await store.get_conversation(OWNER, CONVERSATION) is not None
        clock.now = now + 4.0
        assert await listed_ids(store) == named
    clock.now = 47.0
    assert await store.get_conversation(OWNER, CONVERSATION) is None
