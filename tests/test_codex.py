"""The real Codex CLI (``codex exec``) through the Chat Completions bridge.

Codex speaks only Responses (its ``wire_api = "chat"`` is gone), so it drives the
middleware in front of the scripted chat app over a real socket. Over HTTP Codex never
chains: each request resends the whole history with ``store: false``, so these tests
exercise the bridge's stateless path (client-made ids, reasoning carried in
``encrypted_content``, the ``apply_patch`` custom tool).

The binary is ``.codex/node_modules/.bin/codex`` (``npm install --prefix .codex
--no-audit --no-fund @openai/codex@0.169.0``) or ``$CODEX_BIN``. Without it the tests
skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware._bridge.reasoning import decode_reasoning
from state_middleware.testing import ScriptedChatApp

from ._servers import serve

pytestmark = pytest.mark.slow

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
    """Wraps an ASGI app and keeps the decoded body of each ``POST /v1/responses``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
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


@dataclass
class CodexRun:
    """One finished ``codex exec``: its exit code, JSONL events and stderr."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    cwd: Path
    chat: ScriptedChatApp
    responses: list[dict[str, Any]] = field(default_factory=list)

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The completed items of one type (``command_execution``, ``agent_message``...)."""
        return [
            event["item"]
            for event in self.events
            if event.get("type") == "item.completed" and event["item"].get("type") == kind
        ]

    def explain(self) -> str:
        return f"exit {self.returncode}\nevents: {self.events}\nstderr: {self.stderr[-2000:]}"


def codex_home(tmp_path: Path, base_url: str) -> Path:
    """A throw-away ``CODEX_HOME`` whose only provider is the server under test."""
    home = tmp_path / "codex-home"
    home.mkdir()
    config = CONFIG.format(base_url=base_url + "/v1", env_key=API_KEY_VARIABLE)
    (home / "config.toml").write_text(config)
    return home


def run_codex(
    codex: Path, tmp_path: Path, prompt: str, *, chat: ScriptedChatApp, store: Any = None
) -> CodexRun:
    """``codex exec`` one prompt against the bridge in front of ``chat``."""
    middleware = ResponsesStateMiddleware(
        chat, store=store, upstream_api="chat", unsupported_tools="drop"
    )
    app = ResponsesLog(middleware)
    cwd = tmp_path / "work"
    cwd.mkdir()
    with serve(app) as base_url:
        home = codex_home(tmp_path, base_url)
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
    return CodexRun(done.returncode, events, done.stderr.decode(), cwd, chat, app.bodies)


def assistant_with_tool_calls(messages: list[dict[str, Any]]) -> dict[str, Any]:
    (message,) = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    return message


def test_codex_runs_a_shell_command_through_the_chat_bridge(
    codex_bin: Path, tmp_path: Path
) -> None:
    run = run_codex(codex_bin, tmp_path, "please SHELL:echo codex-was-here", chat=ScriptedChatApp())
    assert run.returncode == 0, run.explain()
    (command,) = run.items("command_execution")
    assert "echo codex-was-here" in command["command"]
    assert command["exit_code"] == 0
    (answer,) = run.items("agent_message")
    assert "tool said" in answer["text"]
    assert "codex-was-here" in answer["text"]

    first, second = (request.body for request in run.chat.requests)
    assert [request.path for request in run.chat.requests] == ["/v1/chat/completions"] * 2
    assert "exec_command" in {tool["function"]["name"] for tool in first["tools"]}
    assert "web_search" not in json.dumps(first["tools"])  # dropped, not refused
    (call,) = assistant_with_tool_calls(second["messages"])["tool_calls"]
    assert call["function"]["name"] == "exec_command"
    assert json.loads(call["function"]["arguments"]) == {"cmd": "echo codex-was-here"}
    tool = second["messages"][-1]
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == call["id"]
    assert "codex-was-here" in tool["content"]


def test_codex_round_trips_a_thinking_models_reasoning_statelessly(
    codex_bin: Path, tmp_path: Path
) -> None:
    store = MemoryStore()
    run = run_codex(
        codex_bin,
        tmp_path,
        "please SHELL:echo codex-was-here",
        chat=ScriptedChatApp(thinking=True),
        store=store,
    )
    assert run.returncode == 0, run.explain()
    (answer,) = run.items("agent_message")
    assert "codex-was-here" in answer["text"]

    # Codex resent the whole history, unstored, reasoning item included (0.169.0 sends
    # its ``content`` back as received, next to ``encrypted_content``; the form with
    # ``"content": null`` is covered in test_bridge_middleware)...
    thought = "thinking about: please SHELL:echo codex-was-here"
    first, follow_up = run.responses
    assert follow_up["store"] is False
    assert "previous_response_id" not in follow_up
    assert follow_up["include"] == ["reasoning.encrypted_content"]
    assert follow_up["input"][: len(first["input"])] == first["input"]
    (reasoning,) = [item for item in follow_up["input"] if item.get("type") == "reasoning"]
    assert decode_reasoning(reasoning["encrypted_content"]) == thought
    assert store.size == 0  # nothing was kept that the text could have come from

    # ...and the thinking app, which refuses tool calls without it, got it back.
    assert len(run.chat.requests) == 2
    assistant = assistant_with_tool_calls(run.chat.requests[1].body["messages"])
    assert assistant["reasoning_content"] == thought


def test_codex_applies_a_patch_through_the_custom_tool(codex_bin: Path, tmp_path: Path) -> None:
    run = run_codex(codex_bin, tmp_path, "please PATCH:hello.txt", chat=ScriptedChatApp())
    assert run.returncode == 0, run.explain()
    assert (run.cwd / "hello.txt").read_text() == "hello\n"
    (change,) = run.items("file_change")
    assert change["changes"] == [{"path": str(run.cwd / "hello.txt"), "kind": "add"}]

    first, follow_up = run.responses
    (patch_tool,) = [tool for tool in first["tools"] if tool.get("name") == "apply_patch"]
    assert patch_tool["type"] == "custom"
    (call,) = [item for item in follow_up["input"] if item.get("type") == "custom_tool_call"]
    (output,) = [
        item for item in follow_up["input"] if item.get("type") == "custom_tool_call_output"
    ]
    assert output["call_id"] == call["call_id"]
    tool = run.chat.requests[1].body["messages"][-1]
    assert tool == {"role": "tool", "tool_call_id": call["call_id"], "content": tool["content"]}
    assert "hello.txt" in tool["content"]
