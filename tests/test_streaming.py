"""Streams: forwarded as they arrive, stored before the terminal event, and only then."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import openai
import pytest

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware.testing import ScriptedResponsesApp

from ._servers import serve
from ._sync import HANG_GUARD, Gate, soon
from .conftest import sdk_client

pytestmark = pytest.mark.anyio


async def test_events_reach_the_client_while_the_app_is_still_streaming(store: Store) -> None:
    gate = Gate()
    app = ResponsesStateMiddleware(ScriptedResponsesApp(sleep=gate), store=store)
    received: list[Any] = []
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="one two three four five six seven eight", stream=True
        )

        async def read_in_lock_step() -> None:
            gate.open()  # the first event
            async for event in stream:
                received.append(event)
                # The app sends the next event only when the client holds this one:
                # had the middleware collected anything first, this would never end.
                assert gate.passed == len(received)
                gate.open()

        await soon(read_in_lock_step(), "each event reaching the client before the next")
    assert len(received) > 10
    assert received[-1].type == "response.completed"


async def test_stream_text_and_stored_response_agree(store: Store) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    async with sdk_client(app) as client:
        async with client.responses.stream(model="m", input="alpha beta gamma") as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
        stored = await client.responses.retrieve(final.id)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == final.output_text == stored.output_text
    assert stored.output_text == "[1 items] alpha beta gamma"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert stored.id == completed.response.id
    assert stored.usage == completed.response.usage
    assert [o.id for o in stored.output] == [o.id for o in completed.response.output]


@pytest.mark.parametrize(
    ("text", "raises"),
    [
        ("CUT:4 please", False),
        ("RESPONSE_FAILED now", True),  # `error` then `response.failed`; the SDK raises
    ],
)
async def test_streams_without_a_successful_end_are_not_stored(
    store: Store, text: str, raises: bool
) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    seen: list[Any] = []
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input=text, stream=True)
        raised = False
        try:
            async for event in stream:
                seen.append(event)
        except openai.APIError:
            raised = True
        turn_id = seen[0].response.id
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="m", input="next", previous_response_id=turn_id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(turn_id)
    assert raised is raises
    assert all(e.type not in ("response.completed", "response.incomplete") for e in seen)


async def test_upstream_errors_reach_the_client_byte_for_byte_and_store_nothing(
    memory_store: Store,
) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=memory_store)
    body = b'{"model":"m","input":"FAIL:503","stream":true}'
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream), base_url="http://t") as bare,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as wrapped,
    ):
        direct = await bare.post("/v1/responses", content=body)
        through = await wrapped.post("/v1/responses", content=body)
    assert through.status_code == direct.status_code == 503
    assert through.content == direct.content
    assert through.headers["content-length"] == str(len(through.content))


async def test_a_client_that_disconnects_before_the_end_leaves_nothing_stored(
    store: Store,
) -> None:
    gate = Gate()  # lets out the first event only
    gate.open()
    upstream = ScriptedResponsesApp(sleep=gate)
    finished = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await middleware(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope["method"] == "POST":
                finished.set()

    middleware = ResponsesStateMiddleware(upstream, store=store)
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="a b c d e f g h i j k l", stream=True
        )
        first = None
        async for event in stream:
            first = event
            break
        await stream.close()
        assert first is not None
        turn_id = first.response.id
        await soon(finished.wait(), "the middleware ending the turn the client left")
        gate.open(100)  # were the app still running, it would now run to its end
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(turn_id)


def watch_waits(store: Store) -> asyncio.Queue[tuple[str, float]]:
    """Report each ``store.wait`` as it starts: (response id, timeout)."""
    waits: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    wait = store.wait

    async def reported_wait(owner: str, response_id: str, timeout: float) -> bool:
        waits.put_nowait((response_id, timeout))
        return await wait(owner, response_id, timeout)

    store.wait = reported_wait  # type: ignore[method-assign]
    return waits


async def test_a_follow_up_naming_a_running_stream_waits_for_it(store: Store) -> None:
    gate = Gate()  # holds the stream after its first event
    gate.open()
    upstream = ScriptedResponsesApp(sleep=gate)
    waits = watch_waits(store)
    app = ResponsesStateMiddleware(upstream, store=store, pending_timeout=3600)
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="slow one two three four", stream=True
        )
        created = await stream.__anext__()
        follow_up = asyncio.ensure_future(
            client.responses.create(
                model="m", input="next", previous_response_id=created.response.id
            )
        )
        waited_for, _ = await soon(waits.get(), "the follow-up waiting for the turn")
        assert waited_for == created.response.id
        assert not follow_up.done()
        gate.open(100)  # the rest of the stream
        async for _ in stream:
            pass
        result = await soon(follow_up, "the follow-up going on after the turn ended")
    assert result.output_text == "[3 items] next"


async def test_a_follow_up_gives_up_waiting_after_the_pending_timeout(store: Store) -> None:
    gate = Gate()  # holds the stream after its first event, for good
    gate.open()
    upstream = ScriptedResponsesApp(sleep=gate)
    waits = watch_waits(store)
    app = ResponsesStateMiddleware(upstream, store=store, pending_timeout=0.2)
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input="a b c d e f", stream=True)
        created = await stream.__anext__()
        with pytest.raises(openai.BadRequestError):
            await soon(
                client.responses.create(
                    model="m", input="next", previous_response_id=created.response.id
                ),
                "the follow-up giving up on a turn that never ends",
            )
        await stream.close()
    assert waits.get_nowait() == (created.response.id, 0.2)  # it waited, that long


def test_next_turn_sent_the_moment_the_terminal_event_arrives_finds_the_turn(
    store_kind: str, make_store: Any
) -> None:
    """Over a real socket: the follow-up goes out from inside the event loop that is
    reading the stream, as soon as `response.completed` is parsed, while the server may
    still be finishing the response. It must always find the stored turn."""
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=make_store())
    with (
        serve(app) as base,
        openai.OpenAI(base_url=f"{base}/v1", api_key="sk-race", max_retries=0) as client,
    ):
        previous = None
        for turn in range(25):
            kwargs: dict[str, Any] = {"previous_response_id": previous} if previous else {}
            stream = client.responses.create(model="m", input=f"turn {turn}", stream=True, **kwargs)
            for event in stream:
                if event.type == "response.completed":
                    previous = event.response.id
                    # Fire the follow-up now, before the stream is even closed.
                    check = client.responses.retrieve(previous)
                    assert check.id == previous
                    break
            stream.close()
        last = client.responses.create(model="m", input="end", previous_response_id=previous)
    assert last.output_text == "[51 items] end"


def test_streamed_chunks_leave_uvicorn_as_the_app_sends_them(store: Store) -> None:
    gate = Gate()
    app = ResponsesStateMiddleware(ScriptedResponsesApp(sleep=gate), store=store)
    frames = 0
    # The read timeout is the hang guard: a held-back chunk would never come.
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        gate.open()  # the first event
        with http.stream(
            "POST", "/v1/responses", json={"model": "m", "input": "a b c d", "stream": True}
        ) as response:
            for chunk in response.iter_raw():
                frames += chunk.count(b"\n\n")
                # The app sends the next event only once this one came over the socket.
                assert gate.passed == frames
                gate.open()
    assert frames >= 8


def test_threads_can_share_one_middleware(store: Store) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    errors: list[BaseException] = []
    with serve(app) as base:

        def converse(name: str) -> None:
            try:
                with openai.OpenAI(base_url=f"{base}/v1", api_key=name, max_retries=0) as c:
                    prev = c.responses.create(model="m", input="a").id
                    for _ in range(3):
                        prev = c.responses.create(
                            model="m", input="b", previous_response_id=prev
                        ).id
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=converse, args=(f"k{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []


def test_a_client_leaving_is_noticed_even_when_the_app_never_listens(store: Store) -> None:
    """Over uvicorn, with an app that streams without ever calling ``receive`` again:
    the middleware watches for the disconnect itself and keeps nothing."""
    first_id: list[str] = []
    finished = threading.Event()

    async def deaf_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        created = {
            "type": "response.created",
            "sequence_number": 0,
            "response": {
                "id": "resp_up",
                "object": "response",
                "status": "in_progress",
                "output": [],
            },
        }
        await send(
            {
                "type": "http.response.body",
                "more_body": True,
                "body": b"event: response.created\ndata: " + json.dumps(created).encode() + b"\n\n",
            }
        )
        await client_left.wait()  # the middleware has seen the client leave
        done = {
            "type": "response.completed",
            "sequence_number": 1,
            "response": {
                "id": "resp_up",
                "object": "response",
                "status": "completed",
                "output": [],
            },
        }
        await send(
            {
                "type": "http.response.body",
                "more_body": False,
                "body": b"event: response.completed\ndata: " + json.dumps(done).encode() + b"\n\n",
            }
        )
        finished.set()

    client_left = asyncio.Event()
    middleware = ResponsesStateMiddleware(deaf_app, store=store)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def watched_receive() -> Any:
            message = await receive()  # only the middleware calls it: the app never does
            if message["type"] == "http.disconnect":
                # Set after the middleware's own callbacks on this message have run.
                asyncio.get_running_loop().call_soon(client_left.set)
            return message

        await middleware(scope, watched_receive, send)

    with serve(app) as base:
        with (
            httpx.Client(base_url=base, timeout=10) as http,
            http.stream(
                "POST", "/v1/responses", json={"model": "m", "input": "x", "stream": True}
            ) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    first_id.append(json.loads(line[6:])["response"]["id"])
                    break
        assert finished.wait(HANG_GUARD), "the middleware never saw the client leave"
        with httpx.Client(base_url=base, timeout=10) as http:
            fetched = http.get(f"/v1/responses/{first_id[0]}")
    assert fetched.status_code == 404
