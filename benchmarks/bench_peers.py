"""Our proxy against codex-relay and the bare upstream, side by side, in one run.

    python benchmarks/bench_peers.py

Three servers stand in front of the SAME scripted Chat Completions upstream
(``ScriptedChatApp`` under uvicorn in its own process):

* ``ours``: ``python -m state_middleware serve --upstream-api chat``;
* ``codex-relay``: the Rust Responses-to-Chat bridge (``pip install codex-relay==0.5.8``;
  this script installs nothing). It keeps the history of each response id in memory, so
  ``previous_response_id`` works; it is started with ``--max-sessions 100000
  --max-session-memory-mb 4096`` so that, like ours, it keeps every turn of the run;
* ``bare``: the upstream itself, spoken to in Chat Completions; a chain resends the
  whole history as chat messages.
* ``forwarder``: our httpx forwarding app alone (no middleware, so no state and no
  translation) under the same uvicorn, spoken to in Chat Completions like ``bare``: the
  floor of any proxy built the way the issue asks (uvicorn in front, httpx behind), for
  the latency sections only.

The client (httpx, one kept-alive connection per server) runs in this process; the
requests of the three are interleaved round by round, rotating who goes first. Both
relays log at warning level. Sections: single-turn JSON and streamed turns (p50/p99),
a 2000-delta stream (time to the last byte), per-turn latency over 50-turn chains, the
RSS (``VmRSS``) of each server process after 250, 500 and 1000 turns of 20 chains with
4 KB messages (from a baseline taken after 2 warm-up chains), and a few probes of what
each Responses server does beyond a turn. Our store's bytes for the RSS workload are
measured by replaying it in process through the same middleware and scripted upstream
(replies are deterministic). Needs 2 cores and about 90 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from _common import call_asgi, free_port, stop, wait_for_port

import state_middleware
from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware._forward import ForwardingApp
from state_middleware.testing import ScriptedChatApp

BENCH_DIR = Path(__file__).resolve().parent
RELAY_VERSION = "0.5.8"
RELAY_MISSING = (
    f"codex-relay is not installed; its column reads 'not installed'. "
    f"Install it with: pip install codex-relay=={RELAY_VERSION}"
)

ROUNDS = 5
TURNS_PER_ROUND = 200  # single-turn requests per server per round
STREAMS_PER_ROUND = 3  # 2000-delta streams per server per round
STREAM_DELTAS = 2000
CHAIN_TURNS = 50
CHAINS = 3  # per server, for the per-turn latency
RSS_CHAINS = 20
RSS_WARMUP = 2  # chains before the RSS baseline
RSS_CHECKPOINTS = (5, 10, 20)  # chains done: 250, 500, 1000 turns
RSS_TEXT = 4000  # characters of each user message in the RSS chains
#: largest distance of a point from the fitted line, relative to the final growth
LINEAR_TOLERANCE = 0.15

UVICORN = [sys.executable, "-m", "uvicorn", "bench_peers:upstream_app", "--app-dir", str(BENCH_DIR)]
FORWARDER = [
    *(sys.executable, "-m", "uvicorn", "bench_peers:forwarder", "--factory"),
    *("--app-dir", str(BENCH_DIR), "--log-level", "warning", "--no-access-log"),
]
OURS = [sys.executable, "-m", "state_middleware", "serve", "--upstream"]
#: keep every turn of the run, as our store does
RELAY_OPTIONS = ["--max-sessions", "100000", "--max-session-memory-mb", "4096"]

_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode
JSON = {"content-type": "application/json"}
#: the last event of a Responses stream, and of a Chat Completions stream
_STREAM_ENDS = (b"event: response.completed", b"data: [DONE]")


class ForgetfulChatApp:
    """``ScriptedChatApp`` without its request log, which would otherwise keep every
    history the benchmark sends it (hundreds of megabytes)."""

    def __init__(self) -> None:
        self.app = ScriptedChatApp()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.app.requests.clear()


#: served by the upstream process: ``uvicorn bench_peers:upstream_app``
upstream_app = ForgetfulChatApp()


def forwarder() -> ForwardingApp:
    """``uvicorn --factory bench_peers:forwarder``: the forwarding app alone, in front of
    ``BENCH_UPSTREAM``."""
    return ForwardingApp(os.environ["BENCH_UPSTREAM"])


# -- processes ------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def rss(self) -> int:
        """Resident set size in bytes (``VmRSS`` of /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for {self.name}")


@contextlib.contextmanager
def launch(name: str, command: list[str], port: int, **env: str) -> Iterator[Server]:
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command, cwd=BENCH_DIR, stdout=log, stderr=log, env={**os.environ, **env}
    )
    try:
        wait_for_port(port, process, timeout=30, name=name)
        yield Server(name, f"http://127.0.0.1:{port}", process)
    finally:
        stop(process)
        log.close()


def relay_binary() -> str | None:
    found = shutil.which("codex-relay")
    beside = Path(sys.executable).parent / "codex-relay"
    return found or (str(beside) if beside.exists() else None)


# -- one server as the client sees it -------------------------------------------------


@dataclass
class Peer:
    """A server and the kept-alive client that talks to it."""

    server: Server
    responses: bool  # speaks the Responses API (else Chat Completions)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.server.url, timeout=120)

    @property
    def name(self) -> str:
        return self.server.name

    def _body(self, text: str, stream: bool, chain: Chain | None) -> bytes:
        if self.responses:
            body: dict[str, Any] = {"model": "m", "input": text}
            if chain is not None and chain.head is not None:
                body["previous_response_id"] = chain.head
        else:
            history = chain.messages if chain is not None else []
            body = {"model": "m", "messages": [*history, {"role": "user", "content": text}]}
        if stream:
            body["stream"] = True
        return _ENCODE(body)

    @property
    def path(self) -> str:
        return "/v1/responses" if self.responses else "/v1/chat/completions"

    def turn(self, text: str, chain: Chain | None = None) -> float:
        """One JSON turn; seconds taken. A chain is extended with the reply."""
        body = self._body(text, False, chain)
        start = time.perf_counter()
        reply = self.client.post(self.path, content=body, headers=JSON)
        elapsed = time.perf_counter() - start
        reply.raise_for_status()
        if chain is not None:
            chain.extend(self, text, _DECODE(reply.content))
        return elapsed

    def stream(self, text: str) -> float:
        """One streamed turn; seconds to the last byte."""
        body = self._body(text, True, None)
        start = time.perf_counter()
        with self.client.stream("POST", self.path, content=body, headers=JSON) as reply:
            reply.raise_for_status()
            ended, carry = False, b""
            for chunk in reply.iter_raw():
                ended = ended or any(mark in carry + chunk for mark in _STREAM_ENDS)
                carry = chunk[-32:]
        elapsed = time.perf_counter() - start
        if not ended:
            raise RuntimeError(f"{self.name}: the stream did not complete")
        return elapsed

    def close(self) -> None:
        self.client.close()


@dataclass
class Chain:
    """A conversation: the last response id (Responses) or the messages (Chat)."""

    head: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    last_text: str = ""

    def extend(self, peer: Peer, text: str, reply: dict[str, Any]) -> None:
        if peer.responses:
            self.head = reply["id"]
            message = next(i for i in reply["output"] if i.get("type") == "message")
            self.last_text = message["content"][0]["text"]
        else:
            self.last_text = reply["choices"][0]["message"]["content"]
            self.messages += [
                {"role": "user", "content": text},
                {"role": "assistant", "content": self.last_text},
            ]


def rotated(peers: list[Peer], number: int) -> list[Peer]:
    shift = number % len(peers)
    return peers[shift:] + peers[:shift]


def interleaved(
    peers: list[Peer], measure: Callable[[Peer], list[float]]
) -> dict[str, list[float]]:
    """``measure`` each peer once to warm up, then ``ROUNDS`` times, rotating the order."""
    for peer in peers:
        measure(peer)
    samples: dict[str, list[float]] = {peer.name: [] for peer in peers}
    for number in range(ROUNDS):
        for peer in rotated(peers, number):
            samples[peer.name] += measure(peer)
    return samples


# -- sections -------------------------------------------------------------------------


def single_turns(peers: list[Peer], stream: bool) -> dict[str, list[float]]:
    def measure(peer: Peer) -> list[float]:
        if stream:
            return [peer.stream("Hello, how are you today?") for _ in range(TURNS_PER_ROUND)]
        return [peer.turn("Hello, how are you today?") for _ in range(TURNS_PER_ROUND)]

    return interleaved(peers, measure)


def long_streams(peers: list[Peer]) -> dict[str, list[float]]:
    def measure(peer: Peer) -> list[float]:
        return [peer.stream(f"DELTAS:{STREAM_DELTAS}") for _ in range(STREAMS_PER_ROUND)]

    return interleaved(peers, measure)


def chains(peers: list[Peer]) -> dict[str, list[list[float]]]:
    """Per-turn seconds of ``CHAINS`` chains of ``CHAIN_TURNS`` turns on each peer."""
    times: dict[str, list[list[float]]] = {peer.name: [] for peer in peers}
    for number in range(CHAINS):
        for peer in rotated(peers, number):
            chain = Chain()
            turns = [peer.turn(f"turn {k}", chain) for k in range(CHAIN_TURNS)]
            _check_history(peer, chain, CHAIN_TURNS)
            times[peer.name].append(turns)
    return times


def _check_history(peer: Peer, chain: Chain, turns: int) -> None:
    """The scripted upstream counts the messages it got: the last turn must have seen
    the whole chain."""
    expected = f"[{2 * turns - 1} messages]"
    if not chain.last_text.startswith(expected):
        raise RuntimeError(f"{peer.name} lost the history: {chain.last_text[:40]!r}")


def _long_text(chain: int, turn: int) -> str:
    words = f"chain {chain} turn {turn} " + "lorem ipsum dolor sit amet " * (RSS_TEXT // 27 + 1)
    return words[:RSS_TEXT]


@dataclass
class Memory:
    """RSS growth (bytes) of each server after each checkpoint, and our store's size."""

    growth: dict[str, list[int]]
    store_bytes: list[int]


def memory(peers: list[Peer], upstream: Server) -> Memory:
    """RSS growth over ``RSS_CHAINS`` long-message chains on each peer, measured from a
    baseline taken after ``RSS_WARMUP`` such chains (which size the heap for the largest
    requests, so that what follows is what the kept history costs)."""
    servers = {peer.name: peer.server for peer in peers if peer.responses}
    servers["upstream"] = upstream
    growth: dict[str, list[int]] = {name: [] for name in servers}
    baseline: dict[str, int] = {}
    for number in range(RSS_WARMUP + RSS_CHAINS):
        if number == RSS_WARMUP:
            time.sleep(0.3)
            baseline = {name: server.rss() for name, server in servers.items()}
        for peer in rotated(peers, number):
            chain = Chain()
            for turn in range(CHAIN_TURNS):
                peer.turn(_long_text(number, turn), chain)
            _check_history(peer, chain, CHAIN_TURNS)
        if number + 1 - RSS_WARMUP in RSS_CHECKPOINTS:
            time.sleep(0.3)
            for name, server in servers.items():
                growth[name].append(server.rss() - baseline[name])
    return Memory(growth, asyncio.run(_store_bytes()))


async def _store_bytes() -> list[int]:
    """How much ``MemoryStore.size`` grew from the baseline to each checkpoint for the
    same workload, replayed in process."""
    store = MemoryStore()
    app = ResponsesStateMiddleware(ForgetfulChatApp(), store, upstream_api="chat")
    sizes = []
    baseline = 0
    for number in range(RSS_WARMUP + RSS_CHAINS):
        if number == RSS_WARMUP:
            baseline = store.size
        head = None
        for turn in range(CHAIN_TURNS):
            body: dict[str, Any] = {"model": "m", "input": _long_text(number, turn)}
            if head is not None:
                body["previous_response_id"] = head
            status, reply = await call_asgi(app, "/v1/responses", _ENCODE(body))
            if status != 200:
                raise RuntimeError(f"in-process turn failed: {status} {reply[:200]!r}")
            head = _DECODE(reply)["id"]
        if number + 1 - RSS_WARMUP in RSS_CHECKPOINTS:
            sizes.append(store.size - baseline)
    return sizes


def probes(peers: list[Peer]) -> dict[str, dict[str, str]]:
    """What each Responses server does beyond a turn, a request or two each: the
    outcome per probe and server."""
    found: dict[str, dict[str, str]] = {}
    for peer in peers:
        if peer.responses:
            for label, outcome in _probe(peer.client).items():
                found.setdefault(label, {})[peer.name] = outcome
    return found


def _probe(client: httpx.Client) -> dict[str, str]:
    def create(key: str = "sk-a", **extra: Any) -> str:
        body = _ENCODE({"model": "m", "input": "probe", **extra})
        headers = {**JSON, "authorization": f"Bearer {key}"}
        reply = client.post("/v1/responses", content=body, headers=headers)
        reply.raise_for_status()
        return str(_DECODE(reply.content)["id"])

    def follow(previous: str, key: str = "sk-a") -> int:
        body = _ENCODE({"model": "m", "input": "next", "previous_response_id": previous})
        headers = {**JSON, "authorization": f"Bearer {key}"}
        return client.post("/v1/responses", content=body, headers=headers).status_code

    auth = {"authorization": "Bearer sk-a"}
    kept = create()
    chat = _ENCODE({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    served = {
        "GET /v1/responses/{id}": client.get(f"/v1/responses/{kept}", headers=auth),
        "DELETE /v1/responses/{id}": client.delete(f"/v1/responses/{kept}", headers=auth),
        "other routes pass through (POST /v1/chat/completions)": client.post(
            "/v1/chat/completions", content=chat, headers=JSON
        ),
    }
    outcomes = {
        label: f"{'yes' if reply.is_success else 'no'} ({reply.status_code})"
        for label, reply in served.items()
    }
    refused = {
        "a store:false turn cannot be continued": follow(create(store=False)),
        "another API key cannot continue a chain": follow(create(), key="sk-b"),
    }
    for label, status in refused.items():
        outcomes[label] = f"{'no: continued' if 200 <= status < 300 else 'yes'} ({status})"
    return outcomes


# -- the table ------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _kb(size: float) -> str:
    return f"{size / 1024:.1f} KB"


def _mb(size: float) -> str:
    return f"{size / 2**20:.1f} MB"


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


class Table:
    COLUMNS = (
        "Measurement",
        "ours (proxy)",
        "codex-relay",
        "bare upstream",
        "forwarder alone",
        "Target",
        "Met",
    )

    def __init__(self, relay: bool) -> None:
        self.relay = relay
        self.rows: list[tuple[str, ...]] = []

    def add(
        self,
        measurement: str,
        ours: str,
        relay: str,
        bare: str,
        target: str = "",
        met: bool | None = None,
        *,
        against_relay: bool = True,
        floor: str = "",
    ) -> None:
        if not self.relay:
            relay = "not installed"
            met = None if against_relay else met
        verdict = "" if met is None else ("yes" if met else "**no**")
        self.rows.append((measurement, ours, relay, bare, floor, target, verdict))

    def latency(self, label: str, samples: dict[str, list[float]]) -> None:
        for name, pick in (("p50", statistics.median), ("p99", _p99)):
            ours = pick(samples["ours"])
            relay = pick(samples["codex-relay"]) if self.relay else 0.0
            self.add(
                f"{label} {name}",
                _ms(ours),
                _ms(relay),
                _ms(pick(samples["bare"])),
                "<= codex-relay",
                ours <= relay,
                floor=_ms(pick(samples["forwarder"])),
            )

    def markdown(self) -> str:
        cells = [self.COLUMNS, *self.rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.COLUMNS))]

        def line(values: tuple[str, ...]) -> str:
            return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def memory_rows(table: Table, mem: Memory) -> None:
    turns = [c * CHAIN_TURNS for c in RSS_CHECKPOINTS]
    relay = mem.growth.get("codex-relay", [0] * len(turns))
    for index, count in enumerate(turns):
        ours = mem.growth["ours"][index]
        table.add(
            f"RSS growth after {count} turns (4 KB messages)",
            f"{_mb(ours)} (store +{_mb(mem.store_bytes[index])})",
            _mb(relay[index]),
            f"keeps none; upstream {_mb(mem.growth['upstream'][index])}",
            "<= codex-relay",
            ours <= relay[index],
        )
    total = turns[-1]
    table.add(
        f"RSS growth per turn ({total} turns)",
        f"{_kb(mem.growth['ours'][-1] / total)} (store {_kb(mem.store_bytes[-1] / total)})",
        _kb(relay[-1] / total),
        "0",
        "<= codex-relay",
        mem.growth["ours"][-1] <= relay[-1],
    )
    # Linear in stored bytes: the three points lie close to one straight line.
    slope, intercept = statistics.linear_regression(mem.store_bytes, mem.growth["ours"])
    deviation = max(
        abs(grown - (slope * stored + intercept))
        for stored, grown in zip(mem.store_bytes, mem.growth["ours"], strict=True)
    ) / max(mem.growth["ours"][-1], 1)
    table.add(
        f"ours: RSS growth against stored bytes ({'/'.join(map(str, turns))} turns)",
        f"line of slope {slope:.2f}, points within {deviation:.0%}",
        "",
        "",
        f"linear (within {LINEAR_TOLERANCE:.0%})",
        deviation <= LINEAR_TOLERANCE,
        against_relay=False,
    )


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def main() -> int:
    relay_path = relay_binary()
    if relay_path is None:
        print(RELAY_MISSING, file=sys.stderr)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        up_port = free_port()
        upstream = stack.enter_context(
            launch(
                "upstream",
                [*UVICORN, "--port", str(up_port), "--log-level", "warning", "--lifespan", "off"],
                up_port,
            )
        )
        base = upstream.url + "/v1"
        ours_port = free_port()
        ours = stack.enter_context(
            launch(
                "ours",
                [
                    *OURS,
                    base,
                    "--upstream-api",
                    "chat",
                    "--port",
                    str(ours_port),
                    "--log-level",
                    "warning",
                ],
                ours_port,
            )
        )
        peers = [Peer(ours, responses=True)]
        if relay_path is not None:
            relay_port = free_port()
            relay = stack.enter_context(
                launch(
                    "codex-relay",
                    [relay_path, "--port", str(relay_port), "--upstream", base, *RELAY_OPTIONS],
                    relay_port,
                    RUST_LOG="warn",
                )
            )
            peers.append(Peer(relay, responses=True))
        peers.append(Peer(Server("bare", upstream.url, upstream.process), responses=False))
        forwarder_port = free_port()
        forwarding = stack.enter_context(
            launch(
                "forwarder",
                [*FORWARDER, "--port", str(forwarder_port)],
                forwarder_port,
                BENCH_UPSTREAM=base,
            )
        )
        latency_peers = [*peers, Peer(forwarding, responses=False)]
        for peer in latency_peers:
            stack.callback(peer.close)

        results = Results(
            json_turns=single_turns(latency_peers, stream=False),
            streamed=single_turns(latency_peers, stream=True),
            long=long_streams(latency_peers),
            chains=chains(latency_peers),
            memory=memory(peers, upstream),
            probes=probes(peers),
        )
    elapsed = time.monotonic() - started
    print(report(relay_path is not None, results, elapsed))
    return 0


@dataclass
class Results:
    json_turns: dict[str, list[float]]
    streamed: dict[str, list[float]]
    long: dict[str, list[float]]
    chains: dict[str, list[list[float]]]
    memory: Memory
    probes: dict[str, dict[str, str]]


def report(relay: bool, results: Results, elapsed: float) -> str:
    table = Table(relay)
    table.latency("single-turn JSON", results.json_turns)
    table.latency("single-turn streamed, last byte", results.streamed)
    medians = {name: statistics.median(times) for name, times in results.long.items()}
    table.add(
        f"{STREAM_DELTAS}-delta stream, last byte (p50)",
        _ms(medians["ours"]),
        _ms(medians.get("codex-relay", 0.0)),
        _ms(medians["bare"]),
        "<= codex-relay",
        medians["ours"] <= medians.get("codex-relay", 0.0),
        floor=_ms(medians["forwarder"]),
    )
    for label, picked in (("all turns", slice(None)), ("turns 41-50", slice(40, None))):
        per_turn = {
            name: statistics.median([t for chain in chains_ for t in chain[picked]])
            for name, chains_ in results.chains.items()
        }
        table.add(
            f"{CHAIN_TURNS}-turn chain, per-turn p50, {label}",
            _ms(per_turn["ours"]),
            _ms(per_turn.get("codex-relay", 0.0)),
            _ms(per_turn["bare"]) + " (resends history)",
            "<= codex-relay",
            per_turn["ours"] <= per_turn.get("codex-relay", 0.0),
            floor=_ms(per_turn["forwarder"]) + " (resends history)",
        )
    memory_rows(table, results.memory)
    for label, outcomes in results.probes.items():
        table.add(label, outcomes["ours"], outcomes.get("codex-relay", ""), "n/a (stateless)")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    relay_note = f"codex-relay {RELAY_VERSION}" if relay else "codex-relay not installed"
    header = (
        f"state-middleware {state_middleware.__version__} proxy vs {relay_note} vs bare "
        f"upstream, {date}, {machine()}; {ROUNDS} interleaved rounds x {TURNS_PER_ROUND} "
        f"single turns and {STREAMS_PER_ROUND} long streams per server, {CHAINS} x "
        f"{CHAIN_TURNS}-turn chains, {RSS_CHAINS} x {CHAIN_TURNS}-turn chains for RSS; "
        f"run took {elapsed:.0f} s. 'forwarder alone' is our httpx forwarding app with no "
        "middleware, spoken to in Chat Completions: the floor of a uvicorn + httpx proxy."
    )
    return header + "\n\n" + table.markdown()


if __name__ == "__main__":
    sys.exit(main())
