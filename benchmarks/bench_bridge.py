"""What the Responses-to-Chat bridge costs, measured against the bare chat app.

    python benchmarks/bench_bridge.py

Prints one markdown table. ``run()`` returns the same measurements as (label, result)
rows. Both apps are in ``_apps.py``: ``bare_chat`` is the scripted Chat Completions app
on its own, ``bridge`` the same app behind ``ResponsesStateMiddleware(...,
upstream_api="chat")`` with the default in-memory store. Each is served by its own
uvicorn subprocess and the client stays in this process, as in ``run.py``:

* ``stream``: ``DELTAS:2000`` streamed. The bridge reads the 2000-chunk chat stream and
  sends the Responses event stream; the bare app sends the chat stream itself (with
  ``stream_options.include_usage``, as the bridge asks for). Time to the last byte.
* ``batched`` (``stream``'s second row): the same 2000 deltas as a real server read
  through a proxy sends them (``ScriptedChatApp(chunk_style="transformers",
  frames_per_write=8)``: eight frames a body message, a ``created`` that moves on every
  25 chunks, the usage on the finish chunk, no ``[DONE]``), with the share of deltas the
  bridge's fast path took without decoding (counted in process on the same stream).
* ``in_process``: the same stream straight into each app object, no server: the CPU
  time per stream (best of ``IN_PROCESS_STREAMS``), so the bridge's own cost per delta
  shows without the server's share and its noise. Not a target, a diagnosis.
* ``latency``: one single-turn JSON request, a Responses request through the bridge
  against the equivalent chat request to the bare app.

Bare and bridged rounds are interleaved (``_common.compare``: alternating which goes
first) so drift hits both alike; the reported ratio is the median of the per-round
ratios of medians.
"""

from __future__ import annotations

import asyncio
import sys
import time
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
    ms,
    pin_client,
    row,
    timed,
)

from state_middleware import ResponsesStateMiddleware
from state_middleware._bridge.turn import ChatReplyTranslator
from state_middleware._skeleton import response_skeleton
from state_middleware.testing import ScriptedChatApp

__all__ = ["run"]

ROUNDS = 7
LATENCY_REQUESTS = 400  # per app per round
STREAMS = 4  # per app per round
IN_PROCESS_STREAMS = 30  # per app
STREAM_DELTAS = 2000
TARGET = 1.10
FRAMES_PER_WRITE = 8

# Served as ``bench_bridge:bare_batched`` and ``bench_bridge:bridge_batched``.
bare_batched = ScriptedChatApp(chunk_style="transformers", frames_per_write=FRAMES_PER_WRITE)
bridge_batched = ResponsesStateMiddleware(
    ScriptedChatApp(chunk_style="transformers", frames_per_write=FRAMES_PER_WRITE),
    upstream_api="chat",
)

PROMPT = "Hello, how are you today?"
AUTH = (b"authorization", b"Bearer sk-bench")
JSON_HEADERS = {"content-type": "application/json"}


def _compare(
    bare_measure: Measure, bridge_measure: Measure, apps: tuple[str, str] | None = None
) -> Comparison:
    """The bare chat app and the bridge, each with its own measure (see
    ``_common.compare``); ``apps`` names another pair to serve."""
    bare_app, bridge_app = apps or ("_apps:bare_chat", "_apps:bridge")
    return compare(
        Served("bare chat", bare_app, bare_measure),
        Served("bridge", bridge_app, bridge_measure),
        rounds=ROUNDS,
        headers=[AUTH],
    )


def _streams(path: str, body: dict[str, Any], last_event: bytes) -> Measure:
    """Time ``STREAMS`` streamed requests to their last byte; each must hold
    ``last_event``."""
    content = msgspec.json.encode(body)

    def measure(client: httpx.Client) -> list[float]:
        def one() -> None:
            with client.stream("POST", path, content=content, headers=JSON_HEADERS) as reply:
                reply.raise_for_status()
                seen, carry = False, b""
                for chunk in reply.iter_raw():
                    seen = seen or last_event in carry + chunk
                    carry = chunk[-len(last_event) :]
                if not seen:
                    raise RuntimeError(f"the stream from {path} did not hold {last_event!r}")

        return [timed(one) for _ in range(STREAMS)]

    return measure


def _requests(path: str, body: dict[str, Any]) -> Measure:
    content = msgspec.json.encode(body)

    def measure(client: httpx.Client) -> list[float]:
        def one() -> None:
            client.post(path, content=content, headers=JSON_HEADERS).raise_for_status()

        return [timed(one) for _ in range(LATENCY_REQUESTS)]

    return measure


#: the bare app's request (with the usage chunk, as the bridge asks) and the bridge's
STREAM_TEXT = f"DELTAS:{STREAM_DELTAS}"
CHAT_STREAM_BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": STREAM_TEXT}],
    "stream": True,
    "stream_options": {"include_usage": True},
}
RESPONSES_STREAM_BODY = {"model": "m", "input": STREAM_TEXT, "stream": True}


def stream() -> list[Row]:
    """The plain stream's row, then the batched one's."""
    result = _compare(
        _streams("/v1/chat/completions", CHAT_STREAM_BODY, b"data: [DONE]"),
        _streams("/v1/responses", RESPONSES_STREAM_BODY, b"event: response.completed"),
    )
    plain = _stream_row(f"{STREAM_DELTAS}-delta stream, last byte, bridge / bare chat", result)
    return [plain, *batched()]


def _stream_row(measurement: str, result: Comparison, note: str = "", more: str = "") -> Row:
    """A streamed comparison's row; ``note`` follows the ratio, ``more`` the details."""
    return row(
        measurement,
        f"{result.ratio:.3f}x{note}",
        target=f"<= {TARGET:.2f}x",
        met=result.ratio <= TARGET,
        details=(
            result.details(f"{STREAMS} streams")
            + f"; {result.added / STREAM_DELTAS * 1e6:.1f} us per delta{more}"
        ),
    )


def _fast_path_share() -> tuple[int, int]:
    """How many of the batched stream's ``STREAM_DELTAS`` deltas the bridge translated
    without decoding their chunk, and how many chunks it decoded, in process."""
    content = msgspec.json.encode(CHAT_STREAM_BODY)
    status, body = asyncio.run(call_asgi(bare_batched, "/v1/chat/completions", content, [AUTH]))
    frames = [frame + b"\n\n" for frame in body.split(b"\n\n")[:-1]]
    if status != 200 or len(frames) != STREAM_DELTAS + 2:  # the role and finish chunks too
        raise RuntimeError(f"the batched stream is not {STREAM_DELTAS} deltas")
    writes = [
        b"".join(frames[i : i + FRAMES_PER_WRITE]) for i in range(0, len(frames), FRAMES_PER_WRITE)
    ]

    async def deliver(message: Any) -> None:
        pass

    base = response_skeleton(
        RESPONSES_STREAM_BODY,
        response_id="resp_bench",
        created_at=0,
        previous_response_id=None,
        store=False,
    )
    translator = ChatReplyTranslator(base, deliver, 1 << 30, direct=lambda: None, wants_stream=True)

    async def translate() -> int:
        headers = [(b"content-type", b"text/event-stream")]
        await translator.send({"type": "http.response.start", "status": 200, "headers": headers})
        for write in writes:
            await translator.send({"type": "http.response.body", "body": write, "more_body": True})
        await translator.send({"type": "http.response.body", "body": b"", "more_body": False})
        assert translator.stream is not None
        assert translator.stream.terminal_emitted
        return translator.stream.decoded

    decoded = asyncio.run(translate())
    return STREAM_DELTAS - (decoded - 2), decoded


def batched() -> list[Row]:
    result = _compare(
        _streams("/v1/chat/completions", CHAT_STREAM_BODY, b'"finish_reason":"stop"'),
        _streams("/v1/responses", RESPONSES_STREAM_BODY, b"event: response.completed"),
        apps=("bench_bridge:bare_batched", "bench_bridge:bridge_batched"),
    )
    hits, decoded = _fast_path_share()
    measurement = (
        f"{STREAM_DELTAS}-delta batched transformers-style stream "
        f"({FRAMES_PER_WRITE} frames a write), last byte, bridge / bare chat"
    )
    note = f"; fast path {hits / STREAM_DELTAS:.1%}"
    more = f"; fast path {hits}/{STREAM_DELTAS} deltas, {decoded} chunks decoded"
    return [_stream_row(measurement, result, note, more)]


def _best_cpu(app: Any, path: str, body: dict[str, Any], last_event: bytes) -> float:
    """The least CPU time one streamed request took, in process."""
    content = msgspec.json.encode(body)

    async def measure() -> float:
        best = float("inf")
        for _ in range(IN_PROCESS_STREAMS):
            start = time.process_time()
            status, reply = await call_asgi(app, path, content, [AUTH])
            best = min(best, time.process_time() - start)
            if status != 200 or last_event not in reply:
                raise RuntimeError(f"the stream from {path} did not hold {last_event!r}")
        return best

    return asyncio.run(measure())


def in_process() -> list[Row]:
    from _apps import bare_chat, bridge

    bare = _best_cpu(bare_chat, "/v1/chat/completions", CHAT_STREAM_BODY, b"data: [DONE]")
    bridged = _best_cpu(
        bridge, "/v1/responses", RESPONSES_STREAM_BODY, b"event: response.completed"
    )
    per_delta = (bridged - bare) / STREAM_DELTAS * 1e6
    return [
        row(
            f"{STREAM_DELTAS}-delta stream in process (no server), CPU the bridge adds",
            f"{per_delta:.2f} us per delta",
            details=(
                f"best of {IN_PROCESS_STREAMS}: bare chat {ms(bare)}, bridge {ms(bridged)} "
                f"(the bare app alone: {bare / STREAM_DELTAS * 1e6:.2f} us per delta)"
            ),
        )
    ]


def latency() -> list[Row]:
    result = _compare(
        _requests(
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": PROMPT}]},
        ),
        _requests("/v1/responses", {"model": "m", "input": PROMPT}),
    )
    return [
        row(
            "single-turn JSON latency, bridge / bare chat",
            f"{result.ratio:.3f}x",
            target=f"<= {TARGET:.2f}x",
            met=result.ratio <= TARGET,
            details=result.details(f"{LATENCY_REQUESTS} requests (store=true)"),
        )
    ]


def _rows() -> list[Row]:
    rows: list[Row] = []
    for section in (stream, in_process, latency):
        start = time.perf_counter()
        rows.extend(section())
        print(f"{section.__name__}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return rows


def run() -> list[tuple[str, str]]:
    """Measure both; rows of (measurement, result with target, verdict and details)."""
    results = []
    for measurement, result, target, met, details in _rows():
        results.append((measurement, f"{result} (target {target}: {met.strip('*')}); {details}"))
    return results


def main() -> int:
    pin_client()
    print(markdown_table(_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
