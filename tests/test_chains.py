"""Chains through the official SDK: what the upstream sees, ids, forks, identity."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware.testing import ScriptedResponsesApp

from .conftest import sdk_client

pytestmark = pytest.mark.anyio


def wrap(store: Store, **kwargs: Any) -> tuple[ScriptedResponsesApp, ResponsesStateMiddleware]:
    upstream = ScriptedResponsesApp()
    return upstream, ResponsesStateMiddleware(upstream, store=store, **kwargs)


def texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of each message item, whatever its content form."""
    out = []
    for item in items:
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        out.append((item.get("role", item.get("type", "")), content))
    return out


async def test_upstream_receives_the_whole_chain_oldest_first(store: Store) -> None:
    upstream, app = wrap(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="one")
        second = await client.responses.create(
            model="m", input="two", previous_response_id=first.id
        )
        third = await client.responses.create(
            model="m",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "three"}]}],
            previous_response_id=second.id,
        )
    sent = upstream.requests[-1].body
    assert "previous_response_id" not in sent
    assert texts(sent["input"]) == [
        ("user", "one"),
        ("assistant", "[1 items] one"),
        ("user", "two"),
        ("assistant", "[3 items] two"),
        ("user", "three"),
    ]
    assert third.output_text == "[5 items] three"


async def test_instructions_are_not_carried_but_input_system_messages_are(store: Store) -> None:
    upstream, app = wrap(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(
            model="m",
            instructions="Be terse.",
            input=[
                {"role": "developer", "content": "Speak French."},
                {"role": "user", "content": "hi"},
            ],
        )
        await client.responses.create(
            model="m", instructions="Be kind.", input="more", previous_response_id=first.id
        )
    sent = upstream.requests[-1].body
    assert sent["instructions"] == "Be kind."
    assert ("developer", "Speak French.") in texts(sent["input"])
    assert "Be terse." not in repr(sent)


async def test_unknown_and_other_fields_pass_through_untouched(store: Store) -> None:
    upstream, app = wrap(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="a")
        await client.responses.create(
            model="m-2",
            input="b",
            previous_response_id=first.id,
            temperature=0.25,
            metadata={"k": "v"},
            extra_body={"vendor_knob": {"deep": [1, 2, None]}, "client_metadata": {"x": "y"}},
        )
    sent = upstream.requests[-1].body
    assert sent["model"] == "m-2"
    assert sent["temperature"] == 0.25
    assert sent["metadata"] == {"k": "v"}
    assert sent["vendor_knob"] == {"deep": [1, 2, None]}
    assert sent["client_metadata"] == {"x": "y"}


async def test_requests_without_history_reach_the_app_byte_for_byte(store: Store) -> None:
    upstream, app = wrap(store)
    async with sdk_client(app) as client:
        await client.responses.create(model="m", input="a", extra_body={"z": 1, "a": 2})
    raw = upstream.requests[-1].raw_body
    assert raw.index(b'"z"') < raw.index(b'"a":2')  # key order kept: not re-encoded


async def test_every_turn_gets_its_own_unguessable_id_echoed_everywhere(store: Store) -> None:
    _, app = wrap(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="a")
        stream = await client.responses.create(
            model="m", input="b", previous_response_id=first.id, stream=True
        )
        ids = set()
        async for event in stream:
            response = getattr(event, "response", None)
            if response is not None:
                ids.add(response.id)
                assert response.previous_response_id == first.id
                assert response.store is True
        fetched = await client.responses.retrieve(ids.copy().pop())
    assert len(ids) == 1
    (second_id,) = ids
    assert fetched.id == second_id
    for rid in (first.id, second_id):
        assert rid.startswith("resp_")
        assert len(rid) - len("resp_") >= 32  # >= 128 random bits in hex
        assert "upstream" not in rid  # the upstream's own guessable id was replaced
    assert first.id != second_id
    assert first.previous_response_id is None


async def test_store_false_is_echoed_and_not_retrievable(store: Store) -> None:
    _, app = wrap(store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="a")
        unstored = await client.responses.create(
            model="m", input="b", previous_response_id=first.id, store=False
        )
        assert unstored.store is False
        assert unstored.previous_response_id == first.id
        assert unstored.output_text == "[3 items] b"
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(unstored.id)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="m", input="c", previous_response_id=unstored.id)
    assert caught.value.body == not_found_body(unstored.id)


def not_found_body(response_id: str) -> dict[str, Any]:
    return {
        "message": f"Previous response with id '{response_id}' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }


async def test_forks_never_see_each_others_turns(store: Store) -> None:
    upstream, app = wrap(store)
    async with sdk_client(app) as client:
        root = await client.responses.create(model="m", input="root")
        left = await client.responses.create(model="m", input="left", previous_response_id=root.id)
        right = await client.responses.create(
            model="m", input="right", previous_response_id=root.id
        )
        left2 = await client.responses.create(
            model="m", input="left again", previous_response_id=left.id
        )
        root_again = await client.responses.retrieve(root.id)
    assert texts(upstream.requests[-1].body["input"])[:4] == [
        ("user", "root"),
        ("assistant", "[1 items] root"),
        ("user", "left"),
        ("assistant", "[3 items] left"),
    ]
    assert "right" not in repr(upstream.requests[-1].body)
    assert right.output_text == "[3 items] right"
    assert left2.output_text == "[5 items] left again"
    assert root_again.output_text == root.output_text
    assert root_again.model_dump() == root.model_dump()  # a stored response never changes


async def test_another_callers_ids_are_indistinguishable_from_missing_ones(store: Store) -> None:
    upstream, app = wrap(store)
    async with (
        sdk_client(app, api_key="sk-alice") as alice,
        sdk_client(app, api_key="sk-bob") as bob,
    ):
        mine = await alice.responses.create(model="m", input="secret")
        calls = len(upstream.requests)
        with pytest.raises(openai.BadRequestError) as foreign:
            await bob.responses.create(model="m", input="x", previous_response_id=mine.id)
        with pytest.raises(openai.BadRequestError) as missing:
            await bob.responses.create(model="m", input="x", previous_response_id="resp_nope")
        with pytest.raises(openai.NotFoundError) as get_foreign:
            await bob.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await bob.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            await bob.responses.delete(mine.id)
        assert (await alice.responses.retrieve(mine.id)).id == mine.id
    assert len(upstream.requests) == calls  # rejected before the app was called
    assert foreign.value.body == not_found_body(mine.id)
    assert missing.value.body == not_found_body("resp_nope")
    assert get_foreign.value.body == {
        "message": f"Response with id '{mine.id}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


async def test_organization_and_project_headers_scope_records(store: Store) -> None:
    _, app = wrap(store)
    async with (
        sdk_client(app, **{"OpenAI-Project": "p1"}) as p1,
        sdk_client(app, **{"OpenAI-Project": "p2"}) as p2,
    ):
        made = await p1.responses.create(model="m", input="a")
        with pytest.raises(openai.NotFoundError):
            await p2.responses.retrieve(made.id)


async def test_a_custom_identity_function_decides_the_owner(store: Store) -> None:
    def tenant(scope: Any) -> str:
        return dict(scope["headers"]).get(b"x-tenant", b"").decode()

    _, app = wrap(store, identity=tenant)
    async with (
        sdk_client(app, api_key="k1", **{"x-tenant": "acme"}) as one,
        sdk_client(app, api_key="k2", **{"x-tenant": "acme"}) as same_tenant,
    ):
        made = await one.responses.create(model="m", input="a")
        fetched = await same_tenant.responses.retrieve(made.id)
    assert fetched.id == made.id


async def test_raw_credentials_are_never_stored(store: Store) -> None:
    _, app = wrap(store)
    key = "sk-very-secret-key-123"
    async with sdk_client(app, api_key=key) as client:
        first = await client.responses.create(model="m", input="a")
        await client.responses.create(model="m", input="b", previous_response_id=first.id)
    record = await store.get(_owner_of(key), first.id)
    assert record is not None
    assert key.encode() not in repr(record).encode()
    for owner_part in (key, f"Bearer {key}"):
        assert await store.get(owner_part, first.id) is None


def _owner_of(key: str) -> str:
    from state_middleware import default_identity

    return default_identity({"headers": [(b"authorization", f"Bearer {key}".encode())]})  # type: ignore[typeddict-item]


async def test_incomplete_turns_are_stored_and_can_be_continued(store: Store) -> None:
    _, app = wrap(store)
    async with sdk_client(app) as client:
        cut = await client.responses.create(model="m", input="INCOMPLETE please")
        assert cut.status == "incomplete"
        more = await client.responses.create(model="m", input="go on", previous_response_id=cut.id)
    assert more.output_text == "[3 items] go on"
