"""The real Codex CLI (``codex exec``) through the Chat Completions bridge.

Codex speaks only Responses (its ``wire_api = "chat"`` is gone), so it drives the
middleware in front of the scripted chat app over a real socket. Over HTTP Codex never
chains: each request resends the whole history with ``store: false``, so these tests
exercise the bridge's stateless path (client-made ids, reasoning carried in
``encrypted_content``, the ``apply_patch`` custom tool).

``tests/_codex.py`` says where the binary comes from; without it these tests skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from state_middleware import MemoryStore
from state_middleware._bridge.reasoning import decode_reasoning
from state_middleware.testing import ScriptedChatApp

from ._codex import run_codex

pytestmark = pytest.mark.slow


def assistant_with_tool_calls(messages: list[dict[str, Any]]) -> dict[str, Any]:
    (message,) = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    return message


def test_codex_runs_a_shell_command_through_the_chat_bridge(
    codex_bin: Path, tmp_path: Path
) -> None:
    run = run_codex(
        codex_bin, tmp_path, "please SHELL:echo codex-was-here", upstream=ScriptedChatApp()
    )
    assert run.returncode == 0, run.explain()
    (command,) = run.items("command_execution")
    assert "echo codex-was-here" in command["command"]
    assert command["exit_code"] == 0
    (answer,) = run.items("agent_message")
    assert "tool said" in answer["text"]
    assert "codex-was-here" in answer["text"]

    first, second = (request.body for request in run.upstream.requests)
    assert [request.path for request in run.upstream.requests] == ["/v1/chat/completions"] * 2
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
        upstream=ScriptedChatApp(thinking=True),
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
    assert len(run.upstream.requests) == 2
    assistant = assistant_with_tool_calls(run.upstream.requests[1].body["messages"])
    assert assistant["reasoning_content"] == thought


def test_codex_applies_a_patch_through_the_custom_tool(codex_bin: Path, tmp_path: Path) -> None:
    run = run_codex(codex_bin, tmp_path, "please PATCH:hello.txt", upstream=ScriptedChatApp())
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
    tool = run.upstream.requests[1].body["messages"][-1]
    assert tool == {"role": "tool", "tool_call_id": call["call_id"], "content": tool["content"]}
    assert "hello.txt" in tool["content"]
