"""How often redis-py's asyncio cluster client fails plain ``SET``s through its own races.

    python benchmarks/cluster_race.py                 # the installed redis-py
    python benchmarks/cluster_race.py --clients 20 --bursts 10,50,200

Starts its own six-node Redis Cluster (``tests/_redis_cluster.py``) and runs three modes:

* ``fresh``: each of ``--clients`` new ``RedisCluster`` clients gets a burst of K
  concurrent first ``SET``s (``asyncio.gather``), for each K of ``--bursts``;
* ``initialized``: the same, after ``await client.initialize()``;
* ``failover``: ``--clients`` initialised clients send bursts of ``--failover-burst``
  ``SET``s while a primary is killed (SIGKILL) and its replica takes over, then the
  dead node is restarted as a replica; ``--failovers`` times, then ``--after`` rounds
  more.

Failures are counted by exception type and message (ports masked). In ``failover``,
errors that name the dead node or the cluster being down are the failover itself; any
other kind is the client's. Another redis-py runs from a throwaway venv:

    python3 -m venv /tmp/redis-7.0.1
    /tmp/redis-7.0.1/bin/pip install "redis==7.0.1" pytest uvicorn
    /tmp/redis-7.0.1/bin/python benchmarks/cluster_race.py

(pytest and uvicorn are what the tests' helper modules import.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests._redis_cluster import LocalCluster  # from the repository root, just added

#: client options: bounded waits, everything else redis-py's default
CLIENT_OPTIONS: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}


def _kind(exc: BaseException) -> str:
    """The exception's type and message, with ports masked so equal failures count once."""
    message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", str(exc))
    return f"{type(exc).__name__}: {message}"[:90]


async def _burst(client: RedisCluster, name: str, size: int) -> list[BaseException]:
    replies = await asyncio.gather(
        *(client.set(f"race:{name}:{n}", b"x") for n in range(size)), return_exceptions=True
    )
    return [reply for reply in replies if isinstance(reply, BaseException)]


async def _close(clients: Sequence[RedisCluster]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.aclose()


async def first_bursts(url: str, clients: int, size: int, initialize: bool) -> Counter[str]:
    """Each of ``clients`` fresh clients, one after the other, gets ``size`` concurrent
    first ``SET``s; the failures by kind (``"ok"`` counts the successes)."""
    counts: Counter[str] = Counter()
    for number in range(clients):
        client = RedisCluster.from_url(url, **CLIENT_OPTIONS)
        try:
            if initialize:
                await client.initialize()
            failures = await _burst(client, f"{number}", size)
        finally:
            await _close([client])
        counts.update(_kind(exc) for exc in failures)
        counts["ok"] += size - len(failures)
    return counts


async def bursts_during_failover(
    cluster: LocalCluster, clients: int, size: int, after: int, failovers: int
) -> Counter[str]:
    """Initialised clients send bursts while a primary is killed and replaced (and
    restarted as a replica, ``failovers`` times), then for ``after`` rounds more (the
    topology refresh comes after the failover)."""
    counts: Counter[str] = Counter()
    pool = [RedisCluster.from_url(cluster.url, **CLIENT_OPTIONS) for _ in range(clients)]
    try:
        for client in pool:
            await client.initialize()

        def kill_and_wait() -> None:
            for number in range(failovers):
                victim = cluster.primary_for(f"race:victim:{number}")
                cluster.kill(victim)
                cluster.wait_for_failover(victim)
                if number + 1 < failovers:
                    cluster.restart(victim)

        failover = asyncio.ensure_future(asyncio.to_thread(kill_and_wait))
        rounds = 0
        while not failover.done() or rounds < after:
            if failover.done():
                rounds += 1
            results = await asyncio.gather(
                *(_burst(client, f"f{number}", size) for number, client in enumerate(pool))
            )
            failures = [exc for found in results for exc in found]
            counts.update(_kind(exc) for exc in failures)
            counts["ok"] += size * len(pool) - len(failures)
        await failover  # raise if the cluster never recovered
    finally:
        await _close(pool)
    return counts


def _is_failover(kind: str) -> bool:
    """Whether a failure is the dead node's (refused, reset, cluster down), not the client's."""
    return kind.startswith(("ConnectionError", "ClusterDownError", "TimeoutError")) or (
        "ConnectionRefusedError" in kind or "Connection reset" in kind
    )


def _row(mode: str, size: int, counts: Counter[str]) -> tuple[str, ...]:
    failed = {kind: n for kind, n in counts.items() if kind != "ok"}
    total = counts["ok"] + sum(failed.values())
    if mode == "failover":
        own = sum(n for kind, n in failed.items() if not _is_failover(kind))
        result = f"{sum(failed.values())}/{total} ({own} not the failover's)"
    else:
        result = f"{sum(failed.values())}/{total}"
    details = "; ".join(f"{n}x {kind}" for kind, n in sorted(failed.items(), key=lambda e: -e[1]))
    return (redis.__version__, mode, str(size), result, details or "-")


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    header = ("redis-py", "mode", "K", "failed", "failures by kind")
    cells = [header, *rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(cell.ljust(size) for cell, size in zip(line, widths, strict=True)) + " |"
        for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main(arguments: argparse.Namespace) -> None:
    sizes = [int(size) for size in arguments.bursts.split(",")]
    rows = []
    with LocalCluster() as cluster:
        for initialize in (False, True):
            mode = "initialized" if initialize else "fresh"
            for size in sizes:
                counts = await first_bursts(cluster.url, arguments.clients, size, initialize)
                rows.append(_row(mode, size, counts))
        counts = await bursts_during_failover(
            cluster,
            arguments.clients,
            arguments.failover_burst,
            arguments.after,
            arguments.failovers,
        )
        rows.append(_row("failover", arguments.failover_burst, counts))
    print(_table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="clients per mode and K")
    parser.add_argument("--bursts", default="10,50,200", help="K: concurrent first SETs")
    parser.add_argument("--failover-burst", type=int, default=50, help="SETs per burst")
    parser.add_argument("--after", type=int, default=5, help="rounds after the failover")
    parser.add_argument("--failovers", type=int, default=3, help="primaries killed in turn")
    asyncio.run(main(parser.parse_args()))
