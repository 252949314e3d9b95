"""RedisStore next to MemoryStore: the store work of one turn on a short and a long
chain, what a chain costs in Redis memory, and what recording a background response's
events costs.

A turn's store work is what the middleware does for a follow-up: ``get_chain`` of the
previous response, then ``put`` of the new turn. Items are realistic: a user message of
about 400 bytes and an assistant message of about 1500 bytes per turn.

A background response's events are recorded as a worker would: ``BACKGROUND_EVENTS``
text deltas of the size the Responses API sends, ``record_events`` for every chunk of
1 or of 8 of them (one script each), reported per event: wall time, and the time Redis
spent in the scripts (``INFO commandstats``).

``python benchmarks/bench_redis.py`` starts its own ``redis-server`` and prints a
markdown table. ``run(redis_url)`` measures against a server you give: it writes only
under a fresh key prefix and removes those keys afterwards.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import msgspec
import redis.asyncio

from state_middleware import MemoryStore, RedisStore, Store, TurnRecord
from state_middleware._ids import new_response_id, tree_of
from state_middleware._record import encode_record

__all__ = ["run"]

OWNER = "bench"
USER_TEXT_BYTES = 400
ASSISTANT_TEXT_BYTES = 1500
TIMED_TURNS = 101  # per measurement; the median is reported
WARMUP_TURNS = 5
CHAIN_LENGTHS_TIMED = (10, 1000)
CHAIN_LENGTHS_SIZED = (10, 100, 1000)
BACKGROUND_EVENTS = 2000
EVENT_CHUNKS = (1, 8)

_WORDS = ("the", "of", "model", "store", "chain", "turn", "reply", "token", "stream", "context")


def _prose(size: int, seed: int) -> str:
    words: list[str] = []
    length = 0
    n = seed
    while length < size:
        word = _WORDS[n % len(_WORDS)]
        words.append(word)
        length += len(word) + 1
        n = n * 7 + 3
    return " ".join(words)[:size]


def _turn(number: int, parent_id: str | None, tree: str | None = None) -> TurnRecord:
    """Turn ``number`` of a chain, as the middleware stores it: a follow-up joins its
    parent's tree, a conversation's turn the conversation's (``tree``)."""
    response_id = new_response_id(tree or tree_of(parent_id))
    user = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": _prose(USER_TEXT_BYTES, number)}],
    }
    assistant = {
        "id": "msg_" + response_id[5:],
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {
                "type": "output_text",
                "text": _prose(ASSISTANT_TEXT_BYTES, number + 1),
                "annotations": [],
            }
        ],
    }
    response = {
        "id": response_id,
        "object": "response",
        "created_at": 1_700_000_000 + number,
        "status": "completed",
        "model": "gpt-4.1-mini",
        "previous_response_id": parent_id,
        "store": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": 100 * number + 100, "output_tokens": 375, "total_tokens": 0},
    }
    return TurnRecord(
        id=response_id,
        parent_id=parent_id,
        created_at=1_700_000_000 + number,
        input_items=msgspec.json.encode([user]),
        output_items=msgspec.json.encode([assistant]),
        response=msgspec.json.encode(response),
    )


async def _build_chain(store: Store, turns: int) -> list[TurnRecord]:
    chain: list[TurnRecord] = []
    parent_id = None
    for number in range(turns):
        record = _turn(number, parent_id)
        await store.put(OWNER, record)
        chain.append(record)
        parent_id = record.id
    return chain


async def _turn_ms(store: Store, head: TurnRecord, turns: int) -> float:
    """Median milliseconds of get_chain + put of a new turn on the ``turns``-long chain
    ending at ``head`` (every new turn forks off the head, so the chain keeps its
    length); a few untimed turns first."""
    for number in range(WARMUP_TURNS):
        await store.get_chain(OWNER, head.id)
        await store.put(OWNER, _turn(turns + TIMED_TURNS + number, head.id))
    samples: list[float] = []
    for number in range(TIMED_TURNS):
        record = _turn(turns + number, head.id)
        started = time.perf_counter()
        chain = await store.get_chain(OWNER, head.id)
        await store.put(OWNER, record)
        samples.append(time.perf_counter() - started)
        if chain is None or len(chain) != turns:
            raise RuntimeError(f"the {turns}-turn chain did not load whole")
    return statistics.median(samples) * 1000


async def _script_usec(admin: Any) -> int:
    """Microseconds Redis has spent running our scripts (``EVALSHA``) so far."""
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


async def _chain_memory(
    admin: Any, redis_url: str, prefix: str, turns: int
) -> tuple[int, int, int]:
    """(bytes Redis holds for the chain's keys, bytes of the encoded records, bytes of
    the raw items)."""
    store = RedisStore.from_url(redis_url, key_prefix=prefix)
    try:
        chain = await _build_chain(store, turns)
    finally:
        await store.aclose()
    used = await prefix_bytes(admin, prefix)
    records = sum(len(encode_record(r)) for r in chain)
    items = sum(len(r.input_items) + len(r.output_items) for r in chain)
    return used, records, items


def _delta_event(number: int) -> bytes:
    return msgspec.json.encode(
        {
            "type": "response.output_text.delta",
            "sequence_number": number + 4,
            "item_id": "msg_68a2b5f0c1d48190a1f3c2b7d9e4a6b10e2c7f5d3a9b8c41",
            "output_index": 0,
            "content_index": 0,
            "delta": _prose(12, number).rsplit(" ", 1)[0] + " ",
            "logprobs": [],
            "obfuscation": "x7Qk2m",
        }
    )


async def _events_cost(admin: Any, redis_url: str, prefix: str, chunk: int) -> tuple[float, float]:
    """(wall microseconds, Redis script microseconds) per event recorded, for a stream of
    ``BACKGROUND_EVENTS`` events recorded ``chunk`` at a time."""
    events = [_delta_event(number) for number in range(BACKGROUND_EVENTS)]
    store = RedisStore.from_url(redis_url, key_prefix=prefix)
    try:
        await store.start_background(OWNER, "warmup", b"{}", stream=True, lease=60)
        await store.record_events(OWNER, "warmup", events[:1], status="in_progress", lease=60)
        await store.start_background(OWNER, "timed", b"{}", stream=True, lease=60)
        busy_before = await _script_usec(admin)
        started = time.perf_counter()
        for first in range(0, BACKGROUND_EVENTS, chunk):
            chunk_events = events[first : first + chunk]
            await store.record_events(OWNER, "timed", chunk_events, status="in_progress", lease=60)
        elapsed = time.perf_counter() - started
        busy_usec = await _script_usec(admin) - busy_before
        state = await store.get_background(OWNER, "timed")
        if state is None or state.events != BACKGROUND_EVENTS:
            raise RuntimeError("the events were not all recorded")
    finally:
        await store.aclose()
    return elapsed * 1e6 / BACKGROUND_EVENTS, busy_usec / BACKGROUND_EVENTS


async def _measure(redis_url: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    prefix = f"bench-{uuid.uuid4().hex}:"
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        for turns in CHAIN_LENGTHS_TIMED:
            memory = MemoryStore()
            memory_ms = await _turn_ms(memory, (await _build_chain(memory, turns))[-1], turns)
            store = RedisStore.from_url(redis_url, key_prefix=f"{prefix}time{turns}:")
            try:
                head = (await _build_chain(store, turns))[-1]
                busy_before = await _script_usec(admin)
                redis_ms = await _turn_ms(store, head, turns)
                busy_usec = await _script_usec(admin) - busy_before
            finally:
                await store.aclose()
            busy_ms = busy_usec / (WARMUP_TURNS + TIMED_TURNS) / 1000
            label = f"turn (get_chain + put) on a {turns}-turn chain"
            rows.append((f"{label}, MemoryStore", f"{memory_ms:.3f} ms"))
            rows.append(
                (
                    f"{label}, RedisStore",
                    f"{redis_ms:.3f} ms ({redis_ms / memory_ms:.1f}x MemoryStore)",
                )
            )
            rows.append(
                (
                    f"{label}, time Redis spends in the two scripts",
                    f"{busy_ms:.3f} ms (Redis serves no one else meanwhile)",
                )
            )
        for turns in CHAIN_LENGTHS_SIZED:
            used, records, items = await _chain_memory(
                admin, redis_url, f"{prefix}size{turns}:", turns
            )
            rows.append(
                (
                    f"Redis memory of a {turns}-turn chain",
                    f"{used:,} B: {used / items:.2f}x its {items:,} B of items, "
                    f"{used / records:.2f}x its {records:,} B of records "
                    f"({(used - records) / turns:,.0f} B/turn on top)",
                )
            )
        for chunk in EVENT_CHUNKS:
            wall, busy = await _events_cost(admin, redis_url, f"{prefix}events{chunk}:", chunk)
            rows.append(
                (
                    f"record_events, {BACKGROUND_EVENTS} events in chunks of {chunk}, per event",
                    f"{wall:.1f} us, of which Redis runs the script {busy:.1f} us",
                )
            )
    finally:
        await drop_prefix(admin, prefix)
    return rows


async def prefix_bytes(admin: Any, prefix: str) -> int:
    """Bytes Redis holds for the keys under ``prefix`` (``MEMORY USAGE``, summed)."""
    used = 0
    async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
        used += await admin.memory_usage(key, samples=0)
    return used


async def drop_prefix(admin: Any, prefix: str) -> None:
    """Remove every key under ``prefix`` and close ``admin``."""
    async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
        await admin.unlink(key)
    await admin.aclose()


def run(redis_url: str) -> list[tuple[str, str]]:
    """Measure against the Redis at ``redis_url``; rows of (label, value)."""
    return asyncio.run(_measure(redis_url))


def _markdown(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"| {'Measurement'.ljust(width)} | Result |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {label.ljust(width)} | {value} |" for label, value in rows]
    return "\n".join(lines)


def main() -> None:
    from _redis_server import redis_server

    with redis_server() as url:
        rows = run(url)
    print(f"redis-server, Python {sys.version.split()[0]}, median of {TIMED_TURNS} turns\n")
    print(_markdown(rows))


if __name__ == "__main__":
    main()
