"""The Responses-to-Chat bridge end to end: the official SDK talks Responses to the
middleware, and a scripted Chat Completions app answers behind it.

Every assertion about the translated request is made on what the chat app received
(``ScriptedChatApp.requests``), every assertion about the reply on what the client got.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from state_middleware import MemoryStore, ResponsesStateMiddleware, Store
from state_middleware._bridge.messages import NO_CALL_FOR_OUTPUT, NO_OUTPUT_FOR_CALL
from state_middleware._bridge.reasoning import REASONING_PREFIX
from state_middleware._bridge.stream import STREAM_CUT_MESSAGE
from state_middleware.testing import ScriptedChatApp
from state_middleware.testing._chat_app import (
    MID_STREAM_ERROR_MESSAGE,
    PATCH_TEMPLATE,
    SCRIPTED_FAILURE_MESSAGE,
    THINKING_MISSING_MESSAGE,
)

from ._sync import Gate, soon
from .conftest import sdk_client, text_events

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer sk-test"}

LOOKUP: dict[str, Any] = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up.",
    "parameters": {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
    },
    "strict": False,
}

APPLY_PATCH: dict[str, Any] = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def bridge(
    store: Store | None = None, *, thinking: bool = False, **options: Any
) -> tuple[ScriptedChatApp, ResponsesStateMiddleware]:
    """A scripted chat app and the middleware bridging Responses onto it."""
    chat = ScriptedChatApp(thinking=thinking)
    return chat, ResponsesStateMiddleware(chat, store=store, upstream_api="chat", **options)


def function_tool(name: str) -> dict[str, Any]:
    return {**LOOKUP, "name": name}


def roles_and_texts(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(message["role"], message.get("content")) for message in messages]


def message(error: openai.APIStatusError) -> Any:
    """The ``message`` of the OpenAI error body (the SDK's own ``.message`` adds a prefix)."""
    assert isinstance(error.body, dict)
    return error.body["message"]


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(``event:`` name, decoded ``data:``) of each frame of a Responses event stream."""
    events = []
    for frame in raw.split(b"\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
        events.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
    return events


@asynccontextmanager
async def raw_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Plain httpx in process, for checks on the bytes and status codes."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=AUTH
    ) as http:
        yield http


async def raw_stream(app: Any, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    async with raw_client(app) as http:
        reply = await http.post("/v1/responses", json={"stream": True, **body})
    return reply, reply.content


# -- core behaviours in bridge mode ---------------------------------------------------------


async def test_a_chain_reaches_the_chat_app_as_one_conversation(store: Store) -> None:
    chat, app = bridge(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="one")
        second = await client.responses.create(
            model="m", input="two", previous_response_id=first.id
        )
        third = await client.responses.create(
            model="m",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "three"}]}],
            previous_response_id=second.id,
            stream=True,
        )
        events = [event async for event in third]
    sent = chat.requests[-1].body
    assert chat.requests[-1].path == "/v1/chat/completions"
    assert roles_and_texts(sent["messages"]) == [
        ("user", "one"),
        ("assistant", "[1 messages] one"),
        ("user", "two"),
        ("assistant", "[3 messages] two"),
        ("user", "three"),
    ]
    assert "previous_response_id" not in sent
    assert "input" not in sent
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "[5 messages] three"
    assert final.previous_response_id == second.id
    assert second.previous_response_id == first.id


async def test_each_turn_gets_our_id_everywhere_and_is_retrievable(store: Store) -> None:
    _, app = bridge(store)
    async with sdk_client(app) as client:
        made = await client.responses.create(model="m", input="hello", metadata={"a": "b"})
        stream = await client.responses.create(
            model="m", input="more", previous_response_id=made.id, stream=True
        )
        streamed_ids = {e.response.id async for e in stream if hasattr(e, "response")}
        fetched = await client.responses.retrieve(made.id)
        (streamed_id,) = streamed_ids
        fetched_stream = await client.responses.retrieve(streamed_id)
    assert made.id.startswith("resp_")
    assert streamed_id.startswith("resp_")
    assert streamed_id != made.id
    assert fetched.model_dump() == made.model_dump()
    assert made.status == "completed"
    assert made.metadata == {"a": "b"}
    assert made.store is True
    assert fetched_stream.output_text == "[3 messages] more"


async def test_store_false_turns_are_answered_but_not_kept(store: Store) -> None:
    chat, app = bridge(store)
    async with sdk_client(app) as client:
        made = await client.responses.create(model="m", input="secret", store=False)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(made.id)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="m", input="next", previous_response_id=made.id)
    assert made.output_text == "[1 messages] secret"
    assert made.store is False
    assert "store" not in chat.requests[0].body
    assert refused.value.code == "previous_response_not_found"
    assert len(chat.requests) == 1


async def test_input_items_and_delete_serve_bridged_turns(store: Store) -> None:
    chat, app = bridge(store)
    async with sdk_client(app) as client, raw_client(app) as http:
        first = await client.responses.create(model="m", input="u0")
        second = await client.responses.create(model="m", input="u1", previous_response_id=first.id)
        items = await client.responses.input_items.list(second.id, order="asc", limit=100)
        deleted = await http.delete(f"/v1/responses/{first.id}")
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        third = await client.responses.create(model="m", input="u2", previous_response_id=second.id)
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["u0", "[1 messages] u0", "u1"]
    assert deleted.json() == {"id": first.id, "object": "response.deleted", "deleted": True}
    assert third.output_text == "[5 messages] u2"  # deleting never breaks descendants
    assert len(chat.requests) == 3


async def test_unknown_ids_are_not_found_without_calling_the_app(store: Store) -> None:
    chat, app = bridge(store)
    async with raw_client(app) as http:
        turn = await http.post(
            "/v1/responses",
            json={"model": "m", "input": "x", "previous_response_id": "resp_unknown"},
        )
        lookups = [
            await http.request(method, path)
            for method, path in [
                ("GET", "/v1/responses/resp_unknown"),
                ("DELETE", "/v1/responses/resp_unknown"),
                ("GET", "/v1/responses/resp_unknown/input_items"),
            ]
        ]
    assert turn.status_code == 400
    assert turn.json()["error"]["param"] == "previous_response_id"
    assert turn.json()["error"]["code"] == "previous_response_not_found"
    assert [answer.status_code for answer in lookups] == [404, 404, 404]
    assert chat.requests == []


# -- 1. request mapping -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["system", "developer"])
async def test_instructions_and_system_messages_take_the_configured_role(role: str) -> None:
    chat, app = bridge(system_role=role)
    async with sdk_client(app) as client:
        await client.responses.create(
            model="m",
            instructions="Be brief.",
            input=[
                {"role": "developer", "content": "Speak French."},
                {"type": "message", "role": "system", "content": "No emoji."},
                {"role": "user", "content": "hi"},
            ],
        )
    assert chat.requests[-1].body["messages"] == [
        {"role": role, "content": "Be brief."},
        {"role": role, "content": "Speak French."},
        {"role": role, "content": "No emoji."},
        {"role": "user", "content": "hi"},
    ]


async def test_string_and_list_inputs_and_content_parts_become_chat_messages() -> None:
    chat, app = bridge()
    image = "data:image/png;base64,iVBORw0KGgo="
    async with sdk_client(app) as client:
        plain = await client.responses.create(model="m", input="just a string")
        plain_messages = chat.requests[-1].body["messages"]
        listed = await client.responses.create(
            model="m",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look at"},
                        {"type": "input_image", "image_url": image, "detail": "low"},
                    ],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "a"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_earlier",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "b", "annotations": []}],
                },
                {"role": "user", "content": "c"},
            ],
        )
    assert plain_messages == [{"role": "user", "content": "just a string"}]
    assert plain.output_text == "[1 messages] just a string"
    assert chat.requests[-1].body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
            ],
        },
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert listed.output_text == "[4 messages] c"


async def test_a_run_of_function_calls_becomes_one_assistant_message_and_tool_messages() -> None:
    chat, app = bridge()
    history: list[Any] = [
        {"role": "user", "content": "weather in two towns"},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_a",
            "name": "lookup",
            "arguments": '{"input":"Oslo"}',
            "status": "completed",
        },
        {"type": "function_call", "call_id": "call_b", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "rain"},
        {
            "type": "function_call_output",
            "call_id": "call_b",
            "output": [{"type": "input_text", "text": "sun"}],
        },
    ]
    async with sdk_client(app) as client:
        answer = await client.responses.create(
            model="m", input=history, tools=[LOOKUP], store=False
        )
    assert chat.requests[-1].body["messages"] == [
        {"role": "user", "content": "weather in two towns"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"input":"Oslo"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_b", "content": "sun"},
    ]
    assert answer.output_text == "tool said: sun"


@pytest.mark.parametrize("max_tokens_field", ["max_completion_tokens", "max_tokens"])
async def test_request_options_are_translated_and_store_is_never_forwarded(
    max_tokens_field: str,
) -> None:
    chat, app = bridge(max_tokens_field=max_tokens_field)
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    async with sdk_client(app) as client:
        made = await client.responses.create(
            model="m",
            input="hi",
            tools=[LOOKUP],  # type: ignore[list-item]
            tool_choice={"type": "function", "name": "lookup"},
            parallel_tool_calls=False,
            text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
            max_output_tokens=64,
            reasoning={"effort": "low"},
            temperature=0.25,
            top_p=0.5,
            metadata={"k": "v"},
            user="user-1",
            store=True,
            extra_body={"top_k": 7},
        )
    sent = chat.requests[-1].body
    assert sent == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": LOOKUP["description"],
                    "parameters": LOOKUP["parameters"],
                    "strict": False,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False,
        "temperature": 0.25,
        "top_p": 0.5,
        "metadata": {"k": "v"},
        "user": "user-1",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        },
        "reasoning_effort": "low",
        max_tokens_field: 64,
        "top_k": 7,
    }
    # The response echoes the client's own parameters, not the chat ones.
    assert made.max_output_tokens == 64
    assert made.reasoning is not None
    assert made.reasoning.effort == "low"
    assert made.text is not None
    assert made.text.format is not None
    assert made.text.format.type == "json_schema"
    assert made.parallel_tool_calls is False


async def test_streaming_asks_the_chat_app_for_usage_and_reports_it() -> None:
    chat, app = bridge()
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input="count me", stream=True)
        events = [event async for event in stream]
    sent = chat.requests[-1].body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    usage = events[-1].response.usage  # type: ignore[union-attr]
    assert events[-1].type == "response.completed"
    assert usage is not None
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


# -- 2. custom tools ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_custom_tool_round_trips_as_custom_tool_call(store: Store, stream: bool) -> None:
    chat, app = bridge(store)
    patch = PATCH_TEMPLATE.format("hello.txt")
    async with sdk_client(app) as client:
        if stream:
            async with client.responses.stream(
                model="m", input="PATCH:hello.txt", tools=[APPLY_PATCH]
            ) as events:
                seen = [event async for event in events]
                first = await events.get_final_response()
            done = [e for e in seen if e.type == "response.custom_tool_call_input.done"]
            assert [e.input for e in done] == [patch]  # type: ignore[union-attr]
        else:
            first = await client.responses.create(
                model="m", input="PATCH:hello.txt", tools=[APPLY_PATCH]
            )
        (call,) = first.output
        assert call.type == "custom_tool_call"
        assert call.name == "apply_patch"
        assert call.input == patch
        offered = chat.requests[-1].body["tools"]
        second = await client.responses.create(
            model="m",
            previous_response_id=first.id,
            tools=[APPLY_PATCH],
            input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}],
        )
    (tool,) = offered
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "apply_patch"
    assert tool["function"]["parameters"] == {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
    }
    assert "Edit files with a patch." in tool["function"]["description"]
    assert APPLY_PATCH["format"]["definition"] in tool["function"]["description"]
    replayed = chat.requests[-1].body["messages"]
    (replayed_call,) = replayed[1]["tool_calls"]
    assert replayed_call["id"] == call.call_id
    assert replayed_call["function"]["name"] == "apply_patch"
    assert json.loads(replayed_call["function"]["arguments"]) == {"input": patch}
    assert replayed[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "Done!"}
    assert second.output_text == "tool said: Done!"


# -- 3. streaming -------------------------------------------------------------------------


async def test_the_sdk_stream_helper_accepts_the_translated_stream(store: Store) -> None:
    _, app = bridge(store)
    async with sdk_client(app) as client:
        async with client.responses.stream(model="m", input="alpha beta gamma") as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
        stored = await client.responses.retrieve(final.id)
    types = [event.type for event in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert types == text_events(len(deltas))
    assert len(deltas) > 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(deltas) == final.output_text == "[1 messages] alpha beta gamma"
    assert stored.output_text == final.output_text
    assert [item.id for item in stored.output] == [item.id for item in final.output]


async def test_parallel_tool_calls_stream_as_separate_items(store: Store) -> None:
    chat, app = bridge(store)
    tools: Any = [function_tool("a"), function_tool("b")]
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="CALL:a,b", tools=tools, stream=True
        )
        events = [event async for event in stream]
        final = events[-1].response  # type: ignore[union-attr]
        outputs: Any = [
            {"type": "function_call_output", "call_id": item.call_id, "output": f"from {item.name}"}
            for item in final.output
        ]
        answer = await client.responses.create(
            model="m", input=outputs, tools=tools, previous_response_id=final.id
        )
    added = [
        (e.output_index, e.item.name) for e in events if e.type == "response.output_item.added"
    ]
    assert added == [(0, "a"), (1, "b")]
    index_of = {e.item.id: e.output_index for e in events if e.type == "response.output_item.added"}
    arguments: dict[int, str] = {0: "", 1: ""}
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            assert index_of[event.item_id] == event.output_index
            arguments[event.output_index] += event.delta
    done = [(e.output_index, e.item.type) for e in events if e.type == "response.output_item.done"]
    assert done == [(0, "function_call"), (1, "function_call")]
    assert [item.name for item in final.output] == ["a", "b"]
    assert [item.arguments for item in final.output] == [arguments[0], arguments[1]]
    assert json.loads(arguments[0]) == {"input": "CALL:a,b"}
    assert final.output[0].call_id != final.output[1].call_id
    replayed = chat.requests[-1].body["messages"]
    assert [call["function"]["name"] for call in replayed[1]["tool_calls"]] == ["a", "b"]
    assert [m["role"] for m in replayed] == ["user", "assistant", "tool", "tool"]
    assert answer.output_text == "tool said: from b"


async def test_the_raw_stream_names_each_event_on_an_event_line() -> None:
    _, app = bridge()
    reply, raw = await raw_stream(app, {"model": "m", "input": "raw bytes please"})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in reply.headers
    assert raw.startswith(b"event: response.created\ndata: {")
    assert b"[DONE]" not in raw
    events = sse_events(raw)
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[-1][0] == "response.completed"


class GatedChatApp:
    """A chat app that streams ``pieces``, waiting at ``gate`` before each chunk."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.gate = Gate()

    @staticmethod
    def frame(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        chunk = {"object": "chat.completion.chunk", "choices": [choice]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in self.pieces:
            await self.gate()
            body = self.frame({"content": piece})
            await send({"type": "http.response.body", "body": body, "more_body": True})
        end = self.frame({}, "stop") + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": end, "more_body": False})


async def test_deltas_reach_the_client_as_each_chat_chunk_arrives() -> None:
    pieces = ["one", " two", " three", " four", " five"]
    chat = GatedChatApp(pieces)
    app = ResponsesStateMiddleware(chat, upstream_api="chat")
    deltas: list[str] = []
    events: list[Any] = []
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input="slowly", stream=True)

        async def read_in_lock_step() -> None:
            chat.gate.open()  # the first chunk
            async for event in stream:
                events.append(event)
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
                    # The chat app sends its next chunk only once this delta is in the
                    # client's hands; buffered, the deltas would never come.
                    assert chat.gate.passed == len(deltas)
                    chat.gate.open()

        await soon(read_in_lock_step(), "each delta reaching the client before the next chunk")
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "".join(pieces)
    assert deltas == pieces


async def test_a_chat_app_that_ignores_stream_still_gives_the_client_a_stream(
    store: Store,
) -> None:
    chat = ScriptedChatApp(answer_as="json")
    app = ResponsesStateMiddleware(chat, store=store, upstream_api="chat")
    async with sdk_client(app) as client:
        async with client.responses.stream(model="m", input="alpha beta gamma") as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
        stored = await client.responses.retrieve(final.id)
        second = await client.responses.create(
            model="m", input="and then?", previous_response_id=final.id
        )
    assert chat.requests[0].body["stream"] is True  # asked for, and answered with JSON
    assert [event.type for event in events] == text_events(1)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    (delta,) = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert delta == final.output_text == "[1 messages] alpha beta gamma"
    assert final.usage is not None
    assert final.usage.total_tokens > 0
    assert stored.output_text == final.output_text
    assert [item.id for item in stored.output] == [item.id for item in final.output]
    assert roles_and_texts(chat.requests[-1].body["messages"]) == [
        ("user", "alpha beta gamma"),
        ("assistant", final.output_text),
        ("user", "and then?"),
    ]
    assert second.output_text == "[3 messages] and then?"


async def answer_lookup(client: openai.AsyncOpenAI, previous_id: str, call_id: str) -> Any:
    """The next turn after a ``lookup`` call: its output, ``a noun``."""
    return await client.responses.create(
        model="m",
        previous_response_id=previous_id,
        tools=[LOOKUP],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call_id, "output": "a noun"}],
    )


@pytest.mark.parametrize("stream", [True, False])
async def test_a_thinking_tool_call_through_a_server_answering_the_other_way_continues(
    store: Store, stream: bool
) -> None:
    """The chat app answers JSON when asked to stream, or streams when asked for JSON:
    the client still gets what it asked for, and the turn is stored and continues."""
    chat = ScriptedChatApp(thinking=True, answer_as="json" if stream else "stream")
    app = ResponsesStateMiddleware(chat, store=store, upstream_api="chat")
    async with sdk_client(app) as client:
        made: Any = await client.responses.create(
            model="m",
            input="CALL:lookup the word",
            tools=[LOOKUP],  # type: ignore[list-item]
            stream=stream,
        )
        events = [event async for event in made] if stream else []
        first = events[-1].response if stream else made
        reasoning, call = first.output
        stored = await client.responses.retrieve(first.id)
        answer = await answer_lookup(client, first.id, call.call_id)
    assert chat.requests[0].body.get("stream", False) is stream
    thought = "thinking about: CALL:lookup the word"
    if stream:  # replayed: each text in one delta
        assert [e.delta for e in events if e.type == "response.reasoning_text.delta"] == [thought]
        arguments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        assert arguments == [call.arguments]
    assert reasoning.type == "reasoning"
    assert json.loads(call.arguments) == {"input": "CALL:lookup the word"}
    assert [item.id for item in stored.output] == [item.id for item in first.output]
    # The thinking app refuses a tool-call message without its reasoning: it got it back.
    assistant = chat.requests[-1].body["messages"][1]
    assert assistant["reasoning_content"] == thought
    assert answer.output_text == "tool said: a noun"


@pytest.mark.parametrize(
    ("text", "message"),
    [("MIDERROR please", MID_STREAM_ERROR_MESSAGE), ("CUT:3 please", STREAM_CUT_MESSAGE)],
)
async def test_an_unasked_chat_stream_that_fails_is_a_502_and_is_not_stored(
    text: str, message: str
) -> None:
    store = MemoryStore()
    app = ResponsesStateMiddleware(
        ScriptedChatApp(answer_as="stream"), store=store, upstream_api="chat"
    )
    async with raw_client(app) as http:
        reply = await http.post("/v1/responses", json={"model": "m", "input": text})
    assert reply.status_code == 502
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["message"] == message
    assert error["type"] == "server_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert store.size == 0


async def test_an_unasked_chat_stream_past_the_size_limit_is_a_502() -> None:
    app = ResponsesStateMiddleware(
        ScriptedChatApp(answer_as="stream"), upstream_api="chat", max_body_bytes=4096
    )
    async with raw_client(app) as http:
        reply = await http.post("/v1/responses", json={"model": "m", "input": "DELTAS:200"})
    assert reply.status_code == 502
    assert reply.json()["error"]["message"] == (
        "The upstream chat completion is too large to translate."
    )


# -- 4. thinking models -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_content_becomes_a_reasoning_item(stream: bool) -> None:
    _, app = bridge(thinking=True)
    async with sdk_client(app) as client:
        if stream:
            async with client.responses.stream(model="m", input="deep question") as events:
                seen = [event async for event in events]
                made = await events.get_final_response()
            thoughts = [e.delta for e in seen if e.type == "response.reasoning_text.delta"]
            assert "".join(thoughts) == "thinking about: deep question"
        else:
            made = await client.responses.create(model="m", input="deep question")
    reasoning, message = made.output
    assert reasoning.type == "reasoning"
    assert reasoning.content is not None
    assert [part.text for part in reasoning.content] == ["thinking about: deep question"]
    assert reasoning.encrypted_content is not None
    assert reasoning.encrypted_content.startswith(REASONING_PREFIX)
    assert message.type == "message"
    assert made.output_text == "[1 messages] deep question"
    assert made.usage is not None
    assert made.usage.output_tokens_details.reasoning_tokens > 0


async def first_thinking_call(
    client: openai.AsyncOpenAI, *, store: bool
) -> tuple[Any, list[dict[str, Any]]]:
    """A thinking turn that calls ``lookup``: the response and its output as dicts."""
    made = await client.responses.create(
        model="m",
        input="CALL:lookup the word",
        tools=[LOOKUP],  # type: ignore[list-item]
        store=store,
    )
    assert [item.type for item in made.output] == ["reasoning", "function_call"]
    return made, [item.model_dump(exclude_none=True) for item in made.output]


async def test_reasoning_is_replayed_onto_the_tool_call_message_in_a_chain(store: Store) -> None:
    chat, app = bridge(store, thinking=True)
    async with sdk_client(app) as client:
        first, (_, call) = await first_thinking_call(client, store=True)
        second = await client.responses.create(
            model="m",
            previous_response_id=first.id,
            tools=[LOOKUP],  # type: ignore[list-item]
            input=[
                {"type": "function_call_output", "call_id": call["call_id"], "output": "a noun"}
            ],
        )
    assistant = chat.requests[-1].body["messages"][1]
    assert assistant["reasoning_content"] == "thinking about: CALL:lookup the word"
    assert assistant["tool_calls"][0]["id"] == call["call_id"]
    assert second.output_text == "tool said: a noun"


async def test_reasoning_resent_as_encrypted_content_only_is_replayed(store: Store) -> None:
    """Codex's stateless way: store false, whole history resent, reasoning ``content``
    null and only ``encrypted_content`` kept."""
    chat, app = bridge(store, thinking=True)
    async with sdk_client(app) as client:
        _, (reasoning, call) = await first_thinking_call(client, store=False)
        resent = {
            "type": "reasoning",
            "id": reasoning["id"],
            "summary": [],
            "content": None,
            "encrypted_content": reasoning["encrypted_content"],
        }
        history: Any = [
            {"role": "user", "content": "CALL:lookup the word"},
            resent,
            call,
            {"type": "function_call_output", "call_id": call["call_id"], "output": "a verb"},
        ]
        second = await client.responses.create(
            model="m",
            input=history,
            tools=[LOOKUP],  # type: ignore[list-item]
            store=False,
            include=["reasoning.encrypted_content"],
        )
    assistant = chat.requests[-1].body["messages"][1]
    assert assistant["reasoning_content"] == "thinking about: CALL:lookup the word"
    assert second.output_text == "tool said: a verb"


@pytest.mark.parametrize("first_stored", [True, False])
async def test_reasoning_dropped_by_the_client_is_recovered_from_the_stored_turn(
    store: Store, first_stored: bool
) -> None:
    chat, app = bridge(store, thinking=True)
    async with sdk_client(app) as client:
        _, (_, call) = await first_thinking_call(client, store=first_stored)
        history: Any = [
            {"role": "user", "content": "CALL:lookup the word"},
            call,  # the reasoning item before it is gone
            {"type": "function_call_output", "call_id": call["call_id"], "output": "an adverb"},
        ]
        request = client.responses.create(
            model="m",
            input=history,
            tools=[LOOKUP],  # type: ignore[list-item]
            store=False,
        )
        if not first_stored:  # nothing to recover from: the thinking app refuses
            with pytest.raises(openai.BadRequestError) as refused:
                await request
            assert message(refused.value) == THINKING_MISSING_MESSAGE.format(1)
            return
        second = await request
    assistant = chat.requests[-1].body["messages"][1]
    assert assistant["reasoning_content"] == "thinking about: CALL:lookup the word"
    assert second.output_text == "tool said: an adverb"


# -- 5. errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (429, openai.RateLimitError),
        (503, openai.InternalServerError),
    ],
)
async def test_chat_errors_keep_their_status_and_message(
    status: int, error_class: type[openai.APIStatusError], stream: bool
) -> None:
    _, app = bridge()
    async with sdk_client(app) as client:
        with pytest.raises(error_class) as raised:
            await client.responses.create(model="m", input=f"FAIL:{status}", stream=stream)
    error = raised.value
    assert error.status_code == status
    assert error.body == {
        "message": SCRIPTED_FAILURE_MESSAGE,
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [("MIDERROR please", MID_STREAM_ERROR_MESSAGE), ("CUT:3 please", STREAM_CUT_MESSAGE)],
)
async def test_a_chat_stream_failing_midway_ends_failed_and_is_not_stored(
    store: Store, text: str, message: str
) -> None:
    _, app = bridge(store)
    reply, raw = await raw_stream(app, {"model": "m", "input": text})
    events = sse_events(raw)
    turn_id = events[0][1]["response"]["id"]
    assert reply.status_code == 200
    assert [name for name, _ in events[-2:]] == ["error", "response.failed"]
    assert events[-2][1]["message"] == message
    assert events[-2][1]["error"]["message"] == message
    failed = events[-1][1]["response"]
    assert failed["id"] == turn_id
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == message
    async with sdk_client(app) as client:
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(turn_id)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="m", input="next", previous_response_id=turn_id)
    assert refused.value.code == "previous_response_not_found"


async def test_hosted_tools_are_refused_before_the_chat_app_is_called() -> None:
    chat, app = bridge()
    async with sdk_client(app) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(
                model="m",
                input="search",
                tools=[{"type": "web_search"}, LOOKUP],  # type: ignore[list-item]
            )
    assert refused.value.param == "tools"
    assert "web_search" in message(refused.value)
    assert chat.requests == []


async def test_hosted_tools_are_dropped_when_asked() -> None:
    chat, app = bridge(unsupported_tools="drop")
    async with sdk_client(app) as client:
        made = await client.responses.create(
            model="m",
            input="search",
            tools=[{"type": "web_search"}, LOOKUP],  # type: ignore[list-item]
        )
    assert [tool["function"]["name"] for tool in chat.requests[-1].body["tools"]] == ["lookup"]
    assert made.output_text == "[1 messages] search"


# -- 6. unmatched tool calls --------------------------------------------------------------


async def test_an_output_without_its_call_is_refused_before_the_chat_app_is_called(
    store: Store,
) -> None:
    chat, app = bridge(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="hello")
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(
                model="m",
                previous_response_id=first.id,
                input=[{"type": "function_call_output", "call_id": "call_nowhere", "output": "x"}],
            )
    assert message(refused.value) == NO_CALL_FOR_OUTPUT.format("call_nowhere")
    assert refused.value.param == "input"
    assert len(chat.requests) == 1


@pytest.mark.parametrize("chained", [True, False])
async def test_a_call_without_its_output_is_refused_before_the_chat_app_is_called(
    store: Store, chained: bool
) -> None:
    chat, app = bridge(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(
            model="m",
            input="CALL:lookup",
            tools=[LOOKUP],  # type: ignore[list-item]
        )
        (call,) = first.output
        follow_up: dict[str, Any] = {"previous_response_id": first.id, "input": "never mind"}
        if not chained:  # the client resends the history itself
            follow_up["input"] = [
                {"role": "user", "content": "CALL:lookup"},
                call.model_dump(exclude_none=True),
                {"role": "user", "content": "never mind"},
            ]
            del follow_up["previous_response_id"]
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="m", tools=[LOOKUP], **follow_up)  # type: ignore[list-item]
    assert message(refused.value) == NO_OUTPUT_FOR_CALL.format(call.call_id)  # type: ignore[union-attr]
    assert refused.value.param == "input"
    assert len(chat.requests) == 1
