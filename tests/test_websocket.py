"""WebSocket mode on the wire: a plain ``websockets`` client against the middleware
served by uvicorn, in front of the scripted upstreams.

Each test holds the upstream with a :class:`~tests._sync.Gate` where timing matters and
reads frames in the order the protocol promises; nothing waits on the clock.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from state_middleware import ResponsesStateMiddleware
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp
from state_middleware.testing._common import read_body

from ._servers import serve
from ._sync import HANG_GUARD, Gate, soon
from ._ws import ROUTE, create, next_frame, read_turn, refusal, text_of, turn, ws_url

pytestmark = pytest.mark.anyio

#: keys whose values differ between two runs of the same turn
_VOLATILE = {"id", "item_id", "response_id", "call_id", "created_at", "completed_at"}


# -- helpers ----------------------------------------------------------------------------


def upstream_for(mode: str) -> Any:
    return ScriptedChatApp() if mode == "chat" else ScriptedResponsesApp()


@contextmanager
def served(upstream: Any, mode: Any = "responses", **options: Any) -> Iterator[str]:
    """The middleware in front of ``upstream``, under uvicorn; yields the base URL."""
    with serve(ResponsesStateMiddleware(upstream, upstream_api=mode, **options)) as base:
        yield base


def normalised(value: Any) -> Any:
    """``value`` with ids and timestamps blanked, so two runs of one turn compare."""
    if isinstance(value, dict):
        return {k: "*" if k in _VOLATILE else normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


class ByModel:
    """Routes each request to the app named by its body's ``model``."""

    def __init__(self, **apps: Any) -> None:
        self.apps = apps

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.apps[json.loads(body)["model"]](scope, replay, send)


class Watched:
    """Wraps an app; says (across threads) when its ``receive`` returned
    ``http.disconnect`` and when the app returned."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.saw_disconnect = threading.Event()
        self.returned = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def watched_receive() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.saw_disconnect.set()
            return message

        try:
            await self.app(scope, watched_receive, send)
        finally:
            self.returned.set()


@pytest.fixture(params=["responses", "chat"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


# -- frames -----------------------------------------------------------------------------


async def test_events_are_the_sse_data_payloads_one_text_frame_each(mode: str) -> None:
    with served(upstream_for(mode), mode) as base:
        async with connect(ws_url(base)) as ws:
            first = await turn(ws, input="hello")
            second = await turn(ws, input="again")
        async with httpx.AsyncClient(base_url=base) as http:
            reply = await http.post(ROUTE, json={"model": "m", "input": "hello", "stream": True})
    over_http = [json.loads(p) for p in sse_payloads(reply.text) if p != "[DONE]"]

    assert normalised(first) == normalised(over_http)
    assert first[-1]["type"] == "response.completed"
    for frames in (first, second):  # numbered from 0 for each response
        assert [frame["sequence_number"] for frame in frames] == list(range(len(frames)))
    assert len({frame["response"]["id"] for frame in first if "response" in frame}) == 1


async def test_turns_on_one_connection_run_in_arrival_order() -> None:
    gate = Gate()
    upstream = ScriptedResponsesApp(sleep=gate)
    with served(upstream) as base:
        async with connect(ws_url(base)) as ws:
            await ws.send(create(input="first"))
            await ws.send(create(input="second"))
            await ws.send("not json")  # answered at once, so: the second was read
            gate.open()  # the first turn's response.created
            seen = sorted([(await next_frame(ws))["type"] for _ in range(2)])
            assert seen == ["error", "response.created"]
            assert len(upstream.requests) == 1  # the second waits for the first

            gate.open(1000)
            rest_of_first = await read_turn(ws)
            second = await read_turn(ws)

    assert rest_of_first[-1]["type"] == "response.completed"
    assert text_of(rest_of_first[-1]["response"]) == "[1 items] first"
    assert second[0]["type"] == "response.created"
    assert text_of(second[-1]["response"]) == "[1 items] second"


async def test_named_lanes_run_side_by_side_each_event_carrying_its_stream_id() -> None:
    gate = Gate()
    held, free = ScriptedResponsesApp(sleep=gate), ScriptedResponsesApp()
    with served(ByModel(held=held, free=free)) as base:
        async with connect(ws_url(base)) as ws:
            await ws.send(create(model="held", input="slow", stream_id="lane-a"))
            gate.open()
            started = await next_frame(ws)
            assert (started["type"], started["stream_id"]) == ("response.created", "lane-a")

            # while lane-a is held mid-stream:
            lane_b = await turn(ws, model="free", input="quick", stream_id="lane.b")
            lane_b_error = refusal(
                await turn(ws, input="x", stream_id="lane.b", previous_response_id="resp_no")
            )

            gate.open(1000)
            lane_a = [started, *await read_turn(ws)]

    assert lane_b[-1]["type"] == "response.completed"
    assert text_of(lane_b[-1]["response"]) == "[1 items] quick"
    assert {frame["stream_id"] for frame in lane_b} == {"lane.b"}
    assert lane_b_error["stream_id"] == "lane.b"
    assert lane_b_error["error"]["code"] == "previous_response_not_found"
    assert text_of(lane_a[-1]["response"]) == "[1 items] slow"
    assert {frame["stream_id"] for frame in lane_a} == {"lane-a"}


async def test_the_app_gets_an_ordinary_post_with_an_exact_content_length() -> None:
    upstream = ScriptedResponsesApp()
    credentials = {"Authorization": "Bearer A", "OpenAI-Beta": "responses_websockets=2026-02-06"}
    with served(upstream) as base:
        async with connect(ws_url(base), additional_headers=credentials) as ws:
            first = await turn(ws, input="hello", store=False)
            await turn(
                ws, input="again", store=False, previous_response_id=first[-1]["response"]["id"]
            )

    for request in upstream.requests:  # a new chain's turn, and one with its history
        assert (request.method, request.path) == ("POST", ROUTE)
        assert request.headers["content-length"] == str(len(request.raw_body))
        assert request.headers["content-type"] == "application/json"
        assert request.headers["authorization"] == "Bearer A"
        assert request.headers["openai-beta"] == "responses_websockets=2026-02-06"
        assert not {"upgrade", "sec-websocket-key", "sec-websocket-version"} & set(request.headers)
        assert request.body["stream"] is True


# -- connection-local state -------------------------------------------------------------


async def test_a_store_false_response_continues_on_its_connection_only(mode: str) -> None:
    upstream = upstream_for(mode)
    with served(upstream, mode) as base:
        async with connect(ws_url(base)) as ws:
            first = await turn(ws, input="hello", store=False)
            first_id = first[-1]["response"]["id"]
            second = await turn(ws, input="again", store=False, previous_response_id=first_id)
        called = len(upstream.requests)
        async with connect(ws_url(base)) as other:
            elsewhere = refusal(
                await turn(other, input="more", store=False, previous_response_id=first_id)
            )
        async with httpx.AsyncClient(base_url=base) as http:
            retrieved = await http.get(f"{ROUTE}/{first_id}")

    assert second[-1]["type"] == "response.completed"
    assert second[-1]["response"]["previous_response_id"] == first_id
    assert text_of(second[-1]["response"]).endswith("] again")
    assert text_of(second[-1]["response"]).startswith("[3 ")  # hello, its answer, again
    assert elsewhere["status"] == 400
    assert elsewhere["error"]["code"] == "previous_response_not_found"
    assert elsewhere["error"]["param"] == "previous_response_id"
    assert len(upstream.requests) == called  # the app was not called
    assert retrieved.status_code == 404  # never stored


async def test_a_stored_turn_on_a_connection_local_one_continues_anywhere(mode: str) -> None:
    upstream = upstream_for(mode)
    with served(upstream, mode) as base:
        async with connect(ws_url(base)) as ws:
            local_id = (await turn(ws, input="hello", store=False))[-1]["response"]["id"]
            kept = (await turn(ws, input="kept", store=True, previous_response_id=local_id))[-1][
                "response"
            ]
        async with connect(ws_url(base)) as other:
            later = await turn(other, input="later", previous_response_id=kept["id"])
        async with httpx.AsyncClient(base_url=base) as http:
            retrieved = await http.get(f"{ROUTE}/{kept['id']}")
            over_http = await http.post(
                ROUTE, json={"model": "m", "input": "more", "previous_response_id": kept["id"]}
            )

    assert retrieved.json()["previous_response_id"] == local_id  # as the client asked
    assert text_of(later[-1]["response"]).startswith("[5 ")  # hello, answer, kept, answer, later
    assert over_http.status_code == 200
    assert over_http.json()["previous_response_id"] == kept["id"]
    assert text_of(over_http.json()).startswith("[5 ")


async def test_a_continuation_that_fails_evicts_its_base(mode: str) -> None:
    upstream = upstream_for(mode)
    with served(upstream, mode) as base:
        async with connect(ws_url(base)) as ws:
            base_id = (await turn(ws, input="hello", store=False))[-1]["response"]["id"]
            failed = refusal(
                await turn(ws, input="FAIL:500", store=False, previous_response_id=base_id)
            )
            called = len(upstream.requests)
            again = refusal(
                await turn(ws, input="again", store=False, previous_response_id=base_id)
            )

    assert failed["status"] == 500
    assert again["status"] == 400
    assert again["error"]["code"] == "previous_response_not_found"
    assert len(upstream.requests) == called


async def test_a_warm_up_calls_no_app_and_its_id_can_be_continued() -> None:
    upstream = ScriptedResponsesApp()
    developer = {"role": "developer", "content": "You are terse."}
    with served(upstream) as base:
        async with connect(ws_url(base)) as ws:
            warm_up = await turn(ws, input=[developer], store=False, generate=False)
            assert upstream.requests == []
            warm_id = warm_up[-1]["response"]["id"]
            continued = await turn(ws, input="hi", store=False, previous_response_id=warm_id)

    assert [frame["type"] for frame in warm_up] == ["response.created", "response.completed"]
    assert warm_up[-1]["response"]["output"] == []
    assert continued[-1]["type"] == "response.completed"
    (request,) = upstream.requests
    assert request.body["input"][0] == developer
    assert request.body["input"][-1]["content"] == "hi"
    assert "previous_response_id" not in request.body


async def test_background_is_refused_with_an_error_frame() -> None:
    upstream = ScriptedResponsesApp()
    with served(upstream) as base:
        async with connect(ws_url(base)) as ws:
            refused = refusal(await turn(ws, input="hi", background=True))

    assert refused["status"] == 400
    assert refused["error"]["param"] == "background"
    assert refused["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


# -- errors -----------------------------------------------------------------------------

#: bad frames a POST body can also be: (frame, the same body over HTTP)
_AS_OVER_HTTP: list[tuple[str, bytes]] = [
    ("not json", b"not json"),
    ("[1, 2]", b"[1, 2]"),
    (create(input="x", store="yes"), b'{"model": "m", "input": "x", "store": "yes"}'),
    (create(input=5), b'{"model": "m", "input": 5}'),
    (create(input=["x"]), b'{"model": "m", "input": ["x"]}'),
    (
        create(input="x", previous_response_id=7),
        b'{"model":"m","input":"x","previous_response_id":7}',
    ),
    (
        create(input="x", previous_response_id="r/1"),
        b'{"model":"m","input":"x","previous_response_id":"r/1"}',
    ),
]
#: bad frames only a WebSocket has: (frame, param, code)
_WEBSOCKET_ONLY: list[tuple[str, str, str]] = [
    (json.dumps({"model": "m", "input": "x"}), "type", "invalid_value"),
    (json.dumps({"type": "response.steer", "input": "x"}), "type", "invalid_value"),
    (create(input="x", stream_id="bad id"), "stream_id", "invalid_stream_id"),
    (create(input="x", stream_id=7), "stream_id", "invalid_stream_id"),
    (create(input="x", generate="no"), "generate", "invalid_type"),
]


async def test_bad_frames_get_the_errors_http_gives_and_the_connection_stays_usable() -> None:
    upstream = ScriptedResponsesApp()
    with served(upstream) as base:
        async with connect(ws_url(base)) as ws, httpx.AsyncClient(base_url=base) as http:
            for frame, body in _AS_OVER_HTTP:
                await ws.send(frame)
                refused = refusal(await read_turn(ws))
                reply = await http.post(
                    ROUTE, content=body, headers={"content-type": "application/json"}
                )
                assert (refused["status"], refused["error"]) == (
                    reply.status_code,
                    reply.json()["error"],
                ), frame
                assert "stream_id" not in refused
            for frame, param, code in _WEBSOCKET_ONLY:
                await ws.send(frame)
                refused = refusal(await read_turn(ws))
                assert refused["status"] == 400, frame
                assert (refused["error"]["param"], refused["error"]["code"]) == (param, code)
            assert upstream.requests == []

            good = await turn(ws, input="still here")

    assert good[-1]["type"] == "response.completed"
    assert text_of(good[-1]["response"]) == "[1 items] still here"


async def test_an_upstream_failure_mid_turn_is_error_then_failed_and_nothing_is_stored(
    mode: str,
) -> None:
    token = "MIDERROR" if mode == "chat" else "RESPONSE_FAILED"
    with served(upstream_for(mode), mode) as base:
        async with connect(ws_url(base)) as ws:
            frames = await turn(ws, input=f"hello {token}")
        response_id = frames[0]["response"]["id"]
        async with httpx.AsyncClient(base_url=base) as http:
            retrieved = await http.get(f"{ROUTE}/{response_id}")

    kinds = [frame["type"] for frame in frames]
    assert kinds[0] == "response.created"
    assert kinds[-2:] == ["error", "response.failed"]
    assert retrieved.status_code == 404


async def test_the_client_closing_mid_turn_stops_the_apps_request() -> None:
    gate = Gate()
    app = Watched(ScriptedResponsesApp(sleep=gate))
    with served(app) as base:
        async with connect(ws_url(base)) as ws:
            await ws.send(create(input="hello"))
            gate.open()
            started = await next_frame(ws)
        # closed, with the app held before its second event
        stopped = await asyncio.to_thread(app.returned.wait, HANG_GUARD)
        async with httpx.AsyncClient(base_url=base) as http:
            retrieved = await http.get(f"{ROUTE}/{started['response']['id']}")

    assert stopped, "the app's request never ended"
    assert app.saw_disconnect.is_set()
    assert gate.passed == 1  # the app stopped on the disconnect, not on the gate
    assert retrieved.status_code == 404


async def test_responses_belong_to_the_credentials_of_the_handshake() -> None:
    with served(ScriptedResponsesApp()) as base:
        async with connect(ws_url(base), additional_headers={"Authorization": "Bearer A"}) as ws:
            stored_id = (await turn(ws, input="hello"))[-1]["response"]["id"]
        async with connect(ws_url(base), additional_headers={"Authorization": "Bearer B"}) as ws:
            as_b = refusal(await turn(ws, input="mine?", previous_response_id=stored_id))
        async with httpx.AsyncClient(base_url=base) as http:
            with_a = await http.get(f"{ROUTE}/{stored_id}", headers={"Authorization": "Bearer A"})
            with_b = await http.get(f"{ROUTE}/{stored_id}", headers={"Authorization": "Bearer B"})

    assert with_a.status_code == 200
    assert with_a.json()["id"] == stored_id
    assert with_b.status_code == 404
    assert as_b["error"]["code"] == "previous_response_not_found"


async def test_a_websocket_the_app_serves_elsewhere_is_untouched() -> None:
    responses = ScriptedResponsesApp()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await responses(scope, receive, send)
            return
        assert scope["path"] == "/v1/realtime"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept", "subprotocol": scope["subprotocols"][0]})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})

    with served(app) as base:
        async with connect(
            ws_url(base, "/v1/realtime"), subprotocols=[Subprotocol("realtime")]
        ) as ws:
            await ws.send("ping")
            echoed = await soon(ws.recv(), "the echo")
            subprotocol = ws.subprotocol

    assert (echoed, subprotocol) == ("echo: ping", "realtime")


# -- mode off ---------------------------------------------------------------------------


#: uvicorn's WebSocket implementations (each advertises ``websocket.http.response``;
#: ``wsproto``, not installed here, does too)
_UVICORN_WS = [
    "websockets-sansio",  # uvicorn's "auto" with websockets installed
    pytest.param(
        "websockets",
        marks=pytest.mark.filterwarnings("ignore::uvicorn.config.UvicornDeprecationWarning"),
    ),
]


@pytest.mark.parametrize("ws_impl", _UVICORN_WS)
async def test_with_the_mode_off_the_handshake_is_refused_with_426(ws_impl: str) -> None:
    upstream = ScriptedResponsesApp()
    middleware = ResponsesStateMiddleware(upstream, websocket=False)
    with serve(middleware, ws=ws_impl) as base, pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(base)):
            pass  # pragma: no cover - the handshake fails

    response = refused.value.response
    assert response.status_code == 426
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body)["error"]["message"].startswith("WebSocket mode is off")
    assert upstream.requests == []


async def test_a_server_without_denial_responses_closes_the_handshake_a_403() -> None:
    middleware = ResponsesStateMiddleware(ScriptedResponsesApp(), websocket=False)

    async def without_denial_responses(scope: Any, receive: Any, send: Any) -> None:
        without: Any = {**scope, "extensions": {}}
        await middleware(without, receive, send)

    with serve(without_denial_responses) as base, pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(base)):
            pass  # pragma: no cover - the handshake fails

    assert refused.value.response.status_code == 403
