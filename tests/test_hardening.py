"""Defects found by trying the package against real servers: spellings of JSON that must
still splice, ids on failed streams, and streams nobody asked for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import openai
import pytest

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware._tee import STREAM_CUT_MESSAGE, STREAM_TOO_LARGE_MESSAGE
from state_middleware.testing import (
    ScriptedChatApp,
    ScriptedResponsesApp,
    StreamingASGITransport,
)
from state_middleware.testing._responses_app import SCRIPTED_FAILURE_MESSAGE

from .conftest import sdk_client

pytestmark = pytest.mark.anyio


class CannedApp:
    """A Responses upstream answering each request with the next canned reply, bytes
    exactly as given (one body message per chunk); it keeps every request body."""

    def __init__(self, replies: Sequence[tuple[bytes, Sequence[bytes]]]) -> None:
        self.replies = list(replies)
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        content_type, chunks = self.replies.pop(0)
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def json_reply(output: bytes) -> tuple[bytes, list[bytes]]:
    body = (
        b'{"id": "resp_up", "object": "response", "created_at": 1, "status": "completed",'
        b' "model": "m", "output": ' + output + b"}"
    )
    return b"application/json", [body]


ASSISTANT = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "caf\u00e9 \u2603", "annotations": []}],
}

#: ways JSON allows an upstream to spell the same output array
OUTPUT_SPELLINGS = {
    "empty with a space": (b"[ ]", []),
    "empty with a tab": (b"[\t]", []),
    "empty with CRLF": (b"[\r\n]", []),
    "pretty with tabs and CRLF": (
        json.dumps([ASSISTANT], indent="\t").replace("\n", "\r\n").encode(),
        [ASSISTANT],
    ),
    "escaped unicode and spaces": (
        b" [ " + json.dumps(ASSISTANT, ensure_ascii=True).encode() + b" ] ",
        [ASSISTANT],
    ),
}


@pytest.mark.parametrize("spelling", list(OUTPUT_SPELLINGS))
async def test_any_spelling_of_the_upstream_output_splices_into_valid_json(
    store: Store, spelling: str
) -> None:
    raw, items = OUTPUT_SPELLINGS[spelling]
    upstream = CannedApp([json_reply(raw), json_reply(b"[]"), json_reply(b"[]")])
    app = ResponsesStateMiddleware(upstream, store=store)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://t"
    ) as http:
        first = (await http.post("/v1/responses", json={"model": "m", "input": "hi"})).json()
        second = await http.post(
            "/v1/responses",
            json={"model": "m", "input": "again", "previous_response_id": first["id"]},
        )
        assert second.status_code == 200
        third = await http.post(
            "/v1/responses",
            json={"model": "m", "input": "more", "previous_response_id": second.json()["id"]},
        )
        assert third.status_code == 200
        stored = (await http.get(f"/v1/responses/{first['id']}")).json()
    user = [{"role": "user", "content": "hi"}]
    # json.loads raises on a body that is not valid JSON: the splice must be exact.
    assert json.loads(upstream.bodies[1])["input"] == [
        *user,
        *items,
        {"role": "user", "content": "again"},
    ]
    assert json.loads(upstream.bodies[2])["input"] == [
        *user,
        *items,
        {"role": "user", "content": "again"},
        {"role": "user", "content": "more"},
    ]
    assert stored["output"] == items


@pytest.mark.parametrize(
    "spelling", [b"[ ]", b"[\t\r\n]", b' [ { "role" : "user" , "content" : "x" } ] ']
)
async def test_any_spelling_of_the_client_input_splices_into_valid_json(
    store: Store, spelling: bytes
) -> None:
    upstream = CannedApp([json_reply(b"[]"), json_reply(b"[]")])
    app = ResponsesStateMiddleware(upstream, store=store)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://t"
    ) as http:
        raw = b'{"model": "m", "input": ' + spelling + b"}"
        first = await http.post(
            "/v1/responses", content=raw, headers={"content-type": "application/json"}
        )
        assert first.status_code == 200
        second = await http.post(
            "/v1/responses",
            json={"model": "m", "input": "next", "previous_response_id": first.json()["id"]},
        )
        assert second.status_code == 200
    assert json.loads(upstream.bodies[1])["input"] == [
        *json.loads(spelling),
        {"role": "user", "content": "next"},
    ]


def sse(event: dict[str, Any]) -> bytes:
    """A frame whose data spans several ``data:`` lines (pretty-printed JSON)."""
    data = json.dumps(event, indent=1).replace("\n", "\ndata: ")
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


async def stream_payloads(app: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every event of a streamed turn, read as raw SSE (the SDK raises on ``error``)."""
    payloads = []
    async with (
        httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://t") as http,
        http.stream("POST", "/v1/responses", json={**body, "stream": True}) as reply,
    ):
        async for line in reply.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                payloads.append(json.loads(line[6:]))
    return payloads


async def test_a_terminal_event_with_an_empty_output_keeps_the_finished_items(
    store: Store,
) -> None:
    response = {"id": "resp_up", "object": "response", "created_at": 1, "status": "completed"}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {**response, "output": []}},
        {
            "type": "response.output_item.done",
            "sequence_number": 1,
            "output_index": 0,
            "item": ASSISTANT,
        },
    ]
    chunks = [sse(event) for event in events]
    chunks.append(
        b'event: response.completed\ndata: {"type": "response.completed", "sequence_number": 2,'
        b' "response": {"id": "resp_up", "object": "response", "created_at": 1,'
        b' "status": "completed", "output": [ \t ]}}\n\n'
    )
    upstream = CannedApp([(b"text/event-stream", chunks), json_reply(b"[]")])
    app = ResponsesStateMiddleware(upstream, store=store)
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        ids = [event.response.id async for event in stream if hasattr(event, "response")]
        await client.responses.create(model="m", input="next", previous_response_id=ids[-1])
    assert json.loads(upstream.bodies[1])["input"][1] == ASSISTANT


# -- a failed stream carries our id everywhere -------------------------------------------


def response_ids(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["response"]["id"] for p in payloads if isinstance(p.get("response"), dict)]


async def test_a_failed_stream_carries_our_id_on_every_response_object(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    upstream.script.append({"failed": True})
    app = ResponsesStateMiddleware(upstream, store=store)
    payloads = await stream_payloads(app, {"model": "m", "input": "hi"})
    assert [p["type"] for p in payloads][-2:] == ["error", "response.failed"]
    ids = response_ids(payloads)
    assert len(ids) == 3  # created, in_progress, failed
    assert len(set(ids)) == 1
    assert ids[0].startswith("resp_")
    assert not ids[0].startswith("resp_upstream_")
    async with sdk_client(app) as client:
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(ids[0])


async def test_a_failed_bridge_stream_carries_our_id_on_every_response_object(
    store: Store,
) -> None:
    app = ResponsesStateMiddleware(ScriptedChatApp(), store=store, upstream_api="chat")
    payloads = await stream_payloads(app, {"model": "m", "input": "say MIDERROR"})
    assert payloads[-1]["type"] == "response.failed"
    ids = response_ids(payloads)
    assert len(ids) == 3
    assert len(set(ids)) == 1


# -- a stream nobody asked for ------------------------------------------------------------


async def test_a_stream_the_client_did_not_ask_for_is_answered_as_one_response(
    store: Store,
) -> None:
    unasked = ResponsesStateMiddleware(ScriptedResponsesApp(answer_as="stream"), store=store)
    asked = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    async with sdk_client(unasked) as client, sdk_client(asked) as plain:
        first = await client.responses.create(model="m", input="hello DELTAS:5")
        same = await plain.responses.create(model="m", input="hello DELTAS:5")
        second = await client.responses.create(
            model="m", input="and then", previous_response_id=first.id
        )
        stored = await client.responses.retrieve(first.id)
    assert first.status == "completed"
    assert first.output_text == same.output_text == "w0 w1 w2 w3 w4 "
    assert second.output_text == "[3 items] and then"
    assert stored.model_dump() == first.model_dump()
    ignore = {"id", "created_at", "completed_at"}  # two turns: maybe seconds apart

    def strip(value: Any) -> Any:
        dumped = {k: v for k, v in value.model_dump().items() if k not in ignore}
        for item in dumped["output"]:
            item.pop("id", None)
        return dumped

    assert strip(first) == strip(same)


async def test_an_unasked_stream_that_fails_is_a_502_with_the_upstream_message(
    store: Store,
) -> None:
    upstream = ScriptedResponsesApp(answer_as="stream")
    upstream.script.append({"failed": True})
    app = ResponsesStateMiddleware(upstream, store=store)
    async with sdk_client(app) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model="m", input="hi")
    assert caught.value.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["message"] == SCRIPTED_FAILURE_MESSAGE
    assert set(error) == {"message", "type", "param", "code"}


async def test_an_unasked_stream_that_is_cut_is_a_502_and_nothing_is_stored(
    memory_store: Store,
) -> None:
    upstream = ScriptedResponsesApp(answer_as="stream")
    upstream.script.append({"cut_after": 4})
    app = ResponsesStateMiddleware(upstream, store=memory_store)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://t"
    ) as http:
        reply = await http.post("/v1/responses", json={"model": "m", "input": "hi"})
    assert reply.status_code == 502
    assert reply.json()["error"]["message"] == STREAM_CUT_MESSAGE


async def test_an_unasked_stream_past_the_body_limit_is_a_502(memory_store: Store) -> None:
    upstream = ScriptedResponsesApp(answer_as="stream")
    app = ResponsesStateMiddleware(upstream, store=memory_store, max_body_bytes=2000)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://t"
    ) as http:
        reply = await http.post("/v1/responses", json={"model": "m", "input": "hi DELTAS:200"})
    assert reply.status_code == 502
    assert reply.json()["error"]["message"] == STREAM_TOO_LARGE_MESSAGE


async def test_an_unasked_stream_with_store_false_is_one_response_too(store: Store) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(answer_as="stream"), store=store)
    async with sdk_client(app) as client:
        reply = await client.responses.create(model="m", input="hi DELTAS:3", store=False)
        assert reply.output_text == "w0 w1 w2 "
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(reply.id)
