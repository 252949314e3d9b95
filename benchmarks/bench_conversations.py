"""Conversations next to chains: the store work of one turn on a 1000-item conversation
against one on a 1000-turn chain, in MemoryStore and RedisStore, and what a
conversation's items cost in bytes.

A conversation turn's store work is what the middleware does for ``POST /responses``
with ``conversation``: ``conversation_items`` (the context), then ``put`` of the new
turn with ``conversation=`` (the record, plus its items appended). A chain turn's is
``get_chain`` then ``put``. Items are the ones ``bench_redis`` uses: a user message of
about 400 bytes and an assistant message of about 1500 bytes per turn.

``python benchmarks/bench_conversations.py`` starts its own ``redis-server`` and prints a
markdown table; ``run(redis_url)`` measures against a server you give (under a fresh
key prefix, removed afterwards).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import msgspec
import redis.asyncio
from bench_redis import (
    OWNER,
    TIMED_TURNS,
    WARMUP_TURNS,
    _build_chain,
    _turn,
    _turn_ms,
    drop_prefix,
    prefix_bytes,
)

from state_middleware import MemoryStore, RedisStore, Store, TurnRecord
from state_middleware._ids import new_conversation_id, new_item_id, tree_of
from state_middleware._record import ConversationRecord

__all__ = ["run"]

ITEMS = 1000  # two items a turn


def _conversation_turn(number: int, conversation: str) -> TurnRecord:
    """A turn as a conversation keeps it: the middleware gives input items ids and
    ``status`` before storing them (the output items have theirs)."""
    record = _turn(number, None, tree_of(conversation))
    items = [
        {"id": new_item_id("message"), **item, "status": "completed"}
        for item in msgspec.json.decode(record.input_items)
    ]
    return msgspec.structs.replace(record, input_items=msgspec.json.encode(items))


async def _build_conversation(store: Store, items: int) -> tuple[str, int]:
    """A conversation of ``items`` items made by turns; its id and the item bytes."""
    conversation = new_conversation_id()
    await store.create_conversation(OWNER, ConversationRecord(conversation, 0), [])
    item_bytes = 0
    for number in range(items // 2):
        record = _conversation_turn(number, conversation)
        await store.put(OWNER, record, conversation=conversation)
        item_bytes += len(record.input_items) + len(record.output_items) - 4
    return conversation, item_bytes


async def _conversation_turn_ms(store: Store, conversation: str) -> float:
    """Median milliseconds of conversation_items + put of a new turn appended to it."""
    for number in range(WARMUP_TURNS):
        await store.conversation_items(OWNER, conversation)
        await store.put(
            OWNER, _conversation_turn(ITEMS + number, conversation), conversation=conversation
        )
    samples: list[float] = []
    for number in range(TIMED_TURNS):
        record = _conversation_turn(ITEMS + WARMUP_TURNS + number, conversation)
        started = time.perf_counter()
        items = await store.conversation_items(OWNER, conversation)
        await store.put(OWNER, record, conversation=conversation)
        samples.append(time.perf_counter() - started)
        if items is None or len(items) < ITEMS:
            raise RuntimeError("the conversation did not load whole")
    return statistics.median(samples) * 1000


async def _measure(redis_url: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    prefix = f"bench-{uuid.uuid4().hex}:"
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        memory = MemoryStore()
        conversation, item_bytes = await _build_conversation(memory, ITEMS)
        rows.append(
            (
                f"stored bytes / item bytes, {ITEMS}-item conversation, MemoryStore",
                f"{memory.size / item_bytes:.2f} ({memory.size:,} B for {item_bytes:,} B "
                "of items; the rest is each turn's response object and the item ids)",
            )
        )
        conversation_ms = await _conversation_turn_ms(memory, conversation)
        chain_store = MemoryStore()
        head = (await _build_chain(chain_store, ITEMS))[-1]
        chain_ms = await _turn_ms(chain_store, head, ITEMS)
        rows.append(
            (
                f"turn on a {ITEMS}-item conversation, MemoryStore",
                f"{conversation_ms:.3f} ms ({chain_ms:.3f} ms on a {ITEMS}-turn chain)",
            )
        )
        store = RedisStore.from_url(redis_url, key_prefix=f"{prefix}conv:")
        try:
            conversation, item_bytes = await _build_conversation(store, ITEMS)
            used = await prefix_bytes(admin, f"{prefix}conv:")
            conversation_ms = await _conversation_turn_ms(store, conversation)
        finally:
            await store.aclose()
        rows.append(
            (
                f"Redis memory / item bytes, {ITEMS}-item conversation",
                f"{used / item_bytes:.2f} ({used:,} B for {item_bytes:,} B of items)",
            )
        )
        store = RedisStore.from_url(redis_url, key_prefix=f"{prefix}chain:")
        try:
            head = (await _build_chain(store, ITEMS))[-1]
            chain_ms = await _turn_ms(store, head, ITEMS)
        finally:
            await store.aclose()
        rows.append(
            (
                f"turn on a {ITEMS}-item conversation, RedisStore",
                f"{conversation_ms:.3f} ms ({chain_ms:.3f} ms on a {ITEMS}-turn chain)",
            )
        )
    finally:
        await drop_prefix(admin, prefix)
    return rows


def run(redis_url: str) -> list[tuple[str, str]]:
    """Measure against the Redis at ``redis_url``; rows of (label, value)."""
    return asyncio.run(_measure(redis_url))


def main() -> None:
    from _redis_server import redis_server
    from bench_redis import _markdown

    with redis_server() as url:
        rows = run(url)
    print(f"redis-server, Python {sys.version.split()[0]}, median of {TIMED_TURNS} turns\n")
    print(_markdown(rows))


if __name__ == "__main__":
    main()
