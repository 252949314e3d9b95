"""openai-agents drives the middleware the way agent apps do: chained tool loops."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from agents import (
    Agent,
    OpenAIConversationsSession,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp, StreamingASGITransport

pytestmark = pytest.mark.anyio

set_tracing_disabled(True)


@function_tool
def get_word(input: str) -> str:
    """Return a word about the input."""
    return f"WORD({len(input)})"


def sdk_for(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://testserver/v1", api_key="sk-agent", http_client=http, max_retries=0
    )


def agent_for(app: Any, http: httpx.AsyncClient) -> Agent:
    client = sdk_for(http)
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


# -- conversations -----------------------------------------------------------------------


@pytest.mark.parametrize("upstream_api", ["responses", "chat"])
async def test_a_tool_loop_run_on_a_server_conversation_keeps_it_whole(
    store: Store, upstream_api: str
) -> None:
    upstream: Any = ScriptedResponsesApp() if upstream_api == "responses" else ScriptedChatApp()
    app = ResponsesStateMiddleware(upstream, store=store, upstream_api=upstream_api)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://testserver"
    ) as http:
        agent = agent_for(app, http)
        client = sdk_for(http)
        conversation = await client.conversations.create()
        result = await Runner.run(agent, "please CALL:get_word", conversation_id=conversation.id)
        again = await Runner.run(agent, "and now?", conversation_id=conversation.id)
        items = [i async for i in client.conversations.items.list(conversation.id, order="asc")]
    assert result.final_output == "tool said: WORD(20)"
    # every model call named the conversation and sent only what was new
    sent = [request.body for request in upstream.requests] if upstream_api == "responses" else []
    for body in sent:
        assert "conversation" not in body  # the middleware resolved it
    assert again.final_output.endswith("and now?")
    kinds = [item.type for item in items]
    assert kinds == [
        "message",  # please CALL:get_word
        "function_call",
        "function_call_output",
        "message",  # tool said: WORD(20)
        "message",  # and now?
        "message",  # the answer
    ]
    text = repr(upstream.requests[-1].body)
    assert "please CALL:get_word" in text
    assert "WORD(20)" in text


async def test_an_agent_remembers_through_an_openai_conversations_session(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=store)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://testserver"
    ) as http:
        agent = agent_for(app, http)
        client = sdk_for(http)
        session = OpenAIConversationsSession(openai_client=client)
        first = await Runner.run(agent, "please CALL:get_word", session=session)
        second = await Runner.run(agent, "the word is KIWI", session=session)
        conversation_id = await session._get_session_id()
        items = await session.get_items()
        popped = await session.pop_item()
        after_pop = await session.get_items()
        third = await Runner.run(agent, "what now?", session=session)
        await session.clear_session()
        with pytest.raises(openai.NotFoundError):
            await client.conversations.retrieve(conversation_id)
    assert first.final_output == "tool said: WORD(20)"
    assert second.final_output.endswith("the word is KIWI")
    # the session's history reached the model each time: 6 items before the third run
    assert [item.get("type", "message") for item in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
        "message",
    ]
    assert popped is not None
    assert popped.get("role") == "assistant"
    assert len(after_pop) == 5
    history = upstream.requests[-1].body["input"]
    assert "please CALL:get_word" in repr(history)
    assert "the word is KIWI" in repr(history)
    assert third.final_output.endswith("what now?")
