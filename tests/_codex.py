"""The real Codex CLI (``codex exec``) against the middleware over a real socket.

``run_codex`` serves the middleware in front of a scripted upstream with uvicorn, points
a throw-away ``CODEX_HOME`` at it (over HTTP, or a WebSocket first with ``websockets``),
runs one prompt and returns Codex's events with what went over the wire (``ResponsesLog``).

The binary is ``.codex/node_modules/.bin/codex`` (``npm install --prefix .codex
--no-audit --no-fund @openai/codex@0.169.0``) or ``$CODEX_BIN``. Without it the tests
that ask for ``codex_bin`` skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from state_middleware import ResponsesStateMiddleware
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp

from ._servers import serve

__all__ = ["CodexRun", "ResponsesLog", "codex_bin", "codex_home", "run_codex"]

CODEX_VERSION = "0.169.0"
DEFAULT_CODEX_BIN = Path(__file__).resolve().parents[1] / ".codex/node_modules/.bin/codex"
API_KEY_VARIABLE = "SUT_API_KEY"
RUN_TIMEOUT = 90

CONFIG = """\
model = "gpt-5.5"
model_provider = "sut"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.sut]
name = "system under test"
base_url = "{base_url}"
env_key = "{env_key}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 10000
supports_websockets = {websockets}
"""


@pytest.fixture(scope="module")
def codex_bin() -> Path:
    path = Path(os.environ.get("CODEX_BIN") or DEFAULT_CODEX_BIN)
    if not path.is_file():
        reason = (
            f"Codex CLI not found at {path}; install it with `npm install --prefix .codex "
            f"--no-audit --no-fund @openai/codex@{CODEX_VERSION}` or set CODEX_BIN"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class ResponsesLog:
    """Wraps an ASGI app and keeps the decoded body of each ``POST /v1/responses``, and
    of each text frame a client sends on a WebSocket to ``/v1/responses`` (``frames``)
    and the app sends back (``events``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/v1/responses":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] != "/v1/responses":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def receive_and_log() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.bodies.append(json.loads(b"".join(chunks)))
            return message

        await self.app(scope, receive_and_log, send)

    async def _websocket(self, scope: Any, receive: Any, send: Any) -> None:
        async def receive_and_log() -> Any:
            message = await receive()
            if message["type"] == "websocket.receive" and message.get("text") is not None:
                self.frames.append(json.loads(message["text"]))
            return message

        async def send_and_log(message: Any) -> None:
            if message["type"] == "websocket.send" and message.get("text") is not None:
                self.events.append(json.loads(message["text"]))
            await send(message)

        await self.app(scope, receive_and_log, send_and_log)


@dataclass
class CodexRun:
    """One finished ``codex exec``: its exit code, JSONL events and stderr."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    cwd: Path
    upstream: ScriptedChatApp | ScriptedResponsesApp
    log: ResponsesLog

    @property
    def responses(self) -> list[dict[str, Any]]:
        """The bodies Codex POSTed to ``/v1/responses``."""
        return self.log.bodies

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The completed items of one type (``command_execution``, ``agent_message``...)."""
        return [
            event["item"]
            for event in self.events
            if event.get("type") == "item.completed" and event["item"].get("type") == kind
        ]

    def explain(self) -> str:
        return f"exit {self.returncode}\nevents: {self.events}\nstderr: {self.stderr[-2000:]}"


def codex_home(tmp_path: Path, base_url: str, *, websockets: bool = False) -> Path:
    """A throw-away ``CODEX_HOME`` whose only provider is the server under test (which
    Codex reaches over a WebSocket first if ``websockets``)."""
    home = tmp_path / "codex-home"
    home.mkdir()
    config = CONFIG.format(
        base_url=base_url + "/v1",
        env_key=API_KEY_VARIABLE,
        websockets="true" if websockets else "false",
    )
    (home / "config.toml").write_text(config)
    return home


def run_codex(
    codex: Path,
    tmp_path: Path,
    prompt: str,
    *,
    upstream: ScriptedChatApp | ScriptedResponsesApp,
    upstream_api: Literal["chat", "responses"] = "chat",
    store: Any = None,
    websockets: bool = False,
) -> CodexRun:
    """``codex exec`` one prompt against the middleware in front of ``upstream`` (the
    bridge when ``upstream_api`` is ``"chat"``), over a WebSocket if ``websockets``."""
    bridge: dict[str, Any] = {"unsupported_tools": "drop"} if upstream_api == "chat" else {}
    middleware = ResponsesStateMiddleware(
        upstream, store=store, upstream_api=upstream_api, **bridge
    )
    log = ResponsesLog(middleware)
    cwd = tmp_path / "work"
    cwd.mkdir()
    with serve(log) as base_url:
        home = codex_home(tmp_path, base_url, websockets=websockets)
        done = subprocess.run(
            [
                str(codex),
                "exec",
                "--skip-git-repo-check",
                "--ephemeral",
                "--json",
                "--dangerously-bypass-approvals-and-sandbox",
                "--disable",
                "unbounded_connection_retries",
                "--disable",
                "plugins",
                prompt,
            ],
            cwd=cwd,
            env={**os.environ, "CODEX_HOME": str(home), API_KEY_VARIABLE: "sk-codex-test"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    return CodexRun(done.returncode, events, done.stderr.decode(), cwd, upstream, log)
