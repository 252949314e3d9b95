"""Tests of ``state_middleware.testing``: the scripted upstream and the streaming transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import openai
import pytest

from state_middleware.testing import ReceivedRequest, ScriptedResponsesApp, StreamingASGITransport
from state_middleware.testing._common import sse_frame
from state_middleware.testing._responses_app import PREVIOUS_RESPONSE_ID_MESSAGE

from ._sync import Gate, soon
from .conftest import text_events

pytestmark = pytest.mark.anyio

BASE_URL = "http://upstream.test/v1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def sdk_client(app: Any, root_path: str = "") -> AsyncIterator[openai.AsyncOpenAI]:
    http = httpx.AsyncClient(transport=StreamingASGITransport(app, root_path=root_path))
    async with openai.AsyncOpenAI(
        base_url=BASE_URL,
        api_key="sk-test",
        max_retries=0,
        http_client=http,  # type: ignore[arg-type]  # the SDK accepts a legacy httpx client
    ) as client:
        yield client


@asynccontextmanager
async def http_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url=BASE_URL
    ) as client:
        yield client


def parse_sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in data.decode().split("\n\n"):
        if frame:
            fields = dict(line.split(": ", 1) for line in frame.split("\n"))
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def call_asgi(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """Run ``app`` once with a raw scope; record every message it sends."""
    messages: list[Any] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client never leaves

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str = "/v1/responses", method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("upstream.test", 80),
    }


# --- the scripted upstream through the official SDK ----------------------------------


async def test_json_create_returns_a_full_response_object() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app) as client:
        response = await client.responses.create(
            model="gpt-test", input="hello there", instructions="be brief", metadata={"k": "v"}
        )
    assert response.id == "resp_upstream_1"
    assert response.status == "completed"
    assert response.output_text == "[1 items] hello there"
    assert response.model == "gpt-test"
    assert response.instructions == "be brief"
    assert response.metadata == {"k": "v"}
    assert response.previous_response_id is None
    assert response.usage is not None
    assert response.usage.input_tokens == len("hello there") // 4 + 1
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    raw = msgspec.json.decode(app.requests[0].raw_body)
    assert raw["input"] == "hello there"


async def test_json_response_has_every_contract_field_and_exact_content_length() -> None:
    app = ScriptedResponsesApp(model="default-model")
    async with http_client(app) as client:
        reply = await client.post("/responses", json={"input": "hi", "store": False})
    body = reply.json()
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert set(body) >= {
        "id", "object", "created_at", "status", "completed_at", "error", "incomplete_details",
        "instructions", "model", "output", "parallel_tool_calls", "previous_response_id",
        "reasoning", "store", "temperature", "text", "tool_choice", "tools", "top_p",
        "truncation", "usage", "user", "metadata", "background",
    }  # fmt: skip
    assert body["model"] == "default-model"
    assert body["store"] is False
    assert body["metadata"] == {}
    assert body["background"] is False
    [message] = body["output"]
    assert message["id"].startswith("msg_")
    assert message["content"] == [
        {"type": "output_text", "text": "[1 items] hi", "annotations": []}
    ]


async def test_reply_counts_every_input_item_and_quotes_the_last_user_message() -> None:
    app = ScriptedResponsesApp()
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]},
    ]
    async with sdk_client(app) as client:
        response = await client.responses.create(model="m", input=history)  # type: ignore[arg-type]
    assert response.output_text == "[3 items] second"


async def test_streaming_create_emits_the_full_event_sequence() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input="stream me", stream=True)
        events = [event async for event in stream]
    assert [event.type for event in events] == text_events(4)  # "[1 items] stream me"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type == "response.completed"
    assert deltas == final.response.output_text == "[1 items] stream me"
    assert events[0].type == "response.created"
    assert events[0].response.status == "in_progress"
    assert events[0].response.usage is None
    assert events[0].response.id == final.response.id == "resp_upstream_1"


async def test_stream_helper_builds_the_final_response() -> None:
    app = ScriptedResponsesApp()
    async with (
        sdk_client(app) as client,
        client.responses.stream(model="m", input="helper") as stream,
    ):
        final = await stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "[1 items] helper"


async def test_function_call_output_is_answered_with_what_the_tool_said() -> None:
    app = ScriptedResponsesApp()
    history = [
        {"role": "user", "content": "CALL:lookup"},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    ]
    async with sdk_client(app) as client:
        response = await client.responses.create(model="m", input=history)  # type: ignore[arg-type]
    assert response.output_text == "tool said: 42"


async def test_call_token_emits_parallel_function_calls_with_unique_ids() -> None:
    app = ScriptedResponsesApp()
    async with (
        sdk_client(app) as client,
        client.responses.stream(model="m", input="CALL:alpha,beta now") as stream,
    ):
        final = await stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["alpha", "beta"]
    assert all(json.loads(call.arguments) == {"input": "CALL:alpha,beta now"} for call in calls)
    assert all(call.id and call.id.startswith("fc_") for call in calls)
    assert all(call.call_id.startswith("call_") for call in calls)
    assert len({call.id for call in calls} | {call.call_id for call in calls}) == 4


async def test_shell_token_emits_the_exec_command_call_codex_runs() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app) as client:
        response = await client.responses.create(model="m", input="please SHELL: echo hi")
    (call,) = response.output
    assert call.type == "function_call"
    assert call.name == "exec_command"
    assert json.loads(call.arguments) == {"cmd": "echo hi"}


async def test_fail_token_becomes_an_http_error_before_any_stream_bytes() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.responses.create(model="m", input="FAIL:500", stream=True)
    assert caught.value.status_code == 500
    assert caught.value.body == {
        "message": "scripted failure",
        "type": "server_error",
        "param": None,
        "code": "scripted_failure",
    }


async def test_previous_response_id_is_refused_by_the_stateless_upstream() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="m", input="hi", previous_response_id="resp_x")
    assert caught.value.body == {
        "message": PREVIOUS_RESPONSE_ID_MESSAGE,
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "unsupported_parameter",
    }
    assert app.requests[0].body["previous_response_id"] == "resp_x"


async def test_request_log_records_method_path_headers_and_bodies() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app) as client:
        await client.responses.create(model="m", input="one")
        await client.responses.create(model="m", input="two", stream=True)
    first, second = app.requests
    assert isinstance(first, ReceivedRequest)
    assert (first.method, first.path) == ("POST", "/v1/responses")
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.headers["host"] == "upstream.test"
    assert first.body == {"model": "m", "input": "one"}
    assert second.body["stream"] is True
    assert msgspec.json.decode(second.raw_body) == second.body


async def test_response_ids_count_per_app_instance_so_they_repeat() -> None:
    ids = []
    for _ in range(2):
        async with sdk_client(ScriptedResponsesApp()) as client:
            ids.append((await client.responses.create(model="m", input="x")).id)
    assert ids == ["resp_upstream_1", "resp_upstream_1"]


async def test_incomplete_token_ends_the_stream_with_response_incomplete() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input="INCOMPLETE", stream=True)
        events = [event async for event in stream]
        response = await client.responses.create(model="m", input="INCOMPLETE")
    final = events[-1]
    assert final.type == "response.incomplete"
    assert final.response.status == response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


async def test_response_failed_token_streams_a_nested_error_then_response_failed() -> None:
    app = ScriptedResponsesApp()
    async with http_client(app) as client:
        reply = await client.post("/responses", json={"input": "RESPONSE_FAILED", "stream": True})
        json_reply = await client.post("/responses", json={"input": "RESPONSE_FAILED"})
    events = parse_sse(reply.content)
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert events[2][1] == {
        "type": "error",
        "sequence_number": 2,
        "error": {
            "type": "server_error",
            "code": "server_error",
            "message": "scripted failure",
            "param": None,
        },
    }
    failed = events[3][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "scripted failure"}
    assert json_reply.status_code == 200
    assert json_reply.json()["status"] == "failed"


async def test_cut_token_ends_the_body_without_a_terminal_event() -> None:
    app = ScriptedResponsesApp()
    async with http_client(app) as client:
        reply = await client.post("/responses", json={"input": "CUT:3", "stream": True})
        json_reply = await client.post("/responses", json={"input": "CUT:3"})
    assert [name for name, _ in parse_sse(reply.content)] == text_events(1)[:3]
    assert json_reply.status_code == 500


async def test_deltas_token_streams_exactly_that_many_deltas() -> None:
    app = ScriptedResponsesApp()
    async with http_client(app) as client:
        reply = await client.post("/responses", json={"input": "DELTAS:50", "stream": True})
    events = parse_sse(reply.content)
    deltas = [data["delta"] for name, data in events if name == "response.output_text.delta"]
    assert deltas == [f"w{i} " for i in range(50)]
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == "".join(deltas)


async def test_script_entries_override_magic_tokens_one_request_each() -> None:
    app = ScriptedResponsesApp()
    app.script.append({"text": "from the script"})
    app.script.append(lambda request: {"status": 429} if request.body["model"] == "m" else None)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="FAIL:500")
        with pytest.raises(openai.RateLimitError):
            await client.responses.create(model="m", input="hi")
        third = await client.responses.create(model="m", input="hi")
    assert first.output_text == "from the script"
    assert third.output_text == "[1 items] hi"
    assert not app.script


async def test_a_script_entry_with_an_unknown_key_raises_in_the_app() -> None:
    app = ScriptedResponsesApp()
    app.script.append({"no_such_key": 1})
    async with http_client(app) as client:
        with pytest.raises(msgspec.ValidationError, match="no_such_key"):
            await client.post("/responses", json={"input": "hi"})


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("GET", "/v1/responses", b"", 404, None),
        ("POST", "/v1/chat/completions", b"{}", 404, None),
        ("POST", "/v1/responses", b"{not json", 400, None),
        ("POST", "/v1/responses", b'{"model": "m"}', 400, "input"),
    ],
)
async def test_rejected_requests_get_an_openai_error_body_and_are_logged(
    method: str, path: str, body: bytes, status: int, param: str | None
) -> None:
    app = ScriptedResponsesApp()
    async with http_client(app) as client:
        reply = await client.request(method, f"http://upstream.test{path}", content=body)
    assert reply.status_code == status
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    assert reply.json()["error"]["param"] == param
    assert [(r.method, r.path, r.raw_body) for r in app.requests] == [(method, path, body)]


async def test_root_path_is_stripped_before_routing() -> None:
    app = ScriptedResponsesApp()
    async with sdk_client(app, root_path="/mount") as client:
        response = await client.responses.create(model="m", input="mounted")
    assert response.output_text == "[1 items] mounted"
    assert app.requests[0].path == "/mount/v1/responses"


# --- raw ASGI protocol ---------------------------------------------------------------


async def test_each_sse_event_is_its_own_body_message() -> None:
    app = ScriptedResponsesApp()
    sent = await call_asgi(app, http_scope(), b'{"input": "a b", "stream": true}')
    start, *bodies, last = sent
    assert start["status"] == 200
    assert dict(start["headers"]) == {
        b"content-type": b"text/event-stream",
        b"cache-control": b"no-cache",
    }
    assert last == {"type": "http.response.body", "body": b"", "more_body": False}
    assert all(message["more_body"] for message in bodies)
    assert [len(parse_sse(message["body"])) for message in bodies] == [1] * len(text_events(4))


async def test_lifespan_startup_and_shutdown_complete() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> Any:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope: Any = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await ScriptedResponsesApp()(scope, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_websocket_connections_are_closed() -> None:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope: Any = {**http_scope(), "type": "websocket", "subprotocols": []}
    await ScriptedResponsesApp()(scope, receive, send)
    assert [message["type"] for message in sent] == ["websocket.close"]


def test_sse_frame_has_an_event_line_and_compact_json_data() -> None:
    assert sse_frame("x.y", {"a": [1, 2]}) == b'event: x.y\ndata: {"a":[1,2]}\n\n'


# --- the streaming transport ---------------------------------------------------------


async def test_transport_hands_over_each_event_as_soon_as_it_is_sent() -> None:
    gate = Gate()
    app = ScriptedResponsesApp(sleep=gate)
    app.script.append({"text": "hi", "cut_after": 5})
    received = 0
    async with sdk_client(app) as client:
        stream = await soon(
            client.responses.create(model="m", input="x", stream=True),
            "the reply starting before any event is sent",
        )
        assert gate.passed == 0

        async def read_in_lock_step() -> None:
            nonlocal received
            gate.open()
            async for _ in stream:
                received += 1
                assert gate.passed == received  # the app waits for this one to arrive
                gate.open()

        await soon(read_in_lock_step(), "each event arriving before the next is sent")
    assert received == 5


async def test_the_delay_before_each_event_is_handed_to_the_sleep_given() -> None:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    app = ScriptedResponsesApp(delay=0.25, sleep=sleep)
    app.script.append({"text": "hi", "cut_after": 3})
    sent = await call_asgi(app, http_scope(), b'{"model":"m","input":"x","stream":true}')
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent).count(b"\n\n") == 3
    assert delays == [0.25, 0.25, 0.25]


async def test_closing_the_response_early_delivers_disconnect_to_the_app() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        seen.append(await receive())
        try:
            await send({"type": "http.response.body", "body": b"two", "more_body": True})
        except OSError as exc:
            seen.append(exc)

    async with (
        http_client(app) as client,
        client.stream("POST", "/anything", content=b"payload") as reply,
    ):
        async for chunk in reply.aiter_raw():
            assert chunk == b"one"
            break
    assert seen[0] == {"type": "http.request", "body": b"payload", "more_body": False}
    assert seen[1] == {"type": "http.disconnect"}
    assert isinstance(seen[2], OSError)


@pytest.mark.parametrize("paced_by", ["delay", "sleep given"])
async def test_scripted_app_stops_quietly_when_the_client_leaves_mid_stream(
    paced_by: str,
) -> None:
    outcome: list[str] = []
    gate = Gate()  # opened once: the first event, then never again
    gate.open()
    if paced_by == "delay":
        scripted = ScriptedResponsesApp(delay=0.2)
    else:
        scripted = ScriptedResponsesApp(sleep=gate)  # the disconnect cuts the sleep short

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await scripted(scope, receive, send)
        except BaseException as exc:
            outcome.append(type(exc).__name__)
            raise
        outcome.append("returned")

    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input="leave early", stream=True)
        async for event in stream:
            assert event.type == "response.created"
            break
        await soon(stream.close(), "the app returning while it waits for the next event")
    assert outcome == ["returned"]


async def test_app_errors_before_the_response_starts_are_raised_by_the_request() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("boom")

    async with http_client(app) as client:
        with pytest.raises(LookupError, match="boom"):
            await client.get("/")


async def test_app_errors_after_the_response_starts_are_raised_by_the_stream() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise LookupError("mid-stream")

    async with http_client(app) as client, client.stream("GET", "/") as reply:
        assert reply.status_code == 200
        with pytest.raises(LookupError, match="mid-stream"):
            await reply.aread()


async def test_transport_scope_looks_like_a_real_server() -> None:
    scopes: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    transport = StreamingASGITransport(app, root_path="/root")
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://example.test:8443/a%20b/c?x=1", headers={"X-Up": "Yes"})
    [scope] = scopes
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (scope["method"], scope["scheme"], scope["http_version"]) == ("GET", "https", "1.1")
    assert scope["path"] == "/root/a b/c"
    assert scope["raw_path"] == b"/root/a%20b/c"
    assert scope["query_string"] == b"x=1"
    assert scope["root_path"] == "/root"
    assert (b"x-up", b"Yes") in scope["headers"]
    assert (b"host", b"example.test:8443") in scope["headers"]
    assert scope["client"] == ("127.0.0.1", 123)
    assert scope["server"] == ("example.test", 8443)
