"""Background responses through the official SDK: queued at once, polled, streamed and
resumed by sequence number, cancelled; both stores and both upstream modes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from state_middleware import BackgroundSettings, ResponsesStateMiddleware, Store
from state_middleware._background import SHUTDOWN_MESSAGE, TOO_MANY_MESSAGE
from state_middleware._background_endpoints import (
    NOT_BACKGROUND_CANCEL,
    NOT_BACKGROUND_STREAM,
    NOT_STREAMED,
)
from state_middleware._request import BACKGROUND_NEEDS_STORE
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp, StreamingASGITransport

from ._sync import Gate, soon
from .conftest import sdk_client

pytestmark = pytest.mark.anyio


def wrap(upstream: Any, store: Store, mode: str = "responses", **kwargs: Any) -> Any:
    return ResponsesStateMiddleware(upstream, store=store, upstream_api=mode, **kwargs)


async def events_of(stream: Any) -> list[Any]:
    return [event async for event in stream]


async def raw_events(app: Any, path: str) -> list[bytes]:
    """The SSE frames of a GET stream, as bytes."""
    async with (
        httpx.AsyncClient(
            transport=StreamingASGITransport(app),
            base_url="http://t",
            headers={"authorization": "Bearer sk-test"},  # the SDK clients' owner
        ) as http,
        http.stream("GET", path) as reply,
    ):
        assert reply.status_code == 200
        body = b"".join([chunk async for chunk in reply.aiter_bytes()])
    return [frame + b"\n\n" for frame in body.split(b"\n\n") if frame]


async def wait_finished(client: openai.AsyncOpenAI, response_id: str) -> Any:
    """Follow the recorded events to the end (event-driven), then retrieve."""
    stream = await client.responses.retrieve(response_id, stream=True)
    await soon(events_of(stream), "the background response finishing")
    return await client.responses.retrieve(response_id)


@pytest.mark.parametrize("mode", ["responses", "chat"])
async def test_a_background_response_is_queued_at_once_then_polled_to_completion(
    store: Store, mode: str
) -> None:
    gate = Gate()
    upstream = ScriptedResponsesApp(sleep=gate) if mode == "responses" else ScriptedChatApp()
    app = wrap(upstream, store, mode)
    async with sdk_client(app) as client:
        created = await client.responses.create(
            model="m", input="hello DELTAS:4", background=True, stream=False
        )
        assert created.status == "queued"
        assert created.background is True
        assert created.output == []
        polled = await client.responses.retrieve(created.id)
        if mode == "responses":  # held at its gate (the chat app is not gated)
            assert polled.status in ("queued", "in_progress")
        gate.open(1000)
        # a background created without stream cannot be streamed: poll by retrieving
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.retrieve(created.id, stream=True)
        assert refused.value.body == {
            "message": NOT_STREAMED,
            "type": "invalid_request_error",
            "param": "stream",
            "code": None,
        }
        await settled(app)
        done = await client.responses.retrieve(created.id)
        follow = await client.responses.create(
            model="m", input="and then", previous_response_id=created.id
        )
    assert done.id == created.id
    assert done.status == "completed"
    assert done.background is True
    assert done.output_text
    if mode == "responses":
        assert done.output_text == "w0 w1 w2 w3 "
    assert follow.status == "completed"
    sent = upstream.requests[0].body
    assert sent.get("stream") is True  # the middleware asks for a stream
    assert "background" not in sent


async def settled(app: Any) -> None:
    """Wait for every background turn of ``app`` to end (its tasks, not the clock)."""
    await soon(asyncio.gather(*list(app.background.tasks)), "the background turns ending")


async def test_polling_shows_the_output_produced_so_far(store: Store) -> None:
    gate = Gate()
    upstream = ScriptedResponsesApp(sleep=gate)
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        created = await client.responses.create(
            model="m", input="x DELTAS:6", background=True, stream=True
        )
        events = aiter(created)
        seen = []
        gate.open(6)  # created, in_progress, item added, part added, two deltas
        while len([e for e in seen if e.type == "response.output_text.delta"]) < 2:
            seen.append(await soon(anext(events), "the next event"))
        response_id = seen[0].response.id
        partial = await client.responses.retrieve(response_id)
        gate.open(1000)
        rest = await events_of(events)
    assert partial.status == "in_progress"
    assert partial.output[0].status == "in_progress"
    assert partial.output_text == "w0 w1 "
    assert rest[-1].type == "response.completed"


async def test_a_cut_stream_resumes_with_exactly_the_missing_events(store: Store) -> None:
    gate = Gate()
    app = wrap(ScriptedResponsesApp(sleep=gate), store)
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="x DELTAS:8", background=True, stream=True
        )
        gate.open(5)
        had = []
        async for event in stream:
            had.append(event)
            if len(had) == 5:
                break
        await stream.close()
        response_id = had[0].response.id
        last = had[-1].sequence_number
        gate.open(1000)
        resumed = await events_of(
            await client.responses.retrieve(response_id, stream=True, starting_after=last)
        )
        async with client.responses.stream(response_id=response_id, starting_after=last) as s:
            helper = await events_of(s)
            final = await s.get_final_response()
    whole = await raw_events(app, f"/v1/responses/{response_id}?stream=true")
    cut = await raw_events(app, f"/v1/responses/{response_id}?stream=true&starting_after={last}")
    numbers = [event.sequence_number for event in had + resumed]
    assert numbers == list(range(len(numbers)))
    assert [e.type for e in had][:2] == ["response.created", "response.queued"]
    assert resumed[-1].type == "response.completed"
    assert [e.sequence_number for e in helper] == [e.sequence_number for e in resumed]
    assert final.output_text == "w0 w1 w2 w3 w4 w5 w6 w7 "
    # the bytes a resumed client gets, joined to what it had, are the whole stream
    assert whole[: last + 1] + cut == whole
    assert len(whole) == len(numbers)


async def test_a_client_that_leaves_a_background_stream_does_not_stop_the_turn(
    store: Store,
) -> None:
    gate = Gate()
    app = wrap(ScriptedResponsesApp(sleep=gate), store)
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="x DELTAS:3", background=True, stream=True
        )
        gate.open(1)
        first = await anext(aiter(stream))
        await stream.close()
        gate.open(1000)
        done = await wait_finished(client, first.response.id)
    assert done.status == "completed"
    assert done.output_text == "w0 w1 w2 "


async def test_cancel_stops_a_running_turn_and_keeps_its_output_so_far(store: Store) -> None:
    gate = Gate()
    upstream = ScriptedResponsesApp(sleep=gate)
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="x DELTAS:50", background=True, stream=True
        )
        events = aiter(stream)
        gate.open(6)
        seen = [await soon(anext(events), "an event") for _ in range(7)]
        response_id = seen[0].response.id
        cancelled = await soon(client.responses.cancel(response_id), "the cancel")
        rest = await soon(events_of(events), "the stream ending")
        again = await client.responses.cancel(response_id)
        retrieved = await client.responses.retrieve(response_id)
        passed = gate.passed
        gate.open(1000)
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="m", input="more", previous_response_id=response_id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_text.startswith("w0 w1")
    assert cancelled.output[0].status == "in_progress"
    assert again.model_dump() == cancelled.model_dump()
    assert retrieved.model_dump() == cancelled.model_dump()
    assert all(e.type != "response.completed" for e in rest)
    assert gate.passed == passed  # the app stopped: nothing more was let through


async def test_cancel_of_a_finished_or_foreground_response(store: Store) -> None:
    app = wrap(ScriptedResponsesApp(), store)
    async with sdk_client(app) as client:
        created = await client.responses.create(model="m", input="x", background=True, stream=True)
        response_id = (await events_of(created))[0].response.id
        finished = await client.responses.retrieve(response_id)
        cancelled = await client.responses.cancel(response_id)
        plain = await client.responses.create(model="m", input="y")
        with pytest.raises(openai.BadRequestError) as foreground:
            await client.responses.cancel(plain.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.cancel("resp_nothing")
        with pytest.raises(openai.BadRequestError) as not_streamed:
            await client.responses.retrieve(plain.id, stream=True)
    assert finished.status == "completed"
    assert cancelled.model_dump() == finished.model_dump()
    assert foreground.value.body == {
        "message": NOT_BACKGROUND_CANCEL,
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert isinstance(not_streamed.value.body, dict)
    assert not_streamed.value.body["message"] == NOT_BACKGROUND_STREAM


async def test_background_needs_store(memory_store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, memory_store)
    async with sdk_client(app) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="m", input="x", background=True, store=False)
    assert refused.value.body == {
        "message": BACKGROUND_NEEDS_STORE,
        "type": "invalid_request_error",
        "param": "store",
        "code": None,
    }
    assert upstream.requests == []


async def test_a_bad_previous_response_id_is_answered_before_anything_is_queued(
    memory_store: Store,
) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, memory_store)
    async with sdk_client(app) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(
                model="m", input="x", background=True, previous_response_id="resp_none"
            )
    assert refused.value.code == "previous_response_not_found"
    assert upstream.requests == []


async def test_past_the_queue_bound_a_background_request_is_a_429(memory_store: Store) -> None:
    gate = Gate()
    app = wrap(
        ScriptedResponsesApp(sleep=gate),
        memory_store,
        background=BackgroundSettings(running=1, queued=1),
    )
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="a", background=True)
        second = await client.responses.create(model="m", input="b", background=True)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.responses.create(model="m", input="c", background=True)
        waiting = await client.responses.retrieve(second.id)
        gate.open(10_000)
        await settled(app)
        done = [await client.responses.retrieve(r.id) for r in (first, second)]
    assert refused.value.body == {
        "message": TOO_MANY_MESSAGE,
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert waiting.status == "queued"  # one runs at a time: the second waits
    assert [r.status for r in done] == ["completed", "completed"]


async def test_a_follow_up_waits_for_a_running_background_response(store: Store) -> None:
    gate = Gate()
    upstream = ScriptedResponsesApp(sleep=gate)
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        created = await client.responses.create(model="m", input="one DELTAS:3", background=True)
        # Not stored yet: without waiting, the follow-up would be a 400 not found.
        follow = asyncio.ensure_future(
            client.responses.create(model="m", input="two", previous_response_id=created.id)
        )
        gate.open(1000)
        answer = await soon(follow, "the follow-up")
    assert answer.output_text == "[3 items] two"


async def test_a_background_turn_on_a_conversation_appends_when_it_completes(
    store: Store,
) -> None:
    app = wrap(ScriptedResponsesApp(), store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create()
        created = await client.responses.create(
            model="m", input="hi", background=True, stream=True, conversation=conversation.id
        )
        response_id = (await events_of(created))[0].response.id
        done = await client.responses.retrieve(response_id)
        items = [i async for i in client.conversations.items.list(conversation.id)]
    assert done.conversation is not None
    assert done.conversation.id == conversation.id
    assert len(items) == 2


async def test_shutdown_fails_the_turns_still_running_after_the_grace(
    memory_store: Store,
) -> None:
    gate = Gate()
    app = wrap(
        ScriptedResponsesApp(sleep=gate),
        memory_store,
        background=BackgroundSettings(grace=0),
    )
    async with sdk_client(app) as client:
        created = await client.responses.create(
            model="m", input="x DELTAS:9", background=True, stream=True
        )
        gate.open(3)
        first = await anext(aiter(created))
        await created.close()
        messages = iter([{"type": "lifespan.shutdown"}])
        sent: list[Any] = []

        async def receive() -> Any:
            return next(messages)

        async def send(message: Any) -> None:
            sent.append(message)

        await soon(app({"type": "lifespan"}, receive, send), "the lifespan shutdown")
        failed = await client.responses.retrieve(first.response.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.message == SHUTDOWN_MESSAGE
    assert sent == [{"type": "lifespan.shutdown.complete"}]  # the app heard it after
