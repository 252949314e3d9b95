"""``POST /responses`` with ``conversation``: the context, what a turn appends, the lock,
and item references, through the official SDK, on both stores and both upstream modes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware._errors import ITEM_NOT_FOUND
from state_middleware._marks import CONVERSATION_LOCKED_MESSAGE
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp, StreamingASGITransport

from ._sync import Gate, soon
from .conftest import sdk_client

pytestmark = pytest.mark.anyio


def upstream_for(mode: str, **kwargs: Any) -> Any:
    return ScriptedResponsesApp(**kwargs) if mode == "responses" else ScriptedChatApp()


def wrap(upstream: Any, store: Store, mode: str = "responses") -> ResponsesStateMiddleware:
    return ResponsesStateMiddleware(upstream, store=store, upstream_api=mode)  # type: ignore[arg-type]


def texts(items: list[Any]) -> list[tuple[str, str]]:
    """(role, text) of each message, whatever its form (SDK models or dicts)."""
    out = []
    for item in items:
        data = item if isinstance(item, dict) else item.model_dump()
        content = data.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        out.append((data.get("role", data.get("type", "")), content))
    return out


async def listed(client: openai.AsyncOpenAI, conversation: str) -> list[Any]:
    return [item async for item in client.conversations.items.list(conversation, order="asc")]


@pytest.mark.parametrize("mode", ["responses", "chat"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_turn_sees_the_conversation_and_appends_its_input_and_output(
    store: Store, mode: str, stream: bool
) -> None:
    upstream = upstream_for(mode)
    app = wrap(upstream, store, mode)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create(
            items=[{"role": "user", "content": "the word is ORCHID"}]
        )
        if stream:
            async with client.responses.stream(
                model="m", input="first", conversation=conversation.id
            ) as events:
                seen = [event async for event in events]
                first = await events.get_final_response()
            with_response = [e.response for e in seen if hasattr(e, "response")]
            assert with_response
            assert all(
                r.conversation and r.conversation.id == conversation.id for r in with_response
            )
        else:
            first = await client.responses.create(
                model="m", input="first", conversation={"id": conversation.id}
            )
        second = await client.responses.create(
            model="m", input="second", conversation=conversation.id, instructions="Be brief."
        )
        items = await listed(client, conversation.id)
        stored = await client.responses.retrieve(first.id)
    assert first.conversation is not None
    assert first.conversation.id == conversation.id
    assert stored.conversation is not None
    assert stored.conversation.id == conversation.id
    sent = upstream.requests[-1].body
    assert "conversation" not in sent
    context = texts(sent["input"] if mode == "responses" else sent["messages"])
    if mode == "chat":
        assert context[0] == ("system", "Be brief.")
        context = context[1:]
    assert context == [
        ("user", "the word is ORCHID"),
        ("user", "first"),
        ("assistant", first.output_text),
        ("user", "second"),
    ]
    # input with ids, then output with the same ids as in `output`; no instructions
    assert texts(items) == [*context, ("assistant", second.output_text)]
    assert items[1].id.startswith("msg_")
    assert items[2].id == first.output[0].id
    assert items[4].id == second.output[0].id
    assert [item.type for item in items] == ["message"] * 5


async def test_a_response_without_a_conversation_has_no_conversation_key(store: Store) -> None:
    app = wrap(ScriptedResponsesApp(), store)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://t"
    ) as http:
        reply = await http.post("/v1/responses", json={"model": "m", "input": "hi"})
        stored = await http.get(f"/v1/responses/{reply.json()['id']}")
    assert "conversation" not in reply.json()
    assert "conversation" not in stored.json()


async def test_store_false_reads_the_conversation_and_appends_nothing(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create(items=[{"role": "user", "content": "a"}])
        reply = await client.responses.create(
            model="m", input="b", conversation=conversation.id, store=False
        )
        items = await listed(client, conversation.id)
    assert reply.conversation is not None
    assert reply.store is False
    assert texts(upstream.requests[-1].body["input"]) == [("user", "a"), ("user", "b")]
    assert texts(items) == [("user", "a")]


async def test_previous_response_id_with_a_conversation_is_refused_before_the_app(
    memory_store: Store,
) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, memory_store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create()
        first = await client.responses.create(model="m", input="a")
        calls = len(upstream.requests)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(
                model="m", input="b", conversation=conversation.id, previous_response_id=first.id
            )
    assert len(upstream.requests) == calls
    assert caught.value.body == {
        "message": "Mutually exclusive parameters: Ensure you are only providing one of: "
        "'previous_response_id' or 'conversation'.",
        "type": "invalid_request_error",
        "param": "conversation",
        "code": None,
    }


async def test_an_unknown_or_foreign_conversation_is_not_found(store: Store) -> None:
    app = wrap(ScriptedResponsesApp(), store)
    async with sdk_client(app, api_key="sk-a") as mine, sdk_client(app, api_key="sk-b") as theirs:
        conversation = await mine.conversations.create()
        for client, name in [(mine, "conv_unknown"), (theirs, conversation.id)]:
            with pytest.raises(openai.NotFoundError) as caught:
                await client.responses.create(model="m", input="x", conversation=name)
            assert caught.value.body == {
                "message": f"Conversation with id '{name}' not found.",
                "type": "invalid_request_error",
                "param": "conversation",
                "code": None,
            }


async def run_stream(client: openai.AsyncOpenAI, conversation: str) -> None:
    async with client.responses.stream(model="m", input="b", conversation=conversation) as events:
        async for _ in events:
            pass
        await events.get_final_response()


@pytest.mark.parametrize("script", [{"failed": True}, {"cut_after": 3}, {"status": 500}])
async def test_a_turn_that_does_not_complete_appends_nothing(
    store: Store, script: dict[str, Any]
) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create(items=[{"role": "user", "content": "a"}])
        upstream.script.append(script)
        # the SDK reports a cut stream as a RuntimeError, the others as API errors
        with pytest.raises((openai.APIError, RuntimeError)):
            await run_stream(client, conversation.id)
        items = await listed(client, conversation.id)
        after = await client.responses.create(model="m", input="c", conversation=conversation.id)
    assert texts(items) == [("user", "a")]
    assert after.output_text == "[2 items] c"  # the lock ended with the failed turn


async def test_a_client_that_leaves_mid_stream_appends_nothing_and_frees_the_lock(
    store: Store,
) -> None:
    gate = Gate()
    upstream = ScriptedResponsesApp(sleep=gate)
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create()
        gate.open(3)
        stream = await client.responses.create(
            model="m", input="hi DELTAS:5", conversation=conversation.id, stream=True
        )
        async for event in stream:
            if event.type == "response.in_progress":
                break
        await stream.close()
        gate.open(100)
        items = await listed(client, conversation.id)
        gate.open(100)
        after = await soon(
            client.responses.create(model="m", input="again", conversation=conversation.id),
            "a turn after the client left",
        )
    assert items == []
    assert after.output_text == "[1 items] again"


async def test_a_second_turn_on_a_busy_conversation_is_locked_out(store: Store) -> None:
    gate = Gate()
    upstream = ScriptedResponsesApp(sleep=gate)
    app = wrap(upstream, store)
    async with sdk_client(app) as client, sdk_client(app) as other:
        conversation = await client.conversations.create()
        gate.open(2)
        stream = await client.responses.create(
            model="m", input="slow DELTAS:3", conversation=conversation.id, stream=True
        )
        events = aiter(stream)
        assert (await anext(events)).type == "response.created"
        with pytest.raises(openai.BadRequestError) as caught:
            await other.responses.create(model="m", input="b", conversation=conversation.id)
        assert caught.value.body == {
            "message": CONVERSATION_LOCKED_MESSAGE,
            "type": "invalid_request_error",
            "param": "conversation",
            "code": "conversation_locked",
        }
        gate.open(100)
        rest = [event.type async for event in events]
        after = await other.responses.create(model="m", input="b", conversation=conversation.id)
    assert rest[-1] == "response.completed"
    assert after.output_text == "[3 items] b"


# -- item references ---------------------------------------------------------------------


async def test_item_references_expand_to_stored_items_in_place(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="remember PLUM")
        [input_item] = [item async for item in client.responses.input_items.list(first.id)]
        await client.responses.create(
            model="m",
            input=[
                {"type": "item_reference", "id": input_item.id},
                {"id": first.output[0].id},
                {"role": "user", "content": "what was it?"},
            ],
        )
    assert texts(upstream.requests[-1].body["input"]) == [
        ("user", "remember PLUM"),
        ("assistant", first.output_text),
        ("user", "what was it?"),
    ]


async def test_conversation_items_can_be_referenced_from_any_request(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create(
            items=[{"role": "user", "content": "the word is FIG"}]
        )
        [item] = await listed(client, conversation.id)
        await client.responses.create(
            model="m",
            input=[{"type": "item_reference", "id": item.id}, {"role": "user", "content": "?"}],
        )
    assert texts(upstream.requests[-1].body["input"]) == [
        ("user", "the word is FIG"),
        ("user", "?"),
    ]


@pytest.mark.parametrize("kind", ["unknown", "store_false", "foreign"])
async def test_an_item_reference_to_nothing_stored_is_a_404(store: Store, kind: str) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, store)
    async with sdk_client(app, api_key="sk-a") as mine, sdk_client(app, api_key="sk-b") as theirs:
        name = "msg_0123456789abcdef"
        client = mine
        if kind == "store_false":
            name = (await mine.responses.create(model="m", input="x", store=False)).output[0].id
        elif kind == "foreign":
            name = (await mine.responses.create(model="m", input="x")).output[0].id
            client = theirs
        calls = len(upstream.requests)
        with pytest.raises(openai.NotFoundError) as caught:
            await client.responses.create(model="m", input=[{"type": "item_reference", "id": name}])
    assert len(upstream.requests) == calls
    assert caught.value.body == {
        "message": ITEM_NOT_FOUND.format(name),
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }


async def test_a_chain_from_a_conversation_turn_continues_the_chain_not_the_conversation(
    store: Store,
) -> None:
    upstream = ScriptedResponsesApp()
    app = wrap(upstream, store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create()
        first = await client.responses.create(model="m", input="a", conversation=conversation.id)
        await client.conversations.items.create(
            conversation.id, items=[{"role": "user", "content": "added later"}]
        )
        branch = await client.responses.create(model="m", input="b", previous_response_id=first.id)
        items = await listed(client, conversation.id)
    assert branch.conversation is None
    assert texts(upstream.requests[-1].body["input"]) == [
        ("user", "a"),
        ("assistant", first.output_text),
        ("user", "b"),
    ]
    assert len(items) == 3  # a, its answer, "added later": the branch appended nothing


async def test_concurrent_turns_on_one_conversation_never_interleave(store: Store) -> None:
    app = wrap(ScriptedResponsesApp(), store)
    async with sdk_client(app) as client:
        conversation = await client.conversations.create()

        async def turn(n: int) -> str | None:
            try:
                await client.responses.create(
                    model="m", input=f"t{n}", conversation=conversation.id
                )
            except openai.BadRequestError as exc:
                return exc.code
            return None

        codes = await asyncio.gather(*(turn(n) for n in range(8)))
        done = [code is None for code in codes]
        items = await listed(client, conversation.id)
    assert set(codes) <= {None, "conversation_locked"}
    assert any(done)
    assert len(items) == 2 * sum(done)
    roles = [role for role, _ in texts(items)]
    assert roles == ["user", "assistant"] * sum(done)
