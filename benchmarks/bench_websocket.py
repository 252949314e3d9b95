"""WebSocket mode against HTTP, through the middleware served by uvicorn (one
subprocess, ``_apps:wrapped``: the scripted Responses app behind the middleware).

(a) Bytes a client sends per turn in a ``TURNS``-turn Codex-like session. Each turn the
model calls a tool, the client runs it (a few hundred bytes of output) and adds a user
message. Over HTTP, Codex resends the whole history with ``store: false`` every turn;
over a WebSocket it sends ``previous_response_id`` and only the new items. Both send the
same ``instructions`` and ``tools`` every turn, as Codex does. Counted: the HTTP request
bodies and the WebSocket text frames (before permessage-deflate), as sent.

(b) Per-turn latency of a short streamed turn, one kept-alive HTTP connection against
one WebSocket, interleaved rounds, medians.

``python benchmarks/bench_websocket.py`` prints a markdown table; ``run.py websocket``
includes it.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from _common import Row, markdown_table, median, ms, row, timed, uvicorn_server
from websockets.sync.client import ClientConnection, connect

__all__ = ["rows"]

TURNS = 50
SHOWN_TURNS = (1, 10, 50)
ROUNDS = 7
LATENCY_TURNS = 200  # per transport per round
ROUTE = "/v1/responses"

_INSTRUCTIONS = (
    "You are a coding agent running in a terminal. Read files with the shell tool, keep "
    "answers short, and explain each change before you make it. "
) * 14  # ~2 KB; Codex's own are several times that, which adds alike to both transports
_TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "description": "Run a shell command and return its output.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
            "required": ["command"],
        },
    }
]
_SHORT_TURN = {"model": "m", "input": 'Answer as JSON: {"ok": true}', "store": False}
_COMPLETED = "response.completed"


def _user(turn: int) -> dict[str, Any]:
    text = f"Step {turn}: look at the next file and tell me what it does. CALL:shell"
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _tool_output(call_id: str, turn: int) -> dict[str, Any]:
    listing = "".join(
        f"-rw-r--r-- 1 dev dev {1000 + turn * 7 + i} src/module_{i}.py\n" for i in range(8)
    )
    return {"type": "function_call_output", "call_id": call_id, "output": listing}


def _request(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "instructions": _INSTRUCTIONS, "tools": _TOOLS, "stream": True, **fields}


def _http_turn(client: httpx.Client, body: bytes) -> dict[str, Any]:
    """POST a streamed turn; the completed response."""
    with client.stream("POST", ROUTE, content=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data: ") and _COMPLETED in line:
                event = msgspec.json.decode(line[len("data: ") :])
                if event["type"] == _COMPLETED:
                    response: dict[str, Any] = event["response"]
                    return response
    raise RuntimeError("the stream ended without response.completed")


def _ws_turn(ws: ClientConnection, frame: str) -> dict[str, Any]:
    """Send a ``response.create``; the completed response."""
    ws.send(frame)
    while True:
        message = ws.recv()
        if isinstance(message, str) and _COMPLETED in message:
            event = msgspec.json.decode(message)
            if event["type"] == _COMPLETED:
                response: dict[str, Any] = event["response"]
                return response
            if event["type"] in ("error", "response.failed"):
                raise RuntimeError(f"the turn failed: {message[:300]}")


def _call_id(response: dict[str, Any]) -> str:
    (call,) = [item for item in response["output"] if item["type"] == "function_call"]
    call_id: str = call["call_id"]
    return call_id


def _http_session(base: str) -> tuple[list[int], int]:
    """Bytes of each turn's body over HTTP, and the last turn's input tokens."""
    sizes: list[int] = []
    history: list[dict[str, Any]] = []
    response: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for turn in range(1, TURNS + 1):
            new = ([_tool_output(_call_id(response), turn)] if response else []) + [_user(turn)]
            history += new
            body = msgspec.json.encode(_request(input=history, store=False))
            sizes.append(len(body))
            response = _http_turn(client, body)
            history += response["output"]
    return sizes, response["usage"]["input_tokens"]


def _ws_session(base: str) -> tuple[list[int], int]:
    """Bytes of each turn's frame over a WebSocket, and the last turn's input tokens."""
    sizes: list[int] = []
    response: dict[str, Any] = {}
    with connect("ws" + base.removeprefix("http") + ROUTE) as ws:
        for turn in range(1, TURNS + 1):
            new = ([_tool_output(_call_id(response), turn)] if response else []) + [_user(turn)]
            fields = _request(input=new, store=False)
            if response:
                fields["previous_response_id"] = response["id"]
            frame = msgspec.json.encode({"type": "response.create", **fields}).decode()
            sizes.append(len(frame.encode()))
            response = _ws_turn(ws, frame)
    return sizes, response["usage"]["input_tokens"]


def _bytes_rows(base: str) -> list[Row]:
    http_sizes, http_tokens = _http_session(base)
    ws_sizes, ws_tokens = _ws_session(base)
    if http_tokens != ws_tokens:  # the upstream saw a different history
        raise RuntimeError(f"input tokens differ: HTTP {http_tokens}, WebSocket {ws_tokens}")
    rows = []
    for turn in SHOWN_TURNS:
        sent_ws, sent_http = ws_sizes[turn - 1], http_sizes[turn - 1]
        rows.append(
            row(
                f"(a) request bytes of turn {turn} of a {TURNS}-turn Codex-like session, "
                "WebSocket / HTTP",
                f"{sent_ws:,} B / {sent_http:,} B ({sent_ws / sent_http:.2f}x)",
                details="store: false; HTTP resends the history, WebSocket sends "
                "previous_response_id + the new items",
            )
        )
    total_ws, total_http = sum(ws_sizes), sum(http_sizes)
    rows.append(
        row(
            f"(a) request bytes of all {TURNS} turns, WebSocket / HTTP",
            f"{total_ws:,} B / {total_http:,} B ({total_ws / total_http:.3f}x)",
            details=f"~{len(_INSTRUCTIONS):,} B instructions + 1 tool in every request of "
            f"both; the upstream saw the same history ({ws_tokens} input tokens at turn "
            f"{TURNS}); frames counted before permessage-deflate",
        )
    )
    return rows


def _latency_row(base: str) -> Row:
    body = msgspec.json.encode({**_SHORT_TURN, "stream": True})
    frame = msgspec.json.encode({"type": "response.create", **_SHORT_TURN}).decode()
    times: dict[str, list[float]] = {"http": [], "ws": []}
    ratios: list[float] = []
    with (
        httpx.Client(base_url=base, timeout=60) as client,
        connect("ws" + base.removeprefix("http") + ROUTE) as ws,
    ):

        def over_http() -> None:
            _http_turn(client, body)

        def over_ws() -> None:
            _ws_turn(ws, frame)

        runs = {"http": over_http, "ws": over_ws}
        for one in runs.values():  # warm-up
            for _ in range(20):
                one()
        for number in range(ROUNDS):
            medians: dict[str, float] = {}
            for name in list(runs) if number % 2 == 0 else list(runs)[::-1]:
                samples = [timed(runs[name]) for _ in range(LATENCY_TURNS)]
                times[name].extend(samples)
                medians[name] = median(samples)
            ratios.append(medians["ws"] / medians["http"])
    ratio = median(ratios)
    return row(
        "(b) per-turn latency of a short streamed turn, WebSocket / HTTP",
        f"{ratio:.3f}x",
        details=f"median HTTP {ms(median(times['http']))}, WebSocket "
        f"{ms(median(times['ws']))}; {ROUNDS} rounds x {LATENCY_TURNS} turns each, "
        f"interleaved; per-round ratios {min(ratios):.3f}-{max(ratios):.3f}; one kept-alive "
        "connection each (httpx; websockets with permessage-deflate, as Codex), client "
        "time included, store: false",
    )


def rows() -> list[Row]:
    with uvicorn_server("_apps:wrapped") as base:
        return [*_bytes_rows(base), _latency_row(base)]


def main() -> None:
    print(markdown_table(rows()))


if __name__ == "__main__":
    main()
