"""What metrics cost a turn, in process.

The same JSON turn (the scripted Responses app, MemoryStore, ``store: true``, continuing
a stored ``CHAIN``-turn chain so that a context is replayed and counted) goes through
three middlewares: without metrics (the default: no-op hooks, the store called
directly), with ``PrometheusMetrics`` (a registry of its own, the store wrapped and
timed), and with metrics plus the per-turn DEBUG line logged (to a handler that drops
it). Rounds of ``TURNS`` turns per variant, interleaved; per-turn median of ``ROUNDS``.

Run it on the commit before metrics too (``PYTHONPATH`` at a checkout of it; variants
it does not know are skipped) to see what the hooks cost when off.

``python benchmarks/bench_metrics.py`` prints a markdown table; ``run.py metrics``
includes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from _common import Row, call_asgi, markdown_table, median, ms, row

from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware.testing import ScriptedResponsesApp

__all__ = ["rows"]

CHAIN = 10
TURNS = 200
ROUNDS = 15
_AUTH = [(b"authorization", b"Bearer sk-bench")]


def _middlewares() -> dict[str, Any]:
    made = {"off": ResponsesStateMiddleware(ScriptedResponsesApp(), MemoryStore())}
    try:
        from prometheus_client import CollectorRegistry

        from state_middleware.metrics import PrometheusMetrics
    except ImportError:  # before metrics, or without the extra
        return made
    for name in ("metrics", "metrics + DEBUG line"):
        metrics = PrometheusMetrics(CollectorRegistry())
        made[name] = ResponsesStateMiddleware(
            ScriptedResponsesApp(), MemoryStore(), metrics=metrics
        )
    return made


async def _chain(app: Any) -> bytes:
    """A stored chain of ``CHAIN`` turns; the body of a turn continuing it."""
    previous = None
    for n in range(CHAIN):
        body = {"model": "m", "input": f"turn {n} " + "word " * 60}
        if previous is not None:
            body["previous_response_id"] = previous
        status, reply = await call_asgi(app, "/v1/responses", msgspec.json.encode(body), _AUTH)
        assert status == 200, reply
        previous = msgspec.json.decode(reply)["id"]
    return msgspec.json.encode({"model": "m", "input": "next", "previous_response_id": previous})


async def _round(app: Any, body: bytes) -> float:
    started = time.perf_counter()
    for _ in range(TURNS):
        status, _reply = await call_asgi(app, "/v1/responses", body, _AUTH)
        assert status == 200
    return (time.perf_counter() - started) / TURNS


async def _measure() -> dict[str, float]:
    apps = _middlewares()
    bodies = {name: await _chain(app) for name, app in apps.items()}
    logger = logging.getLogger("state_middleware")
    dropped = logging.NullHandler()
    times: dict[str, list[float]] = {name: [] for name in apps}
    for number in range(ROUNDS + 1):
        order = list(apps) if number % 2 else list(reversed(apps))
        for name in order:
            debug = name.endswith("DEBUG line")
            if debug:
                logger.addHandler(dropped)
                logger.setLevel(logging.DEBUG)
            try:
                seconds = await _round(apps[name], bodies[name])
            finally:
                if debug:
                    logger.removeHandler(dropped)
                    logger.setLevel(logging.NOTSET)
            if number:  # the first round warms up
                times[name].append(seconds)
    return {name: median(values) for name, values in times.items()}


def rows() -> list[Row]:
    medians = asyncio.run(_measure())
    off = medians["off"]
    return [
        row(
            f"JSON turn continuing a {CHAIN}-turn chain, {name} (in process, MemoryStore)",
            ms(seconds) if name == "off" else f"+{ms(seconds - off)} ({seconds / off:.3f}x)",
            details=f"median of {ROUNDS} rounds x {TURNS} turns: {ms(seconds)} a turn",
        )
        for name, seconds in medians.items()
    ]


def main() -> None:
    print(markdown_table(rows()))


if __name__ == "__main__":
    main()
