"""Redis work per turn by chain length, before and after the cluster layout, and one
Redis node against a three-primary Redis Cluster under the same load.

    python benchmarks/bench_cluster.py                   # every row
    python benchmarks/bench_cluster.py --before da55d7c  # "before" is that commit
    python benchmarks/bench_cluster.py --before ""       # no "before" rows

Everything goes the way ``soak.py`` goes: two uvicorn processes serving
``_soak_app:middleware`` (a ``RedisStore`` in front of an upstream answering a digest
of its input, so every reply is checked), clients on the official ``openai`` SDK.

* **Redis work per turn.** One chain is built turn by turn to 10, 100 and 1000 turns;
  at each length ``MEASURED`` more turns continue its head (one every ``soak.PACE``
  seconds), and the Redis servers' ``used_cpu_sys + used_cpu_user`` (idle rate taken
  off), Lua script microseconds and commands run (``INFO commandstats``) are read
  before and after (``soak.redis_cpu_per_turn``). Measured for the ``--before``
  commit's ``state_middleware`` (from ``git archive``, run by the same harness; the
  store refuses a cluster there, so one node only), and for the code this script
  imports, on one node and on the cluster.
* **One node against a cluster.** ``THROUGHPUT_CHAINS`` chains of
  ``THROUGHPUT_TURNS`` turns at once, on one ``redis-server`` and on a six-node cluster
  (three primaries), both up at once, ``ROUNDS`` rounds alternating which goes first:
  turns/s, p50/p99, and the Redis CPU a turn cost (all primaries, idle rate taken off).

About two minutes on 2 cores; Redis, the middleware processes and the client share both
cores (also under ``run.py``, which otherwise keeps its client off the servers' core).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import soak
from _common import BENCH_DIR, CLIENT_CPUS, SERVER_CPUS, Row, markdown_table, row
from _redis_server import redis_server

sys.path.insert(0, str(BENCH_DIR.parent))
from tests._redis_cluster import LocalCluster  # from the repository root, just added

__all__ = ["rows"]

BEFORE = "da55d7c"  # the last commit with one Redis key per turn
LENGTHS = (10, 100, 1000)
MEASURED = 50
THROUGHPUT_CHAINS = 100
THROUGHPUT_TURNS = 20
ROUNDS = 3


def _describe(code: Path) -> str:
    """The commit of the checkout at ``code``, and ``+changes`` when its
    ``state_middleware`` differs from that commit."""

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", "-C", str(code), *arguments], capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or str(code)
    return commit + ("+changes" if git("status", "--porcelain", "--", "state_middleware") else "")


@contextlib.contextmanager
def _checkout(commit: str) -> Iterator[Path]:
    """``state_middleware`` as of ``commit``, in a temporary directory."""
    archive = subprocess.run(
        ["git", "-C", str(BENCH_DIR.parent), "archive", commit, "state_middleware"],
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.TemporaryDirectory(prefix=f"state-middleware-{commit}-") as directory:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        yield Path(directory)


def _single(url: str) -> Callable[[], list[int]]:
    port = soak.redis_port(url)
    return lambda: [port]


def _cost_rows(label: str, costs: Sequence[soak.Cost]) -> list[Row]:
    return [
        row(
            f"Redis CPU per turn, {cost.length}-turn chain, {label}",
            f"{cost.cpu_usec:.0f} us",
            details=f"of which Lua scripts {cost.script_usec:.0f} us; {cost.commands:.1f} "
            f"commands; median turn {cost.latency * 1000:.1f} ms; {MEASURED} turns through "
            f"the SDK, one every {soak.PACE * 1000:.0f} ms",
        )
        for cost in costs
    ]


async def _per_turn(code: Path, cluster: bool) -> list[soak.Cost]:
    with contextlib.ExitStack() as stack:
        if cluster:
            nodes = stack.enter_context(LocalCluster())
            urls = [node.url for node in nodes.nodes[:2]]
            primaries = soak.cluster_primaries(nodes)
        else:
            url = stack.enter_context(redis_server())
            urls, primaries = [url, url], _single(url)
        processes = stack.enter_context(soak.serve(urls, code))
        return await soak.redis_cpu_per_turn(processes, primaries, LENGTHS, MEASURED)


def per_turn(before: str | None = BEFORE) -> list[Row]:
    """Redis work per turn at each of ``LENGTHS``: the ``before`` commit on one node, the
    current code on one node and on the cluster."""
    rows: list[Row] = []
    if before:
        with _checkout(before) as code:
            rows += _cost_rows(f"one node, before ({before})", asyncio.run(_per_turn(code, False)))
    now = _describe(soak.CODE)
    rows += _cost_rows(f"one node, now ({now})", asyncio.run(_per_turn(soak.CODE, False)))
    rows += _cost_rows(f"cluster, now ({now})", asyncio.run(_per_turn(soak.CODE, True)))
    return rows


async def _throughput() -> list[Row]:
    loads: dict[str, list[soak.Load]] = {"one node": [], "cluster": []}
    spent: dict[str, list[float]] = {"one node": [], "cluster": []}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server())
        cluster = stack.enter_context(LocalCluster())
        setups = {
            "one node": (stack.enter_context(soak.serve([url, url])), _single(url)),
            "cluster": (
                stack.enter_context(soak.serve([node.url for node in cluster.nodes[:2]])),
                soak.cluster_primaries(cluster),
            ),
        }
        for processes, _ in setups.values():
            await soak.run_load(processes, 2, 2)  # each process serves a turn first
        order = list(setups)
        for number in range(ROUNDS):
            for name in order if number % 2 == 0 else order[::-1]:
                processes, primaries = setups[name]
                ports = primaries()
                before, idle_rate = await soak.idle(ports)
                load = await soak.run_load(processes, THROUGHPUT_CHAINS, THROUGHPUT_TURNS)
                busy = soak.spent(ports).cpu - before.cpu - idle_rate * load.seconds
                loads[name].append(load)
                spent[name].append(busy * 1e6 / load.turns)
    rows = []
    for name, measured in loads.items():
        rates = [load.rate for load in measured]
        wrong = sum(len(load.wrong) for load in measured)
        errors = sum(sum(load.errors.values()) for load in measured)
        cpu = statistics.median(spent[name])
        rows.append(
            row(
                f"throughput, {name}, {THROUGHPUT_CHAINS} chains x {THROUGHPUT_TURNS} turns",
                f"{statistics.median(rates):.0f} turns/s",
                details=f"rounds {', '.join(f'{rate:.0f}' for rate in rates)}; p50 "
                f"{statistics.median(load.percentile(0.5) for load in measured) * 1000:.0f} ms, "
                f"p99 {statistics.median(load.percentile(0.99) for load in measured) * 1000:.0f}"
                f" ms; Redis CPU {cpu:.0f} us per turn (all primaries, idle rate taken off; "
                f"{cpu * statistics.median(rates) / 1e4:.0f}% of one core); "
                f"{errors} errors, {wrong} wrong histories",
            )
        )
    return rows


def throughput() -> list[Row]:
    """One ``redis-server`` against a three-primary cluster under the same SDK load."""
    return asyncio.run(_throughput())


@contextlib.contextmanager
def _every_cpu() -> Iterator[None]:
    """Let this process, and so every server it starts, use every core meanwhile
    (``run.py`` keeps itself off the servers' core; here Redis, the middleware and the
    clients share both, as in production)."""
    every = SERVER_CPUS | CLIENT_CPUS
    if not every or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, every)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def rows(before: str | None = BEFORE) -> list[Row]:
    with _every_cpu():
        return [*per_turn(before), *throughput()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--before", default=BEFORE, help="the commit measured as 'before' ('' for none)"
    )
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    table = markdown_table(rows(arguments.before or None))
    print(f"Python {sys.version.split()[0]}, {time.perf_counter() - started:.0f} s in all\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
