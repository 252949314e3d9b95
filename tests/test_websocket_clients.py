"""WebSocket mode with the real clients: Codex 0.169, the openai SDK's
``responses.connect()`` and openai-agents' ``OpenAIResponsesWSModel``, each against the
middleware served by uvicorn on 127.0.0.1.

Every test looks at both ends: what the client sent on the socket (a turn after the first
names the one before with ``previous_response_id`` and carries only the new items) and
what the app got over HTTP (the whole history, since the scripted apps keep nothing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesWSModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp
from state_middleware.testing._responses_script import content_text

from ._codex import ResponsesLog, run_codex
from ._servers import serve
from ._sync import soon

PROMPT = "please SHELL:echo codex-was-here"
TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})

UpstreamApi = Literal["responses", "chat"]

set_tracing_disabled(True)


def scripted(upstream_api: UpstreamApi) -> ScriptedResponsesApp | ScriptedChatApp:
    return ScriptedResponsesApp() if upstream_api == "responses" else ScriptedChatApp()


# -- Codex -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("upstream_api", ["responses", "chat"])
def test_codex_chains_on_its_websocket_while_the_app_gets_the_whole_history(
    codex_bin: Path, tmp_path: Path, upstream_api: UpstreamApi
) -> None:
    upstream = scripted(upstream_api)
    store = MemoryStore()
    run = run_codex(
        codex_bin,
        tmp_path,
        PROMPT,
        upstream=upstream,
        upstream_api=upstream_api,
        store=store,
        websockets=True,
    )
    assert run.returncode == 0, run.explain()
    (command,) = run.items("command_execution")
    assert "echo codex-was-here" in command["command"]
    assert command["exit_code"] == 0
    (answer,) = run.items("agent_message")
    assert answer["text"].startswith("tool said: ")
    assert "codex-was-here" in answer["text"]

    # Codex stayed on the WebSocket: a warm-up, the prompt, the tool's output.
    assert run.responses == []
    warm_up, first, follow_up = run.log.frames
    assert all(frame["store"] is False for frame in run.log.frames)
    completed = [e["response"] for e in run.log.events if e["type"] == "response.completed"]
    warm_id, first_id, _ = (response["id"] for response in completed)

    # The warm-up (first developer message only) was answered without output...
    assert warm_up["generate"] is False
    assert [item["role"] for item in warm_up["input"]] == ["developer"]
    warm_events = run.log.events[:2]
    assert [e["type"] for e in warm_events] == ["response.created", "response.completed"]
    assert warm_events[1]["response"] == completed[0]
    assert completed[0]["output"] == []

    # ...so Codex chained each turn onto the one before and sent only what was new.
    assert first["previous_response_id"] == warm_id
    assert warm_up["input"][0] not in first["input"]
    assert content_text(first["input"][-1]["content"]) == PROMPT
    assert follow_up["previous_response_id"] == first_id
    (output,) = follow_up["input"]
    assert output["type"] == "function_call_output"
    assert "codex-was-here" in output["output"]

    # The app was called for the two real turns, each time with all of it (the first
    # time with the warm-up's message too); and nothing was stored: the chain lived in
    # the connection.
    assert len(upstream.requests) == 2
    assert all("previous_response_id" not in r.body for r in upstream.requests)
    if upstream_api == "responses":
        at_first, at_last = (request.body["input"] for request in upstream.requests)
        assert at_first == warm_up["input"] + first["input"]
        assert at_last[:4] == at_first
        call = at_last[4]
        assert call["type"] == "function_call"
        assert call["name"] == "exec_command"
        assert json.loads(call["arguments"]) == {"cmd": "echo codex-was-here"}
        assert at_last[5:] == [output]
    else:
        at_first, at_last = (request.body["messages"] for request in upstream.requests)
        assert at_last[:4] == at_first
        assert [m["role"] for m in at_last] == [
            "system",
            "system",
            "user",
            "user",
            "assistant",
            "tool",
        ]
        assert content_text(at_first[0]["content"]) == content_text(warm_up["input"][0]["content"])
        assert content_text(at_first[3]["content"]) == PROMPT
        (call,) = at_last[4]["tool_calls"]
        assert call["function"]["name"] == "exec_command"
        assert json.loads(call["function"]["arguments"]) == {"cmd": "echo codex-was-here"}
        assert at_last[5]["tool_call_id"] == output["call_id"] == call["id"]
        assert "codex-was-here" in content_text(at_last[5]["content"])
    assert store.size == 0


# -- the openai SDK: responses.connect() -------------------------------------------------


@asynccontextmanager
async def sdk_client(app: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client of the middleware in front of ``app``, served by uvicorn."""
    with serve(ResponsesStateMiddleware(app, store=MemoryStore())) as base_url:
        async with openai.AsyncOpenAI(
            base_url=base_url + "/v1", api_key="sk-ws", max_retries=0
        ) as client:
            yield client


async def next_events(connection: Any, turns: int = 1) -> list[Any]:
    """The events of the next ``turns`` responses, up to and including each terminal
    event (or ``error``)."""
    events: list[Any] = []
    while turns:
        event = await soon(connection.recv(), "a terminal event")
        events.append(event)
        turns -= event.type in TERMINAL
    return events


async def turn(connection: Any, **create: Any) -> list[Any]:
    """Send one ``response.create`` and return its events."""
    await connection.response.create(model="scripted", **create)
    return await next_events(connection)


class FirstWaitsForSecond:
    """An ASGI wrapper whose first request waits until its second one has ended; two
    requests that are not in flight together never end."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0
        self.second_done = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            await self.second_done.wait()
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, send)
        self.second_done.set()


@pytest.mark.anyio
async def test_sdk_continues_an_unstored_response_on_its_connection() -> None:
    upstream = ScriptedResponsesApp()
    async with sdk_client(upstream) as client:
        async with client.responses.connect() as connection:
            first = await turn(connection, input="remember PLUM", store=False)
            first_id = first[-1].response.id
            second = await turn(
                connection, input="what was it?", previous_response_id=first_id, store=False
            )
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first_id)  # it lived in the connection only

    assert [e.type for e in first][:2] == ["response.created", "response.in_progress"]
    final = second[-1]
    assert final.type == "response.completed"
    assert final.response.previous_response_id == first_id
    assert final.response.output_text == "[3 items] what was it?"
    sent = upstream.requests[-1].body
    assert "previous_response_id" not in sent
    assert [content_text(item["content"]) for item in sent["input"]] == [
        "remember PLUM",
        "[1 items] remember PLUM",
        "what was it?",
    ]


@pytest.mark.anyio
async def test_sdk_gets_an_error_event_for_an_unknown_previous_response_and_goes_on() -> None:
    upstream = ScriptedResponsesApp()
    unknown = "resp_" + "0" * 48
    async with sdk_client(upstream) as client, client.responses.connect() as connection:
        (error,) = await turn(connection, input="hi", previous_response_id=unknown, store=False)
        calls_before = len(upstream.requests)
        after = await turn(connection, input="still there?")

    assert error.type == "error"
    assert error.status == 400
    assert error.error.code == "previous_response_not_found"
    assert error.error.param == "previous_response_id"
    assert unknown in error.error.message
    assert calls_before == 0
    assert after[-1].type == "response.completed"
    assert after[-1].response.output_text == "[1 items] still there?"


@pytest.mark.anyio
async def test_sdk_stored_turns_are_retrieved_and_continued_over_http() -> None:
    upstream = ScriptedResponsesApp()
    async with sdk_client(upstream) as client:
        async with client.responses.connect() as connection:
            first = (await turn(connection, input="keep me", store=True))[-1].response
            second = (
                await turn(connection, input="and me", previous_response_id=first.id, store=True)
            )[-1].response
        retrieved = await client.responses.retrieve(second.id)
        later = await client.responses.create(
            model="scripted", input="over HTTP now", previous_response_id=second.id
        )

    assert retrieved.id == second.id
    assert retrieved.previous_response_id == first.id
    assert retrieved.output_text == second.output_text == "[3 items] and me"
    assert later.output_text == "[5 items] over HTTP now"
    assert [content_text(item["content"]) for item in upstream.requests[-1].body["input"]] == [
        "keep me",
        "[1 items] keep me",
        "and me",
        "[3 items] and me",
        "over HTTP now",
    ]


@pytest.mark.anyio
async def test_sdk_lanes_run_side_by_side_and_their_events_name_their_lane() -> None:
    upstream = ScriptedResponsesApp()
    async with (
        sdk_client(FirstWaitsForSecond(upstream)) as client,
        client.responses.connect() as connection,
    ):
        await connection.response.create(model="scripted", input="left", stream_id="left")
        await connection.response.create(model="scripted", input="right", stream_id="right")
        events = await next_events(connection, turns=2)

    lanes: dict[str, list[Any]] = {}
    for event in events:
        lanes.setdefault(event.stream_id, []).append(event)
    assert set(lanes) == {"left", "right"}
    for name, lane in lanes.items():
        assert [event.sequence_number for event in lane] == list(range(len(lane)))
        assert lane[-1].type == "response.completed"
        assert lane[-1].response.output_text == f"[1 items] {name}"
    assert len(upstream.requests) == 2


# -- openai-agents: OpenAIResponsesWSModel -----------------------------------------------


@function_tool
def get_word(input: str) -> str:
    """Return a word about the input."""
    return f"WORD({len(input)})"


@pytest.mark.anyio
@pytest.mark.parametrize("upstream_api", ["responses", "chat"])
async def test_agents_websocket_model_chains_a_tool_loop_unstored(
    upstream_api: UpstreamApi,
) -> None:
    upstream = scripted(upstream_api)
    store = MemoryStore()
    log = ResponsesLog(ResponsesStateMiddleware(upstream, store=store, upstream_api=upstream_api))
    with serve(log) as base_url:
        async with openai.AsyncOpenAI(
            base_url=base_url + "/v1", api_key="sk-agent", max_retries=0
        ) as client:
            model = OpenAIResponsesWSModel(model="scripted", openai_client=client)
            agent = Agent(
                name="probe",
                instructions="You are a probe.",
                tools=[get_word],
                model=model,
                model_settings=ModelSettings(store=False),
            )
            try:
                result = await Runner.run(
                    agent, "please CALL:get_word", auto_previous_response_id=True
                )
            finally:
                await model.close()

    assert result.final_output == "tool said: WORD(20)"
    first, second = log.frames
    assert "previous_response_id" not in first
    assert [content_text(item["content"]) for item in first["input"]] == ["please CALL:get_word"]
    assert second["previous_response_id"] == result.raw_responses[0].response_id
    assert [item["type"] for item in second["input"]] == ["function_call_output"]
    assert first["store"] is second["store"] is False
    assert store.size == 0

    last = upstream.requests[-1].body
    if upstream_api == "responses":
        kinds = [item.get("type", "message") for item in last["input"]]
        assert kinds == ["message", "function_call", "function_call_output"]
        assert last["input"][-1]["output"] == "WORD(20)"
    else:
        roles = [message["role"] for message in last["messages"]]
        assert roles == ["system", "user", "assistant", "tool"]
        assert last["messages"][-1]["content"] == "WORD(20)"


@pytest.mark.anyio
async def test_sdk_stored_warm_ups_continue_over_http_and_warm_ups_continue_stored_responses() -> (
    None
):
    upstream = ScriptedResponsesApp()
    async with sdk_client(upstream) as client:
        first = await client.responses.create(model="scripted", input="stored over HTTP")
        async with client.responses.connect() as connection:
            warm = await turn(
                connection,
                input="warm up",
                store=True,
                previous_response_id=first.id,
                generate=False,
            )
        assert [event.type for event in warm] == ["response.created", "response.completed"]
        assert warm[-1].response.output == []
        follow = await client.responses.create(
            model="scripted", input="go on", previous_response_id=warm[-1].response.id
        )
    assert len(upstream.requests) == 2  # the warm-up never reached the app
    assert [content_text(item.get("content")) for item in upstream.requests[-1].body["input"]][
        :1
    ] == ["stored over HTTP"]
    assert follow.output_text == "[4 items] go on"
