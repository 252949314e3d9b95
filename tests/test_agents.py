"""openai-agents drives the middleware the way agent apps do: chained tool loops."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp, StreamingASGITransport

pytestmark = pytest.mark.anyio

set_tracing_disabled(True)


@function_tool
def get_word(input: str) -> str:
    """Return a word about the input."""
    return f"WORD({len(input)})"


def agent_for(app: Any, http: httpx.AsyncClient) -> Agent:
    client = openai.AsyncOpenAI(
        base_url="http://testserver/v1", api_key="sk-agent", http_client=http, max_retries=0
    )
    return Agent(
        name="probe",
        instructions="You are a probe.",
        tools=[get_word],
        model=OpenAIResponsesModel(model="scripted", openai_client=client),
    )


@pytest.mark.parametrize("upstream_api", ["responses", "chat"])
async def test_auto_chaining_sends_only_new_items_and_the_upstream_sees_all(
    store: Store, upstream_api: str
) -> None:
    upstream: Any = ScriptedResponsesApp() if upstream_api == "responses" else ScriptedChatApp()
    app = ResponsesStateMiddleware(upstream, store=store, upstream_api=upstream_api)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://testserver"
    ) as http:
        agent = agent_for(app, http)
        result = await Runner.run(agent, "please CALL:get_word", auto_previous_response_id=True)
        follow_up = await Runner.run(
            agent, "and now?", previous_response_id=result.last_response_id
        )
    assert result.final_output == "tool said: WORD(20)"
    # the second model call of the first run sent only the tool output, chained
    assert len(upstream.requests) == 3
    assert follow_up.final_output.endswith("and now?")
    history = upstream.requests[-1].body
    text = repr(history)
    assert "please CALL:get_word" in text
    assert "WORD(20)" in text
    assert "tool said: WORD(20)" in text


async def test_streamed_runs_chain_too(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=store)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://testserver"
    ) as http:
        agent = agent_for(app, http)
        run = Runner.run_streamed(agent, "please CALL:get_word", auto_previous_response_id=True)
        async for _event in run.stream_events():
            pass
    assert run.final_output == "tool said: WORD(20)"
    second = upstream.requests[-1].body
    assert [item.get("type") for item in second["input"]][-2:] == [
        "function_call",
        "function_call_output",
    ]
