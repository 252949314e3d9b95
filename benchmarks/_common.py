"""Helpers shared by the benchmarks: uvicorn subprocesses, timing, in-process ASGI
calls, and the markdown table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "BENCH_DIR",
    "Comparison",
    "Measure",
    "Row",
    "Served",
    "call_asgi",
    "compare",
    "free_port",
    "markdown_table",
    "median",
    "ms",
    "row",
    "timed",
    "uvicorn_server",
]

BENCH_DIR = Path(__file__).resolve().parent

#: one table row: measurement, result, target, met, details; shorter rows are padded
Row = tuple[str, ...]
COLUMNS = ("Measurement", "Result", "Target", "Met", "Details")


def row(
    measurement: str,
    result: str,
    *,
    target: str = "",
    met: bool | None = None,
    details: str = "",
) -> Row:
    verdict = "" if met is None else ("yes" if met else "**no**")
    return (measurement, result, target, verdict, details)


def markdown_table(rows: Sequence[Row]) -> str:
    """A markdown table of ``rows`` under ``COLUMNS``, each column padded to width."""
    cells = [COLUMNS, *(tuple(r) + ("",) * (len(COLUMNS) - len(r)) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(action: Callable[[], Any]) -> float:
    """Seconds one call of ``action`` took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], timeout: float, name: str = "uvicorn"
) -> None:
    """Until ``process`` accepts connections on ``port``; fails if it exits or is late."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server process, killing it if it does not exit within 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


#: With two or more cores, servers run on the last one and the measuring client on the
#: others, so the client and the server under test never take turns on one core (on this
#: project's 2-core machines that scheduling noise was larger than the effects measured).
_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
SERVER_CPUS = set(_CPUS[-1:]) if len(_CPUS) >= 2 else set()
CLIENT_CPUS = set(_CPUS[:-1]) if len(_CPUS) >= 2 else set()


def _pin(pid: int, cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cpus)


def pin_client() -> None:
    """Keep the measuring process off the servers' core (see ``SERVER_CPUS``)."""
    _pin(0, CLIENT_CPUS)


@contextlib.contextmanager
def uvicorn_server(app: str, *, app_dir: Path = BENCH_DIR) -> Iterator[str]:
    """Serve ``module:attribute`` (found in ``app_dir``) with uvicorn in a subprocess on
    127.0.0.1; yields the base URL and stops the server afterwards."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(app_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--lifespan",
        "off",
    ]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _pin(process.pid, SERVER_CPUS)
    try:
        wait_for_port(port, process, timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


async def call_asgi(
    app: Any, path: str, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, bytes]:
    """``POST path`` straight into an ASGI app, no server: the status and whole body.

    After the request body, ``receive`` waits until the app has returned, then reports
    the client gone, as a server does once the response is complete."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    answered = asyncio.Event()
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    finally:
        answered.set()
    return status, b"".join(chunks)


# -- two apps side by side -------------------------------------------------------------

#: requests against one server through a kept-alive client; seconds per request
Measure = Callable[[httpx.Client], list[float]]


@dataclass(frozen=True)
class Served:
    """An app as ``uvicorn`` names it (``module:attribute`` in ``BENCH_DIR``), what the
    table calls it, and how it is measured."""

    label: str
    app: str
    measure: Measure


@dataclass(frozen=True)
class Comparison:
    """Per-request seconds of the bare app and of the other one, and the median of the
    per-round ratios (other / bare)."""

    bare: Served
    other: Served
    bare_times: list[float]
    other_times: list[float]
    ratio: float
    ratios: list[float]

    @property
    def added(self) -> float:
        """Median seconds the other app added."""
        return median(self.other_times) - median(self.bare_times)

    def details(self, count: str) -> str:
        return (
            f"median {self.bare.label} {ms(median(self.bare_times))}, {self.other.label} "
            f"{ms(median(self.other_times))} (+{ms(self.added)}); {len(self.ratios)} rounds "
            f"x {count}; per-round ratios {min(self.ratios):.3f}-{max(self.ratios):.3f}"
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def compare(
    bare: Served, other: Served, *, rounds: int, headers: Sequence[tuple[bytes, bytes]]
) -> Comparison:
    """Serve both apps (one uvicorn subprocess each) and measure each ``rounds`` times
    after one warm-up, alternating which goes first, so drift hits both alike."""
    times: dict[str, list[float]] = {"bare": [], "other": []}
    ratios: list[float] = []
    with (
        uvicorn_server(bare.app) as bare_url,
        uvicorn_server(other.app) as other_url,
        httpx.Client(base_url=bare_url, headers=list(headers), timeout=60) as bare_client,
        httpx.Client(base_url=other_url, headers=list(headers), timeout=60) as other_client,
    ):
        runs = {"bare": (bare.measure, bare_client), "other": (other.measure, other_client)}
        for measure, client in runs.values():
            measure(client)
        order = list(runs)
        for number in range(rounds):
            medians: dict[str, float] = {}
            for name in order if number % 2 == 0 else order[::-1]:
                measure, client = runs[name]
                samples = measure(client)
                times[name].extend(samples)
                medians[name] = median(samples)
            ratios.append(medians["other"] / medians["bare"])
    return Comparison(bare, other, times["bare"], times["other"], median(ratios), ratios)
