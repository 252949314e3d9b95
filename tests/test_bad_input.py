"""Bad input gets an OpenAI-shaped error before the app or the store sees it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware.testing import ScriptedResponsesApp

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer sk-test"}


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH
    )


def assert_error(answer: httpx.Response, status: int, param: str | None) -> None:
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == str(len(answer.content))
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1,2]", None),
        (b'"just a string"', None),
        (b'{"model":"m","input":5}', "input"),
        (b'{"model":"m","input":{"role":"user"}}', "input"),
        (b'{"model":"m","input":["hi"]}', "input[0]"),
        (b'{"model":"m","input":"x","store":"yes"}', "store"),
        (b'{"model":"m","input":"x","stream":1}', "stream"),
        (b'{"model":"m","input":"x","previous_response_id":7}', "previous_response_id"),
        (b'{"model":"m","input":"x","previous_response_id":"resp_a b"}', "previous_response_id"),
        (b'{"model":"m","input":"x","previous_response_id":""}', "previous_response_id"),
        (b'{"model":"m","input":"\xff"}', None),
    ],
)
async def test_malformed_requests_get_400_and_never_reach_the_app(
    memory_store: Store, body: bytes, param: str | None
) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=memory_store)
    async with client_for(app) as http:
        answer = await http.post("/v1/responses", content=body)
    assert_error(answer, 400, param)
    assert upstream.requests == []


async def test_oversized_bodies_get_413_whether_declared_or_streamed(memory_store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=memory_store, max_body_bytes=1000)
    body = b'{"model":"m","input":"' + b"x" * 2000 + b'"}'

    async def chunks() -> Any:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    async with client_for(app) as http:
        declared = await http.post("/v1/responses", content=body)
        undeclared = await http.post("/v1/responses", content=chunks())
        fits = await http.post("/v1/responses", json={"model": "m", "input": "ok"})
    assert_error(declared, 413, None)
    assert_error(undeclared, 413, None)
    assert fits.status_code == 200
    assert len(upstream.requests) == 1


async def test_rewritten_requests_carry_a_correct_content_length(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=store)
    async with client_for(app) as http:
        first = (await http.post("/v1/responses", json={"model": "m", "input": "a"})).json()
        second = await http.post(
            "/v1/responses",
            json={"model": "m", "input": "b", "previous_response_id": first["id"]},
        )
    assert second.status_code == 200
    assert second.headers["content-length"] == str(len(second.content))
    received = upstream.requests[-1]
    assert received.headers["content-length"] == str(len(received.raw_body))
    assert "transfer-encoding" not in received.headers


async def test_other_routes_and_methods_pass_through_untouched(memory_store: Store) -> None:
    seen: list[tuple[str, str, bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        if scope["type"] == "http":
            message = await receive()
            body = message.get("body", b"")
            seen.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"app:" + body})

    wrapped = ResponsesStateMiddleware(app, store=memory_store)
    async with client_for(wrapped) as http:
        for method, path in [
            ("GET", "/v1/responses"),
            ("PUT", "/v1/responses"),
            ("POST", "/v1/chat/completions"),
            ("PATCH", "/v1/responses/resp_1"),
            ("GET", "/v1/responses/resp_1/other"),
            ("POST", "/v2/responses"),
            ("POST", "/v1/responsesX"),
        ]:
            answer = await http.request(method, path, content=b"payload")
            assert answer.status_code == 299
            assert answer.content == b"app:payload"
    assert len(seen) == 7


async def test_non_http_scopes_reach_the_app_unchanged(memory_store: Store) -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append((scope, receive, send))

    wrapped = ResponsesStateMiddleware(app, store=memory_store)
    # (a WebSocket to {prefix}/responses is the middleware's own: WebSocket mode)
    for scope in ({"type": "lifespan"}, {"type": "websocket", "path": "/v1/realtime"}):

        async def receive() -> Any:
            return {"type": "lifespan.startup"}

        async def send(message: Any) -> None:
            raise AssertionError("not sent")

        await wrapped(scope, receive, send)  # type: ignore[arg-type]
        seen_scope, seen_receive, seen_send = got[-1]
        assert seen_scope is scope
        assert seen_send is send
        if scope["type"] == "websocket":
            assert seen_receive is receive
        else:  # lifespan: watched for the shutdown, every message passed on as it is
            assert await seen_receive() == {"type": "lifespan.startup"}


async def test_routes_match_below_a_root_path(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path="/api"),
        base_url="http://t",
        headers=AUTH,
    ) as http:
        made = await http.post("/api/v1/responses", json={"model": "m", "input": "a"})
        fetched = await http.get(f"/api/v1/responses/{made.json()['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["id"] == made.json()["id"]


def test_bad_configuration_is_refused() -> None:
    upstream = ScriptedResponsesApp()
    with pytest.raises(ValueError, match="prefix"):
        ResponsesStateMiddleware(upstream, prefix="v1/")
    with pytest.raises(ValueError, match="max_body_bytes"):
        ResponsesStateMiddleware(upstream, max_body_bytes=0)
