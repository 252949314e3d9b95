"""What the middleware costs, measured against the bare app in the same run.

    python benchmarks/run.py            # every section
    python benchmarks/run.py latency    # only the named sections

Prints one markdown table. Sections:

* ``latency``  single-turn JSON request through uvicorn: wrapped / bare (<= 1.10x);
* ``stream``   a 2000-delta SSE stream through uvicorn, time to the last byte (<= 1.10x);
* ``replay``   in process, the middleware's own work to replay a 50-turn chain
  (parse, ``get_chain``, rewrite) minus the same for a request without history (<= 1 ms);
* ``storage``  ``MemoryStore.size`` over the JSON bytes of the chain's items, for 10-,
  100- and 1000-turn chains (<= 1.5);
* ``websocket`` WebSocket mode against HTTP: request bytes per turn of a Codex-like
  session, per-turn latency (``bench_websocket.py``).
* ``cluster``  Redis CPU per turn at chain length 10, 100 and 1000 before and after the
  cluster layout, and one Redis node against a three-primary cluster under the same SDK
  load (``bench_cluster.py``).

``soak.py`` (100 chains x 100 turns on a cluster, with a failover) runs on its own.

The HTTP sections run each app in its own uvicorn subprocess (the client stays in this
process, with one kept-alive connection per server) and interleave bare and wrapped
rounds so drift hits both alike. To add a section, write a function returning rows
(``_common.row(...)`` or plain ``(measurement, result)`` tuples) and list it in
``SECTIONS``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from _common import (
    Comparison,
    Measure,
    Row,
    Served,
    call_asgi,
    compare,
    markdown_table,
    median,
    ms,
    pin_client,
    row,
    timed,
)

from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware._identity import hash_credentials
from state_middleware._record import chain_input
from state_middleware._request import parse_turn_request, upstream_body
from state_middleware.testing import ScriptedResponsesApp

ROUNDS = 7
LATENCY_REQUESTS = 400  # per app per round
STREAMS = 4  # per app per round
STREAM_DELTAS = 2000
REPLAY_TURNS = 50
REPLAY_CALLS = 2000
STORAGE_TURNS = (10, 100, 1000)

AUTH = (b"authorization", b"Bearer sk-bench")
OWNER = hash_credentials([AUTH])


# -- HTTP through uvicorn -------------------------------------------------------------


def _interleaved(measure: Measure) -> Comparison:
    """``measure`` against the bare and the wrapped app (see ``_common.compare``)."""
    return compare(
        Served("bare", "_apps:bare", measure),
        Served("wrapped", "_apps:wrapped", measure),
        rounds=ROUNDS,
        headers=[AUTH],
    )


def latency() -> list[Row]:
    body = msgspec.json.encode({"model": "m", "input": "Hello, how are you today?"})
    headers = {"content-type": "application/json"}

    def requests(client: httpx.Client) -> list[float]:
        def one() -> None:
            client.post("/v1/responses", content=body, headers=headers).raise_for_status()

        return [timed(one) for _ in range(LATENCY_REQUESTS)]

    result = _interleaved(requests)
    return [
        row(
            "(a) single-turn JSON latency, wrapped / bare",
            f"{result.ratio:.3f}x",
            target="<= 1.10x",
            met=result.ratio <= 1.10,
            details=result.details(f"{LATENCY_REQUESTS} requests (store=true)"),
        )
    ]


_COMPLETED = b"event: response.completed"


def stream() -> list[Row]:
    body = msgspec.json.encode({"model": "m", "input": f"DELTAS:{STREAM_DELTAS}", "stream": True})
    headers = {"content-type": "application/json"}

    def streams(client: httpx.Client) -> list[float]:
        def one() -> None:
            with client.stream("POST", "/v1/responses", content=body, headers=headers) as reply:
                reply.raise_for_status()
                completed, carry = False, b""
                for chunk in reply.iter_raw():
                    completed = completed or _COMPLETED in carry + chunk
                    carry = chunk[-len(_COMPLETED) :]
                if not completed:
                    raise RuntimeError("the stream did not end with response.completed")

        return [timed(one) for _ in range(STREAMS)]

    result = _interleaved(streams)
    return [
        row(
            f"(b) {STREAM_DELTAS}-delta SSE stream, last byte, wrapped / bare",
            f"{result.ratio:.3f}x",
            target="<= 1.10x",
            met=result.ratio <= 1.10,
            details=(
                result.details(f"{STREAMS} streams")
                + f"; {result.added / STREAM_DELTAS * 1e6:.1f} us per event"
            ),
        )
    ]


# -- in process -----------------------------------------------------------------------

_SENTENCE = (
    "The quick brown fox jumps over a lazy dog while seven wizards quietly box jumping "
    "frogs near an old stone bridge under pale autumn skies. "
)


def _prose(size: int, seed: int) -> str:
    """Deterministic English-looking text of exactly ``size`` characters."""
    start = seed % len(_SENTENCE)
    repeated = _SENTENCE * (size // len(_SENTENCE) + 2)
    return repeated[start : start + size]


def _user_item(turn: int) -> dict[str, Any]:
    """A user message of about 400 bytes once JSON-encoded."""
    return {"role": "user", "content": _prose(370, turn)}


class _Chain:
    """A conversation built turn by turn through the middleware, in process."""

    def __init__(self) -> None:
        self.upstream = ScriptedResponsesApp()
        self.store = MemoryStore()
        self.app = ResponsesStateMiddleware(self.upstream, store=self.store)
        self.head: str | None = None
        self.raw_item_bytes = 0

    async def turn(self, number: int) -> None:
        # The assistant's message text is ~1500 bytes; its item adds id, role, etc.
        self.upstream.script.append({"text": _prose(1500, number * 7)})
        items = [_user_item(number)]
        request: dict[str, Any] = {"model": "m", "input": items}
        if self.head is not None:
            request["previous_response_id"] = self.head
        status, body = await call_asgi(
            self.app, "/v1/responses", msgspec.json.encode(request), [AUTH]
        )
        if status != 200:
            raise RuntimeError(f"turn {number} failed with {status}: {body[:200]!r}")
        response = msgspec.json.decode(body)
        self.head = response["id"]
        self.raw_item_bytes += len(msgspec.json.encode(items))
        self.raw_item_bytes += len(msgspec.json.encode(response["output"]))

    async def build(self, turns: int) -> _Chain:
        for number in range(turns):
            await self.turn(number)
        return self


async def _replay_costs() -> tuple[float, float, int]:
    """Median seconds of the middleware's request preparation with and without a
    ``REPLAY_TURNS``-turn history, and the size of the replayed upstream body."""
    chain = await _Chain().build(REPLAY_TURNS)
    store = chain.store
    with_history = msgspec.json.encode(
        {"model": "m", "input": [_user_item(-1)], "previous_response_id": chain.head}
    )
    without_history = msgspec.json.encode({"model": "m", "input": [_user_item(-1)]})

    async def prepare(raw: bytes) -> bytes:
        request = parse_turn_request(raw)
        history = None
        if request.previous_response_id is not None:
            records = await store.get_chain(OWNER, request.previous_response_id)
            if records is None:
                raise RuntimeError("the benchmark chain was not found")
            history = chain_input(records)
        return upstream_body(request, history)

    chained: list[float] = []
    plain: list[float] = []
    for _ in range(REPLAY_CALLS):
        for raw, costs in ((with_history, chained), (without_history, plain)):
            start = time.perf_counter()
            await prepare(raw)
            costs.append(time.perf_counter() - start)
    return median(chained), median(plain), len(await prepare(with_history))


def replay() -> list[Row]:
    chained, plain, replayed = asyncio.run(_replay_costs())
    added = chained - plain
    return [
        row(
            f"(c) added time to replay a {REPLAY_TURNS}-turn chain",
            ms(added),
            target="<= 1 ms",
            met=added <= 0.001,
            details=(
                f"parse + get_chain + upstream_body: {ms(chained)} vs {ms(plain)} "
                f"without history; {replayed / 1024:.0f} KiB upstream body; "
                f"median of {REPLAY_CALLS}"
            ),
        )
    ]


def storage() -> list[Row]:
    rows = []
    for turns in STORAGE_TURNS:
        chain = asyncio.run(_Chain().build(turns))
        ratio = chain.store.size / chain.raw_item_bytes
        rows.append(
            row(
                f"(d) stored bytes / item bytes, {turns}-turn chain",
                f"{ratio:.3f}",
                target="<= 1.5",
                met=ratio <= 1.5,
                details=(
                    f"MemoryStore.size {chain.store.size / 1024:.0f} KiB, "
                    f"items {chain.raw_item_bytes / 1024:.0f} KiB (user ~400 B, assistant "
                    "~1.5 KB per turn)"
                ),
            )
        )
    return rows


def bridge() -> list[Row]:
    """The chat bridge against the bare chat app (``bench_bridge.py``)."""
    import bench_bridge

    return [*bench_bridge.stream(), *bench_bridge.in_process(), *bench_bridge.latency()]


def redis() -> list[Row]:
    """RedisStore against MemoryStore on a redis-server of its own (``bench_redis.py``)."""
    import bench_redis
    from _redis_server import redis_server

    with redis_server() as url:
        return [row(name, value) for name, value in bench_redis.run(url)]


def conversations() -> list[Row]:
    """A turn on a long conversation against one on a long chain, and a conversation's
    bytes (``bench_conversations.py``)."""
    import bench_conversations
    from _redis_server import redis_server

    with redis_server() as url:
        return [row(name, value) for name, value in bench_conversations.run(url)]


def background() -> list[Row]:
    """A background turn against the same turn in the foreground (``bench_background.py``)."""
    import bench_background

    return bench_background.rows()


def metrics() -> list[Row]:
    """A turn without metrics, with them, and with the DEBUG line (``bench_metrics.py``)."""
    import bench_metrics

    return bench_metrics.rows()


def websocket() -> list[Row]:
    """WebSocket mode against HTTP: request bytes of a Codex-like session, per-turn
    latency (``bench_websocket.py``)."""
    import bench_websocket

    return bench_websocket.rows()


def cluster() -> list[Row]:
    """Redis work per turn by chain length, before and after the cluster layout; one
    node against a cluster (``bench_cluster.py``)."""
    import bench_cluster

    return bench_cluster.rows()


SECTIONS: list[tuple[str, Callable[[], list[Row]]]] = [
    ("latency", latency),
    ("stream", stream),
    ("replay", replay),
    ("storage", storage),
    ("bridge", bridge),
    ("redis", redis),
    ("conversations", conversations),
    ("background", background),
    ("metrics", metrics),
    ("websocket", websocket),
    ("cluster", cluster),
]


def main(argv: list[str]) -> int:
    pin_client()
    known = dict(SECTIONS)
    wanted = argv or [name for name, _ in SECTIONS]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        return 2
    rows: list[Row] = []
    for name in wanted:
        start = time.perf_counter()
        rows.extend(known[name]())
        print(f"{name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
