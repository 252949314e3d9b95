"""Soak: many long chains through two middleware processes on a Redis Cluster, through
the official ``openai`` SDK, with a primary failover in the middle.

    python benchmarks/soak.py                          # 100 chains x 100 turns
    python benchmarks/soak.py --chains 20 --turns 30   # a quick one
    python benchmarks/soak.py --redis single           # one redis-server, no failover

Not a test (CI never runs it); about 70-80 seconds on 2 cores. It starts:

* its own six-node Redis Cluster (``tests/_redis_cluster.py``: three primaries, one
  replica each), or with ``--redis single`` one ``redis-server``;
* two uvicorn processes on 127.0.0.1, each ``ResponsesStateMiddleware`` with
  ``RedisStore.from_url(<a node's URL>)`` (a different node each) in front of an
  upstream that answers every request with a digest of the items it received
  (``_soak_app.py``).

Then ``--chains`` chains run concurrently, ``--turns`` turns each; every turn names the
previous one (``previous_response_id``), goes to the other process than the turn before,
and is streamed or JSON in turn (and sends its input as a string or as an item list).
Each client is an ``AsyncOpenAI`` with ``max_retries`` high enough to ride out a
failover (503s are retried by the SDK). When half the turns are done, the primary of
one third of the slots is killed (SIGKILL); the run goes on while its replica takes
over, and the dead node is restarted as a replica. The first turns are the first
requests the processes' Redis clients see (``--warm-up`` sends one turn through each
process before), and statuses and errors are counted by phase: first turns, steady,
primary down, replica promoted, node rejoined.

A turn the client sees fail after the SDK's retries is counted by kind and sent again;
one whose ``previous_response_id`` is not found (a write lost with the dead primary) is
counted as lost and the chain goes back one turn. A **wrong history** is a reply whose
digest differs from the one of the chain's own turns, in order: it must never happen.

Last, one chain is built to ``--long-chain`` turns through the same two processes, one
turn at a time; at chain length 10 and at the long length, ``--measured`` more turns
continue the chain's head, one every ``PACE`` seconds at both lengths, and the Redis
CPU they cost is read from ``INFO`` on every primary: ``used_cpu_sys + used_cpu_user``
(minus the idle rate measured just before), and of that, the time spent in Lua scripts
(``INFO commandstats``, ``evalsha``: wall time inside Redis, so on a busy machine it can
exceed the CPU time); and how many commands a turn runs (a script's own included),
which timing noise does not blur.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import redis
from _common import BENCH_DIR, free_port, markdown_table, row, stop, wait_for_port
from _redis_server import redis_server
from _soak_app import REDIS_URL_VARIABLE, expected

import state_middleware

sys.path.insert(0, str(BENCH_DIR.parent))
from tests._redis_cluster import LocalCluster  # from the repository root, just added

__all__ = [
    "CODE",
    "Cost",
    "Load",
    "Processes",
    "Spent",
    "cluster_primaries",
    "idle",
    "redis_cpu_per_turn",
    "redis_port",
    "run_load",
    "serve",
    "spent",
]

API_KEY = "sk-soak"
MODEL = "scripted-model"
#: the SDK's own retries (0.5 s doubling to 8 s between them: about 23 s in all, well
#: past a failover's few seconds)
SDK_RETRIES = 6
#: times the client sends a turn again after the SDK gave up on it, before giving up
CLIENT_ATTEMPTS = 20
CLIENT_RETRY_DELAY = 0.5  # seconds
REQUEST_TIMEOUT = 60.0  # seconds, per attempt
SHORT_CHAIN = 10
#: seconds from the start of one measured turn to the next, at every chain length (a
#: turn on a long chain takes longer in the middleware; at its own pace a short chain's
#: turns would leave Redis less time idle between them, and a Redis woken from idle
#: spends more CPU on the same commands, which would flatter the short chain)
PACE = 0.03
#: where the ``state_middleware`` this script imports is (the middleware processes
#: import the same one)
CODE = Path(state_middleware.__file__).resolve().parent.parent


# -- the middleware processes ---------------------------------------------------------


#: the phases of a run without a failover: until every chain has had its first turn
#: answered (the processes' Redis clients are new), then the rest
FIRST_TURNS = "first turns"
STEADY = "steady"


@dataclass
class Processes:
    """The base URLs of the middleware processes, and how many responses of each HTTP
    status the clients received (SDK retries included) in each phase of the run."""

    urls: list[str]
    phase: str = STEADY
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def clients(self) -> list[openai.AsyncOpenAI]:
        """One SDK client per process, counting every response it gets."""

        async def count(response: Any) -> None:  # an httpx(2) response: the SDK's own
            self.statuses[self.phase, response.status_code] += 1

        return [
            openai.AsyncOpenAI(
                base_url=f"{url}/v1",
                api_key=API_KEY,
                max_retries=SDK_RETRIES,
                timeout=REQUEST_TIMEOUT,
                http_client=openai.DefaultAsyncHttpxClient(event_hooks={"response": [count]}),
            )
            for url in self.urls
        ]


@contextlib.contextmanager
def serve(redis_urls: Sequence[str], code: Path = CODE) -> Iterator[Processes]:
    """One uvicorn process serving ``_soak_app:middleware`` per Redis URL (not pinned to
    a core: on 2 cores they share both with Redis and the client), importing the
    ``state_middleware`` found in ``code``."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for redis_url in redis_urls:
            port = free_port()
            command = [sys.executable, "-m", "uvicorn", "_soak_app:middleware", "--factory"]
            command += ["--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(port)]
            command += ["--log-level", "warning", "--no-access-log"]
            environment = {**os.environ, REDIS_URL_VARIABLE: redis_url, "PYTHONUNBUFFERED": "1"}
            environment["PYTHONPATH"] = str(code)
            # In BENCH_DIR, so no state_middleware in the working directory comes first.
            processes.append(subprocess.Popen(command, env=environment, cwd=BENCH_DIR))
            wait_for_port(port, processes[-1], timeout=20)
            urls.append(f"http://127.0.0.1:{port}")
        yield Processes(urls)
    finally:
        for process in processes:
            stop(process)


# -- chains ---------------------------------------------------------------------------


#: what runs alongside the chains once they are half done; it names each phase it
#: enters with the function it is given
Midway = Callable[[Callable[[str], None]], Awaitable[None]]


class _StreamFailed(Exception):
    """A streamed turn that ended without ``response.completed``."""


@dataclass
class Load:
    """What the chains saw; ``errors`` counts failures by phase and kind."""

    turns: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    phase: str = STEADY
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    lost: int = 0

    @property
    def rate(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _kind(exc: BaseException) -> str:
    """What a failure the client saw was, briefly, so equal failures count once."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        return f"HTTP {exc.status_code} {body.get('code') or exc.code or type(exc).__name__}"
    if isinstance(exc, _StreamFailed):
        return f"stream: {exc}"
    return f"{type(exc).__name__}: {exc}"[:100]


async def _ask(
    client: openai.AsyncOpenAI, text: str, previous: str | None, *, stream: bool, listed: bool
) -> tuple[str, str]:
    """One turn through the SDK: the response id and its output text."""
    options: dict[str, Any] = {"model": MODEL, "store": True}
    options["input"] = [{"role": "user", "content": text}] if listed else text
    if previous is not None:
        options["previous_response_id"] = previous
    if not stream:
        response = await client.responses.create(**options)
        return response.id, response.output_text
    events = await client.responses.create(**options, stream=True)
    async with events:
        async for event in events:
            if event.type == "response.completed":
                return event.response.id, event.response.output_text
            if event.type == "response.failed":
                error = event.response.error
                raise _StreamFailed(f"response.failed {error.code if error else ''}")
            if event.type == "error":
                raise _StreamFailed(f"error {event.code}")
    raise _StreamFailed("ended without response.completed")


@dataclass
class Chain:
    """One conversation as its client knows it: (user text, assistant text, response
    id) of every turn, oldest first."""

    number: int
    turns: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def head(self) -> str | None:
        return self.turns[-1][2] if self.turns else None

    async def turn(
        self, clients: Sequence[openai.AsyncOpenAI], number: int, load: Load, extend: bool = True
    ) -> None:
        """Turn ``number``: sent until it is answered (a wrong history is recorded, not
        retried); with ``extend`` it becomes the chain's new head."""
        client = clients[(self.number + number) % len(clients)]
        stream = (number // 2 + self.number) % 2 == 0
        listed = number % 3 != 0
        started = time.perf_counter()
        for _ in range(CLIENT_ATTEMPTS):
            text = f"chain {self.number} turn {number} {random.getrandbits(32):08x}"
            previous = self.head
            try:
                response_id, answer = await _ask(
                    client, text, previous, stream=stream, listed=listed
                )
            except openai.NotFoundError as exc:
                load.errors[load.phase, _kind(exc)] += 1
                if self.turns:  # lost with the dead primary: go back one turn
                    self.turns.pop()
                    load.lost += 1
                continue
            except (openai.APIError, _StreamFailed) as exc:
                load.errors[load.phase, _kind(exc)] += 1
                await asyncio.sleep(CLIENT_RETRY_DELAY)
                continue
            want = expected(((user, assistant) for user, assistant, _ in self.turns), text)
            if answer != want:
                load.wrong.append(
                    f"chain {self.number} turn {number} ({'stream' if stream else 'json'}, "
                    f"previous {previous}, got {response_id}): upstream saw {answer!r}, "
                    f"the chain's history is {want!r}"
                )
            if extend:
                self.turns.append((text, answer, response_id))
            load.latencies.append(time.perf_counter() - started)
            load.turns += 1
            return
        raise RuntimeError(f"chain {self.number} turn {number}: {CLIENT_ATTEMPTS} attempts failed")


async def run_load(
    processes: Processes,
    chains: int,
    turns: int,
    midway: Midway | None = None,
) -> Load:
    """``chains`` chains of ``turns`` turns at once; ``midway`` runs alongside once half
    the turns are done (the run waits for it before it ends), naming the phases it goes
    through."""
    clients = processes.clients()
    load = Load()

    def enter(phase: str) -> None:
        processes.phase = load.phase = phase

    halfway = asyncio.Event()
    total = chains * turns
    started_chains = 0

    async def run_chain(number: int) -> None:
        nonlocal started_chains
        chain = Chain(number)
        for turn in range(turns):
            await chain.turn(clients, turn, load)
            if turn == 0:
                started_chains += 1
                if started_chains == chains:
                    enter(STEADY)
            if load.turns >= total // 2:
                halfway.set()

    async def at_halfway() -> None:
        if midway is not None:
            await halfway.wait()
            await midway(enter)

    enter(FIRST_TURNS)
    started = time.perf_counter()
    try:
        await asyncio.gather(at_halfway(), *(run_chain(number) for number in range(chains)))
    finally:
        load.seconds = time.perf_counter() - started
        for client in clients:
            await client.close()
    return load


# -- Redis CPU ------------------------------------------------------------------------


#: ``INFO commandstats`` entries of Lua scripts (the commands a script calls are counted
#: both in their own entries and in the script's, so only these are summed)
SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_evalsha_ro", "cmdstat_eval_ro")


@dataclass(frozen=True)
class Spent:
    """What Redis servers have done so far: CPU seconds, microseconds in Lua scripts,
    and commands run (but ``INFO``; a script's own commands count too)."""

    cpu: float
    script_usec: float
    commands: int


def spent(ports: Sequence[int]) -> Spent:
    """What the Redis servers on ``ports`` have done so far."""
    cpu = usec = 0.0
    commands = 0
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as admin:
            info = admin.info("cpu")
            cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            stats = admin.info("commandstats")
        usec += sum(float(stats[name]["usec"]) for name in SCRIPT_COMMANDS if name in stats)
        commands += sum(int(s["calls"]) for name, s in stats.items() if name != "cmdstat_info")
    return Spent(cpu, usec, commands)


async def idle(ports: Sequence[int], seconds: float = 1.0) -> tuple[Spent, float]:
    """What the Redis servers on ``ports`` have done so far, after ``seconds`` of
    nothing to do, and the CPU seconds per second they spent doing it."""
    before = spent(ports)
    await asyncio.sleep(seconds)
    after = spent(ports)
    return after, (after.cpu - before.cpu) / seconds


@dataclass(frozen=True)
class Cost:
    """Redis work of a turn at one chain length: microseconds of CPU (idle rate taken
    off) and of Lua scripts (wall time inside Redis), and commands, per turn; and the
    turns' median wall time."""

    length: int
    cpu_usec: float
    script_usec: float
    commands: float
    latency: float


async def redis_cpu_per_turn(
    processes: Processes,
    primaries: Callable[[], list[int]],
    lengths: Sequence[int],
    measured: int,
) -> list[Cost]:
    """Build one chain turn by turn to each of ``lengths``; there, ``measured`` turns
    continue its head (the chain keeps its length), one every ``PACE`` seconds, while
    the Redis ``primaries`` are watched. Wrong histories raise."""
    clients = processes.clients()
    load = Load()
    chain = Chain(0)
    costs = []
    try:
        for length in lengths:
            while len(chain.turns) < length:
                await chain.turn(clients, len(chain.turns), load)
            for number in range(3):  # warm-up: each process loads the chain once
                await chain.turn(clients, length + number, load, extend=False)
            ports = primaries()
            idle_to, idle_rate = await idle(ports)
            load.latencies.clear()
            started = time.perf_counter()
            for number in range(measured):
                await asyncio.sleep(started + number * PACE - time.perf_counter())
                await chain.turn(clients, length + number, load, extend=False)
            elapsed = time.perf_counter() - started
            done = spent(ports)
            cpu = max(0.0, done.cpu - idle_to.cpu - idle_rate * elapsed)
            costs.append(
                Cost(
                    length,
                    cpu * 1e6 / measured,
                    (done.script_usec - idle_to.script_usec) / measured,
                    (done.commands - idle_to.commands) / measured,
                    statistics.median(load.latencies),
                )
            )
    finally:
        for client in clients:
            await client.close()
    if load.wrong or load.errors:
        raise RuntimeError(f"the measured chain failed: {load.wrong[:3]} {dict(load.errors)}")
    return costs


# -- the run --------------------------------------------------------------------------


@dataclass
class Failover:
    """What the failover did and when (seconds from the kill)."""

    victim: str = ""
    promoted: str = ""
    taken_over: float = 0.0
    rejoined: float = 0.0


#: the phases of a failover, after ``STEADY``: from the kill to the promotion, to the
#: dead node's return, and after it
PRIMARY_DOWN = "primary down"
REPLICA_PROMOTED = "replica promoted"
REJOINED = "node rejoined"
PHASES = (FIRST_TURNS, STEADY, PRIMARY_DOWN, REPLICA_PROMOTED, REJOINED)


def _failover(cluster: LocalCluster, report: Failover) -> Midway:
    def kill_and_restart(enter: Callable[[str], None]) -> None:
        victim = cluster.primary_for("soak")
        report.victim = victim.address
        killed = time.perf_counter()
        cluster.kill(victim)
        enter(PRIMARY_DOWN)
        report.promoted = cluster.wait_for_failover(victim).address
        report.taken_over = time.perf_counter() - killed
        enter(REPLICA_PROMOTED)
        cluster.restart(victim)
        report.rejoined = time.perf_counter() - killed
        enter(REJOINED)

    async def midway(enter: Callable[[str], None]) -> None:
        await asyncio.to_thread(kill_and_restart, enter)

    return midway


def redis_port(url: str) -> int:
    """The port of a ``redis://host:port/db`` URL."""
    return int(url.rpartition(":")[2].partition("/")[0])


def cluster_primaries(cluster: LocalCluster) -> Callable[[], list[int]]:
    return lambda: [view.port for view in cluster.views() if view.is_primary]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _report(
    arguments: argparse.Namespace,
    load: Load,
    statuses: Counter[tuple[str, int]],
    failover: Failover | None,
    costs: Sequence[Cost],
) -> str:
    total = arguments.chains * arguments.turns
    errors = "; ".join(f"{n}x {kind} ({phase})" for (phase, kind), n in load.errors.most_common())
    on_wire = "; ".join(
        f"{phase}: " + ", ".join(f"{n}x {status}" for (_, status), n in sorted(counts.items()))
        for phase in PHASES
        if (counts := Counter({key: n for key, n in statuses.items() if key[0] == phase}))
    )
    rows = [
        row(
            "turns/s",
            f"{load.rate:.1f}",
            details=f"{load.turns} turns ({arguments.chains} chains x {arguments.turns}) "
            f"in {load.seconds:.1f} s, two middleware processes",
        ),
        row(
            "turn latency p50 / p99 / max",
            f"{_ms(load.percentile(0.5))} / {_ms(load.percentile(0.99))} / "
            f"{_ms(max(load.latencies, default=0.0))}",
            details=f"{arguments.chains} turns in flight; a turn from its first attempt "
            "to its answer, retries included",
        ),
        row(
            "errors seen by clients after SDK retries",
            str(sum(load.errors.values())),
            details=errors or "none",
        ),
        row(
            "HTTP responses the SDK received",
            str(sum(statuses.values())),
            details=f"{on_wire} (the SDK retried each 5xx)",
        ),
        row("turns lost (previous response not found)", str(load.lost)),
        row(
            "wrong histories",
            str(len(load.wrong)),
            target="0",
            met=not load.wrong,
            details=f"of {load.turns} turns checked ({total} planned)",
        ),
    ]
    if failover is not None:
        rows.append(
            row(
                "failover",
                f"{failover.taken_over:.1f} s",
                details=f"killed primary {failover.victim} (SIGKILL) at half the turns; "
                f"{failover.promoted} took over after {failover.taken_over:.1f} s, the dead "
                f"node was back as a replica after {failover.rejoined:.1f} s",
            )
        )
    for cost in costs:
        rows.append(
            row(
                f"Redis CPU per turn, chain length {cost.length}",
                f"{cost.cpu_usec:.0f} us",
                details=f"of which Lua scripts {cost.script_usec:.0f} us; "
                f"{cost.commands:.1f} commands; median turn {_ms(cost.latency)} alone; "
                f"{arguments.measured} turns one every {PACE * 1000:.0f} ms, all primaries",
            )
        )
    return markdown_table(rows)


async def _soak(arguments: argparse.Namespace) -> str:
    costs: list[Cost] = []
    failover: Failover | None = None
    with contextlib.ExitStack() as stack:
        if arguments.redis == "cluster":
            cluster = stack.enter_context(LocalCluster())
            nodes = [node.url for node in cluster.nodes[:2]]
            primaries = cluster_primaries(cluster)
            failover = Failover() if arguments.failover else None
            midway = _failover(cluster, failover) if failover is not None else None
        else:
            url = stack.enter_context(redis_server())
            nodes = [url, url]
            port = redis_port(url)
            primaries, midway = (lambda: [port]), None
        processes = stack.enter_context(serve(nodes))
        if arguments.warm_up:  # one turn per process, so no Redis client is new
            warm = await run_load(processes, len(processes.urls), 1)
            if warm.errors or warm.wrong:
                raise RuntimeError(f"the warm-up failed: {warm.wrong} {dict(warm.errors)}")
            processes.statuses.clear()
        load = await run_load(processes, arguments.chains, arguments.turns, midway)
        statuses = Counter(processes.statuses)
        lengths = [SHORT_CHAIN, arguments.long_chain]
        costs = await redis_cpu_per_turn(processes, primaries, lengths, arguments.measured)
    return _report(arguments, load, statuses, failover, costs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--chains", type=int, default=100, help="chains at once")
    parser.add_argument("--turns", type=int, default=100, help="turns per chain")
    parser.add_argument(
        "--redis", choices=("cluster", "single"), default="cluster", help="what the store uses"
    )
    parser.add_argument(
        "--no-failover", dest="failover", action="store_false", help="kill no primary"
    )
    parser.add_argument(
        "--warm-up",
        action="store_true",
        help="one turn through each process first (by default the first turns of the "
        "chains are the first the processes' Redis clients see)",
    )
    parser.add_argument("--long-chain", type=int, default=1000, help="the long chain's length")
    parser.add_argument("--measured", type=int, default=50, help="turns per CPU measurement")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    table = asyncio.run(_soak(arguments))
    print(f"{arguments.redis}, {time.perf_counter() - started:.0f} s in all\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
