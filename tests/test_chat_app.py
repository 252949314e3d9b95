"""The scripted Chat Completions upstream, driven by the official openai SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from state_middleware._bridge.errors import chat_error_to_response_error
from state_middleware._bridge.reasoning import reasoning_by_call_id
from state_middleware._bridge.request import build_chat_request
from state_middleware._bridge.response import chat_completion_to_response
from state_middleware._bridge.stream import ChatStreamTranslator
from state_middleware._skeleton import response_skeleton
from state_middleware._sse import SSEDecoder
from state_middleware.testing._chat_app import (
    MID_STREAM_ERROR_MESSAGE,
    PATCH_TEMPLATE,
    THINKING_MISSING_MESSAGE,
    ScriptedChatApp,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def function_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.fixture
def app() -> ScriptedChatApp:
    return ScriptedChatApp()


@pytest.fixture
async def http(app: ScriptedChatApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://upstream"
    ) as client:
        yield client


@pytest.fixture
def client(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://upstream/v1", api_key="sk-test", http_client=http, max_retries=0
    )


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_reply_counts_messages_and_echoes_the_last_user_text(
    client: openai.AsyncOpenAI, app: ScriptedChatApp
) -> None:
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "be brief"}, user("hello there")]
    )
    choice = completion.choices[0]
    assert choice.message.content == "[2 messages] hello there"
    assert choice.finish_reason == "stop"
    assert completion.model == "m"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert app.requests[0].path == "/v1/chat/completions"
    assert app.requests[0].body["messages"][1] == user("hello there")


async def test_reply_after_a_tool_message_quotes_the_tool_output(
    client: openai.AsyncOpenAI,
) -> None:
    completion = await client.chat.completions.create(
        model="m",
        messages=[
            user("go CALL:f"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        tools=[function_tool("f")],
    )
    assert completion.choices[0].message.content == "tool said: 42"
    assert completion.choices[0].message.tool_calls is None


async def test_call_token_calls_the_named_tool_with_the_user_text(
    client: openai.AsyncOpenAI,
) -> None:
    completion = await client.chat.completions.create(
        model="m",
        messages=[user("please CALL:lookup")],
        tools=[function_tool("lookup")],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"input": "please CALL:lookup"}


async def test_calling_a_tool_the_request_does_not_offer_is_a_400(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError, match="'missing' is not among the request tools"):
        await client.chat.completions.create(model="m", messages=[user("CALL:missing")])


async def test_shell_and_patch_tokens_call_the_codex_tools(client: openai.AsyncOpenAI) -> None:
    tools = [function_tool("exec_command"), function_tool("apply_patch")]
    shell = await client.chat.completions.create(
        model="m",
        messages=[user("SHELL: echo hi there")],
        tools=tools,
    )
    shell_call = (shell.choices[0].message.tool_calls or [])[0]
    assert shell_call.function.name == "exec_command"
    assert json.loads(shell_call.function.arguments) == {"cmd": "echo hi there"}
    patch = await client.chat.completions.create(
        model="m",
        messages=[user("PATCH:notes.txt")],
        tools=tools,
    )
    patch_call = (patch.choices[0].message.tool_calls or [])[0]
    assert patch_call.function.name == "apply_patch"
    arguments = json.loads(patch_call.function.arguments)
    assert arguments == {"input": PATCH_TEMPLATE.format("notes.txt")}
    assert arguments["input"].startswith("*** Begin Patch\n*** Add File: notes.txt\n")


async def test_fail_token_answers_with_that_status(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="m", messages=[user("FAIL:429")])
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=[user("FAIL:503")], stream=True)


async def test_length_token_finishes_with_length(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="m", messages=[user("LENGTH")])
    assert completion.choices[0].finish_reason == "length"


async def test_stream_deltas_join_to_the_json_text(client: openai.AsyncOpenAI) -> None:
    messages = [user("stream me please")]
    whole = await client.chat.completions.create(model="m", messages=messages)
    chunks = await collect(
        await client.chat.completions.create(model="m", messages=messages, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize(
    ("answer_as", "stream", "content_type"),
    [
        ("json", True, "application/json"),
        ("stream", False, "text/event-stream"),
        ("asked", True, "text/event-stream"),
        ("asked", False, "application/json"),
    ],
)
async def test_answer_as_overrides_what_the_request_asked_for(
    answer_as: str, stream: bool, content_type: str
) -> None:
    app = ScriptedChatApp(answer_as=answer_as)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://upstream"
    ) as http:
        body = {"model": "m", "messages": [user("hi")], "stream": stream}
        reply = await http.post("/v1/chat/completions", json=body)
    assert reply.headers["content-type"].startswith(content_type)
    if content_type == "text/event-stream":
        assert reply.content.endswith(b"data: [DONE]\n\n")
    else:
        assert reply.json()["choices"][0]["message"]["content"] == "[1 messages] hi"


def test_answer_as_takes_only_its_three_values() -> None:
    with pytest.raises(ValueError, match="answer_as"):
        ScriptedChatApp(answer_as="sometimes")


@pytest.mark.parametrize(("option", "value"), [("chunk_style", "vllm"), ("frames_per_write", 0)])
def test_stream_shape_options_refuse_what_they_do_not_know(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        ScriptedChatApp(**{option: value})


@pytest.mark.parametrize("app", [ScriptedChatApp(chunk_style="transformers", frames_per_write=4)])
async def test_a_transformers_style_stream_reads_as_the_same_answer(
    client: openai.AsyncOpenAI,
) -> None:
    chunks = await collect(
        await client.chat.completions.create(
            model="m",
            messages=[user("DELTAS:60")],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[1 messages] DELTAS:60" + "".join(f" {i}" for i in range(1, 60))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    assert len({c.created for c in chunks}) == 3


async def test_stream_with_include_usage_ends_with_a_usage_only_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    chunks = await collect(
        await client.chat.completions.create(
            model="m",
            messages=[user("hi")],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_deltas_token_streams_exactly_k_content_chunks(client: openai.AsyncOpenAI) -> None:
    chunks = await collect(
        await client.chat.completions.create(model="m", messages=[user("DELTAS:7")], stream=True)
    )
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(contents) == 7
    assert contents[1:] == [" 1", " 2", " 3", " 4", " 5", " 6"]


async def test_parallel_calls_stream_as_interleaved_fragments(client: openai.AsyncOpenAI) -> None:
    chunks = await collect(
        await client.chat.completions.create(
            model="m",
            messages=[user("CALL:a,b")],
            tools=[function_tool("a"), function_tool("b")],
            stream=True,
        )
    )
    fragments = [
        c.choices[0].delta.tool_calls[0]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert [f.index for f in fragments] == [0, 1, 0, 1, 0, 1]
    assert [f.function.name for f in fragments[:2]] == ["a", "b"]
    for index in (0, 1):
        arguments = "".join(f.function.arguments or "" for f in fragments if f.index == index)
        assert json.loads(arguments) == {"input": "CALL:a,b"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_cut_token_ends_the_stream_without_done(
    http: httpx.AsyncClient,
) -> None:
    body = {"model": "m", "messages": [user("CUT:2 some words here")], "stream": True}
    response = await http.post("/v1/chat/completions", json=body)
    frames = [f for f in response.content.split(b"\n\n") if f]
    assert len(frames) == 2
    assert b"[DONE]" not in response.content


async def test_complete_stream_ends_with_done(http: httpx.AsyncClient) -> None:
    body = {"model": "m", "messages": [user("hi")], "stream": True}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert all(f.startswith(b"data: ") for f in response.content.split(b"\n\n") if f)


async def test_miderror_sends_an_error_chunk_then_ends(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=[user("MIDERROR now")], stream=True
    )
    with pytest.raises(openai.APIError, match=MID_STREAM_ERROR_MESSAGE):
        await collect(stream)


async def test_unknown_routes_are_404_json(http: httpx.AsyncClient) -> None:
    for method, path in (("POST", "/v1/responses"), ("GET", "/v1/chat/completions")):
        response = await http.request(method, path)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_thinking_mode_reasons_before_answering() -> None:
    app = ScriptedChatApp(thinking=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        client = openai.AsyncOpenAI(
            base_url="http://upstream/v1", api_key="sk", http_client=http, max_retries=0
        )
        completion = await client.chat.completions.create(model="m", messages=[user("why")])
        message = completion.choices[0].message
        assert getattr(message, "reasoning_content", None) == "thinking about: why"
        assert message.content == "[1 messages] why"
        chunks = await collect(
            await client.chat.completions.create(model="m", messages=[user("why")], stream=True)
        )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert reasoning == "thinking about: why"
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    last_reasoning = max(i for i, d in enumerate(deltas) if getattr(d, "reasoning_content", None))
    assert last_reasoning < first_content


async def test_thinking_mode_rejects_tool_call_history_without_reasoning() -> None:
    app = ScriptedChatApp(thinking=True)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        user("go"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        client = openai.AsyncOpenAI(
            base_url="http://upstream/v1", api_key="sk", http_client=http, max_retries=0
        )
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=messages)
        assert caught.value.message.endswith(THINKING_MISSING_MESSAGE.format(1))
        messages[1]["reasoning_content"] = "because"
        completion = await client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == "tool said: ok"


async def test_lifespan_is_acknowledged() -> None:
    app = ScriptedChatApp()
    sent: list[dict[str, Any]] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_each_stream_chunk_is_its_own_body_message() -> None:
    app = ScriptedChatApp()
    sent: list[dict[str, Any]] = []
    body = json.dumps({"model": "m", "messages": [user("a b c")], "stream": True}).encode()
    incoming = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> Any:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [],
        "root_path": "",
    }
    await app(scope, receive, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert all(m["more_body"] for m in bodies[:-1])
    assert bodies[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert all(m["body"].count(b"\n\n") == 1 for m in bodies[:-1])


# -- the pure bridge modules against the scripted upstream -----------------------------

CODEX_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}, "strict": False},
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "text"},
    },
    {"type": "tool_search", "execution": "client"},
    {"type": "web_search"},
]


async def bridge_turn(
    http: httpx.AsyncClient, body: dict[str, Any], **options: Any
) -> tuple[int, dict[str, Any]]:
    """One Responses turn done by hand with the bridge modules, as the core will do it."""
    chat_body = build_chat_request(body, unsupported_tools="drop", **options)
    reply = await http.post("/v1/chat/completions", json=chat_body)
    if reply.status_code != 200:
        return reply.status_code, json.loads(
            chat_error_to_response_error(reply.status_code, reply.content)
        )
    base = response_skeleton(
        body, response_id="resp_1", created_at=1, previous_response_id=None, store=False
    )
    if not body.get("stream"):
        return 200, chat_completion_to_response(reply.json(), base=base)
    translator = ChatStreamTranslator(base=base)
    out = translator.start()
    decoder = SSEDecoder()
    for frame in [*decoder.feed(reply.content), *decoder.flush()]:
        out += translator.feed(frame.data or b"")
    out += translator.finish()
    final = json.loads(SSEDecoder().feed(out)[-1].data or b"")
    return 200, final["response"]


@pytest.fixture
async def thinking_http() -> AsyncIterator[httpx.AsyncClient]:
    app = ScriptedChatApp(thinking=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as client:
        yield client


@pytest.mark.parametrize("stream", [True, False])
async def test_codex_style_stateless_replay_restores_reasoning_for_a_thinking_upstream(
    thinking_http: httpx.AsyncClient, stream: bool
) -> None:
    first_input = [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "SHELL: echo hi"}],
        }
    ]
    body = {
        "model": "m",
        "stream": stream,
        "store": False,
        "tools": CODEX_TOOLS,
        "input": first_input,
    }
    status, first = await bridge_turn(thinking_http, body)
    assert status == 200
    thought, call = first["output"]
    assert thought["type"] == "reasoning"
    assert call["name"] == "exec_command"
    assert json.loads(call["arguments"]) == {"cmd": "echo hi"}
    replayed = [{**thought, "content": None}, call]  # what Codex sends back
    tool_output = {"type": "function_call_output", "call_id": call["call_id"], "output": "hi\n"}
    second_body = {**body, "input": [*first_input, *replayed, tool_output]}
    status, second = await bridge_turn(thinking_http, second_body)
    assert status == 200
    assert second["output"][-1]["content"][0]["text"] == "tool said: hi\n"


async def test_dropped_reasoning_is_recovered_by_call_id(thinking_http: httpx.AsyncClient) -> None:
    first_input: list[dict[str, Any]] = [{"role": "user", "content": "CALL:exec_command"}]
    body = {"model": "m", "tools": CODEX_TOOLS, "input": first_input}
    _, first = await bridge_turn(thinking_http, body)
    call = first["output"][-1]
    tool_output = {"type": "function_call_output", "call_id": call["call_id"], "output": "done"}
    without_reasoning = {**body, "input": [*first_input, call, tool_output]}
    status, error = await bridge_turn(thinking_http, without_reasoning)
    assert status == 400
    assert error["error"]["message"] == THINKING_MISSING_MESSAGE.format(1)
    recovered = reasoning_by_call_id(first["output"])
    status, second = await bridge_turn(
        thinking_http, without_reasoning, recovered_reasoning=recovered
    )
    assert status == 200
    assert second["output"][-1]["content"][0]["text"] == "tool said: done"


@pytest.mark.parametrize("stream", [True, False])
async def test_patch_calls_round_trip_as_custom_tool_calls(
    http: httpx.AsyncClient, stream: bool
) -> None:
    first_input: list[dict[str, Any]] = [{"role": "user", "content": "PATCH:hello.txt"}]
    body = {"model": "m", "stream": stream, "tools": CODEX_TOOLS, "input": first_input}
    _, first = await bridge_turn(http, body)
    [call] = first["output"]
    assert call["type"] == "custom_tool_call"
    assert call["input"] == PATCH_TEMPLATE.format("hello.txt")
    tool_output = {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Done!"}
    status, second = await bridge_turn(http, {**body, "input": [*first_input, call, tool_output]})
    assert status == 200
    assert second["output"][0]["content"][0]["text"] == "tool said: Done!"


async def test_parallel_calls_through_the_bridge_stream(http: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]
    body = {"model": "m", "stream": True, "tools": tools, "input": "CALL:a,b"}
    _, response = await bridge_turn(http, body)
    assert [(i["type"], i["name"]) for i in response["output"]] == [
        ("function_call", "a"),
        ("function_call", "b"),
    ]
    assert response["usage"]["total_tokens"] > 0
