"""The Conversations API (``/v1/conversations`` and its items), through the official SDK
and, for every error, through raw HTTP with the exact OpenAI-shaped body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from state_middleware import MemoryStore, ResponsesStateMiddleware, Store, StoreUnavailable
from state_middleware.testing import ScriptedResponsesApp

from .conftest import sdk_client

pytestmark = pytest.mark.anyio


def wrapped(store: Store, **options: Any) -> ResponsesStateMiddleware:
    return ResponsesStateMiddleware(ScriptedResponsesApp(), store=store, **options)


@asynccontextmanager
async def raw_client(app: Any, api_key: str = "sk-test") -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t/v1",
        headers={"authorization": f"Bearer {api_key}"},
    ) as http:
        yield http


def error(
    message: str, param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def listed(http: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    """Every item of a conversation, oldest first."""
    answer = await http.get(f"/conversations/{conversation_id}/items?order=asc&limit=100")
    assert answer.status_code == 200
    items: list[dict[str, Any]] = answer.json()["data"]
    return items


def texts(items: list[dict[str, Any]]) -> list[str]:
    return [item["content"][0]["text"] for item in items]


# -- through the SDK ------------------------------------------------------------------------


async def test_a_conversation_is_created_retrieved_updated_and_deleted(store: Store) -> None:
    async with sdk_client(wrapped(store)) as client:
        made = await client.conversations.create(metadata={"topic": "tides", "n": "1"})
        assert made.id.startswith("conv_")
        assert made.object == "conversation"
        assert isinstance(made.created_at, int)
        assert made.metadata == {"topic": "tides", "n": "1"}

        fetched = await client.conversations.retrieve(made.id)
        assert fetched.model_dump() == made.model_dump()

        updated = await client.conversations.update(made.id, metadata={"n": "2"})
        assert updated.metadata == {"n": "2"}  # replaced, not merged
        assert (await client.conversations.retrieve(made.id)).metadata == {"n": "2"}
        cleared = await client.conversations.update(made.id, metadata=None)
        assert cleared.metadata == {}

        deleted = await client.conversations.delete(made.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (
            made.id,
            "conversation.deleted",
            True,
        )
        with pytest.raises(openai.NotFoundError):
            await client.conversations.retrieve(made.id)


async def test_a_conversation_without_metadata_has_an_empty_object(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        answer = await http.post("/conversations", json={})
        bare = await http.post("/conversations", content=b"")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"id", "object", "created_at", "metadata"}
    assert body["metadata"] == {}
    assert bare.status_code == 200
    assert bare.json()["metadata"] == {}


async def test_items_are_added_listed_retrieved_and_deleted(store: Store) -> None:
    async with sdk_client(wrapped(store)) as client:
        made = await client.conversations.create(items=[user("first")])
        added = await client.conversations.items.create(
            made.id,
            items=[
                {"role": "assistant", "content": "second"},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            ],
        )
        assert added.data[0].id.startswith("msg_")
        assert added.data[1].id.startswith("fc_")
        assert added.first_id == added.data[0].id
        assert added.last_id == added.data[1].id
        assert added.has_more is False

        page = await client.conversations.items.list(made.id, order="asc")
        assert [item.type for item in page.data] == ["message", "message", "function_call"]
        first = page.data[0].model_dump(exclude_none=True)
        assert first == {
            "id": first["id"],
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": "first"}],
        }
        second = page.data[1].model_dump(exclude_none=True)
        assert second["content"] == [
            {"type": "output_text", "text": "second", "annotations": [], "logprobs": []}
        ]
        assert [item.id for item in page.data[1:]] == [item.id for item in added.data]

        one = await client.conversations.items.retrieve(added.data[1].id, conversation_id=made.id)
        assert one.model_dump() == added.data[1].model_dump()

        parent = await client.conversations.items.delete(added.data[0].id, conversation_id=made.id)
        assert parent.object == "conversation"
        assert parent.id == made.id
        after = await client.conversations.items.list(made.id, order="asc")
        assert [item.id for item in after.data] == [page.data[0].id, page.data[2].id]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_items_list_auto_paginates(store: Store, order: str) -> None:
    async with sdk_client(wrapped(store)) as client:
        made = await client.conversations.create(items=[user(f"m{n}") for n in range(5)])
        walked = [
            item.content[0].text  # type: ignore[union-attr]
            async for item in client.conversations.items.list(
                made.id,
                limit=2,
                order=order,  # type: ignore[arg-type]
            )
        ]
    expected = [f"m{n}" for n in range(5)]
    assert walked == (expected if order == "asc" else expected[::-1])


# -- listing --------------------------------------------------------------------------------


async def test_the_list_is_newest_first_by_default(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        made = (await http.post("/conversations", json={"items": [user("m1"), user("m2")]})).json()
        await http.post(f"/conversations/{made['id']}/items", json={"items": [user("m3")]})
        answer = (await http.get(f"/conversations/{made['id']}/items?limit=2")).json()
    assert texts(answer["data"]) == ["m3", "m2"]
    assert answer["has_more"] is True
    assert answer["first_id"] == answer["data"][0]["id"]
    assert answer["last_id"] == answer["data"][1]["id"]


async def test_the_list_shows_twenty_items_by_default(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        items = [user(f"m{n}") for n in range(20)]
        made = (await http.post("/conversations", json={"items": items})).json()
        await http.post(f"/conversations/{made['id']}/items", json={"items": [user("m20")]})
        answer = (await http.get(f"/conversations/{made['id']}/items")).json()
    assert texts(answer["data"]) == [f"m{n}" for n in range(20, 0, -1)]
    assert answer["has_more"] is True


async def test_an_empty_conversation_lists_null_first_and_last_ids(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        made = (await http.post("/conversations", json={"items": []})).json()
        answer = await http.get(f"/conversations/{made['id']}/items")
    assert answer.json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


async def test_after_gives_the_items_after_it_in_the_requested_order(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        items = [user(name) for name in "abcd"]
        made = (await http.post("/conversations", json={"items": items})).json()
        ids = [item["id"] for item in await listed(http, made["id"])]
        base = f"/conversations/{made['id']}/items"
        ascending = (await http.get(f"{base}?order=asc&after={ids[1]}")).json()
        descending = (await http.get(f"{base}?order=desc&after={ids[2]}")).json()
        last = (await http.get(f"{base}?order=asc&after={ids[3]}")).json()
    assert texts(ascending["data"]) == ["c", "d"]
    assert texts(descending["data"]) == ["b", "a"]
    assert (last["data"], last["first_id"], last["has_more"]) == ([], None, False)


async def test_include_is_accepted_and_changes_nothing(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        made = (await http.post("/conversations", json={"items": [user("x")]})).json()
        base = f"/conversations/{made['id']}/items"
        plain = (await http.get(base)).json()
        include = "include%5B%5D=message.output_text.logprobs&include=reasoning.encrypted_content"
        listed_with = await http.get(f"{base}?{include}")
        one = await http.get(f"{base}/{plain['first_id']}?{include}")
        added = await http.post(f"{base}?{include}", json={"items": [user("y")]})
    assert listed_with.json() == plain
    assert one.json() == plain["data"][0]
    assert added.status_code == 200


# -- item ids: global references ------------------------------------------------------------


async def test_an_id_stored_elsewhere_adds_the_stored_item(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        first = (await http.post("/conversations", json={"items": [user("first copy")]})).json()
        [original] = await listed(http, first["id"])
        other = (await http.post("/conversations", json={})).json()
        sent = {**original, "content": [{"type": "input_text", "text": "changed"}]}
        answer = await http.post(f"/conversations/{other['id']}/items", json={"items": [sent]})
        assert answer.status_code == 200
        assert answer.json()["data"] == [original]
        assert await listed(http, other["id"]) == [original]
        assert await listed(http, first["id"]) == [original]


async def test_references_and_bare_ids_add_the_stored_item(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        first = (await http.post("/conversations", json={"items": [user("kept")]})).json()
        [original] = await listed(http, first["id"])
        items = [{"type": "item_reference", "id": original["id"]}, {"id": original["id"]}]
        made = await http.post("/conversations", json={"items": items})
        assert made.status_code == 200
        assert await listed(http, made.json()["id"]) == [original, original]


async def test_items_of_stored_responses_can_be_added_by_id(store: Store) -> None:
    app = wrapped(store)
    async with sdk_client(app) as client, raw_client(app) as http:
        response = await client.responses.create(model="m", input="hello")
        reply = response.output[0]
        made = await http.post("/conversations", json={"items": [{"id": reply.id}]})
        [item] = await listed(http, made.json()["id"])
    assert item["id"] == reply.id
    assert item["content"][0]["text"] == response.output_text


async def test_the_same_id_twice_in_one_request_is_listed_twice(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        first = (await http.post("/conversations", json={"items": [user("twice")]})).json()
        [original] = await listed(http, first["id"])
        other = (await http.post("/conversations", json={})).json()
        refs = [{"id": original["id"]}, {"type": "item_reference", "id": original["id"]}]
        answer = await http.post(f"/conversations/{other['id']}/items", json={"items": refs})
        assert answer.json()["data"] == [original, original]
        assert await listed(http, other["id"]) == [original, original]


async def test_a_new_item_keeps_the_id_it_was_sent_with(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        item = {"type": "message", "id": "msg_client1", **user("mine")}
        made = (await http.post("/conversations", json={"items": [item]})).json()
        [kept] = await listed(http, made["id"])
    assert kept["id"] == "msg_client1"
    assert kept["content"] == [{"type": "input_text", "text": "mine"}]


# -- errors, each with its exact body, and nothing added ------------------------------------


async def test_an_item_already_in_the_conversation_is_refused(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        made = (await http.post("/conversations", json={"items": [user("once")]})).json()
        before = await listed(http, made["id"])
        items = [user("new"), {"id": before[0]["id"]}]
        answer = await http.post(f"/conversations/{made['id']}/items", json={"items": items})
        assert answer.status_code == 400
        assert answer.json() == error(
            "Item already in conversation", "items", "item_already_in_conversation"
        )
        assert await listed(http, made["id"]) == before


async def test_an_unknown_reference_is_404_and_adds_nothing(store: Store) -> None:
    unknown = "msg_6ab66ff7ec9c81939b784cf4029607200ba108215337a1c5"
    expected = error(
        f"Item with id '{unknown}' not found. Items are not persisted when `store` is set to "
        "false. Try again with `store` set to true, or remove this item from your input.",
        "items",
    )
    async with raw_client(wrapped(store)) as http:
        created = await http.post("/conversations", json={"items": [user("a"), {"id": unknown}]})
        assert (created.status_code, created.json()) == (404, expected)
        made = (await http.post("/conversations", json={"items": [user("a")]})).json()
        before = await listed(http, made["id"])
        items = [user("b"), {"type": "item_reference", "id": unknown}]
        added = await http.post(f"/conversations/{made['id']}/items", json={"items": items})
        assert (added.status_code, added.json()) == (404, expected)
        assert await listed(http, made["id"]) == before


@pytest.mark.parametrize(
    ("item", "prefix"),
    [
        ({"type": "message", "role": "user", "content": "x"}, "msg"),
        ({"role": "user", "content": "x"}, "msg"),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}, "fc"),
    ],
)
async def test_an_id_with_the_wrong_prefix_is_refused(
    store: Store, item: dict[str, Any], prefix: str
) -> None:
    bad = {**item, "id": "item_wrongprefix_56195f6721fb44ea"}
    async with raw_client(wrapped(store)) as http:
        created = await http.post("/conversations", json={"items": [bad]})
        assert created.status_code == 400
        assert created.json() == error(
            "Invalid 'items[0].id': 'item_wrongprefix_56195f6721fb44ea'. "
            f"Expected an ID that begins with '{prefix}'.",
            "items[0].id",
            "invalid_value",
        )
        made = (await http.post("/conversations", json={})).json()
        added = await http.post(f"/conversations/{made['id']}/items", json={"items": [item, bad]})
        assert added.status_code == 400
        assert added.json()["error"]["param"] == "items[1].id"
        assert await listed(http, made["id"]) == []


async def test_more_than_twenty_items_are_refused(store: Store) -> None:
    expected = error(
        "Invalid 'items': array too long. Expected an array with maximum length 20, but got "
        "an array with length 21 instead.",
        "items",
        "array_above_max_length",
    )
    items = [user(f"m{n}") for n in range(21)]
    async with raw_client(wrapped(store)) as http:
        created = await http.post("/conversations", json={"items": items})
        assert (created.status_code, created.json()) == (400, expected)
        made = (await http.post("/conversations", json={})).json()
        added = await http.post(f"/conversations/{made['id']}/items", json={"items": items})
        assert (added.status_code, added.json()) == (400, expected)
        assert await listed(http, made["id"]) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, error("Missing required parameter: 'items'.", "items", "missing_required_parameter")),
        (
            {"items": []},
            error(
                "Invalid 'items': empty array. Expected an array with minimum length 1, but "
                "got an empty array instead.",
                "items",
                "empty_array",
            ),
        ),
        (
            {"items": "hello"},
            error(
                "Invalid type for 'items': expected an array, but got a string instead.",
                "items",
                "invalid_type",
            ),
        ),
        (
            {"items": [user("ok"), 7]},
            error(
                "Invalid type for 'items[1]': expected an object, but got a number instead.",
                "items[1]",
                "invalid_type",
            ),
        ),
        (
            {"items": [{"content": "no role, no type"}]},
            error(
                "Missing required parameter: 'items[0].type'.",
                "items[0].type",
                "missing_required_parameter",
            ),
        ),
    ],
)
async def test_adding_items_needs_one_to_twenty_objects(
    memory_store: Store, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    async with raw_client(wrapped(memory_store)) as http:
        made = (await http.post("/conversations", json={"items": [user("a")]})).json()
        answer = await http.post(f"/conversations/{made['id']}/items", json=body)
        assert (answer.status_code, answer.json()) == (400, expected)
        assert texts(await listed(http, made["id"])) == ["a"]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (
            {f"k{n}": "v" for n in range(17)},
            error(
                "Invalid 'metadata': too many properties. Expected an object with at most 16 "
                "properties, but got an object with 17 properties instead.",
                "metadata",
                "object_above_max_properties",
            ),
        ),
        (
            {"k" * 65: "v"},
            error(
                "Invalid 'metadata': key too long. Expected a key with maximum length 64, but "
                "got a key with length 65 instead.",
                "metadata",
                "string_above_max_length",
            ),
        ),
        (
            {"note": "v" * 513},
            error(
                "Invalid 'metadata.note': string too long. Expected a string with maximum "
                "length 512, but got a string with length 513 instead.",
                "metadata.note",
                "string_above_max_length",
            ),
        ),
        (
            {"n": 1},
            error(
                "Invalid type for 'metadata.n': expected a string, but got a number instead.",
                "metadata.n",
                "invalid_type",
            ),
        ),
        (
            ["a"],
            error(
                "Invalid type for 'metadata': expected an object, but got an array instead.",
                "metadata",
                "invalid_type",
            ),
        ),
    ],
)
async def test_metadata_limits_are_enforced(
    memory_store: Store, metadata: Any, expected: dict[str, Any]
) -> None:
    async with raw_client(wrapped(memory_store)) as http:
        created = await http.post("/conversations", json={"metadata": metadata})
        assert (created.status_code, created.json()) == (400, expected)
        made = (await http.post("/conversations", json={"metadata": {"k": "v"}})).json()
        updated = await http.post(f"/conversations/{made['id']}", json={"metadata": metadata})
        assert (updated.status_code, updated.json()) == (400, expected)
        kept = await http.get(f"/conversations/{made['id']}")
        assert kept.json()["metadata"] == {"k": "v"}


async def test_metadata_at_its_limits_is_kept(store: Store) -> None:
    metadata = {f"{n:02d}" + "k" * 62: "v" * 512 for n in range(16)}
    async with sdk_client(wrapped(store)) as client:
        made = await client.conversations.create(metadata=metadata)
        assert (await client.conversations.retrieve(made.id)).metadata == metadata


async def test_an_update_must_name_metadata(memory_store: Store) -> None:
    async with raw_client(wrapped(memory_store)) as http:
        made = (await http.post("/conversations", json={})).json()
        answer = await http.post(f"/conversations/{made['id']}", json={"items": []})
    assert answer.status_code == 400
    assert answer.json() == error(
        "Missing required parameter: 'metadata'.", "metadata", "missing_required_parameter"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{nope", "We could not parse the JSON body of your request."),
        (b"[]", "The request body must be a JSON object."),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    memory_store: Store, content: bytes, message: str
) -> None:
    async with raw_client(wrapped(memory_store)) as http:
        made = (await http.post("/conversations", json={})).json()
        answers = [
            await http.post("/conversations", content=content),
            await http.post(f"/conversations/{made['id']}", content=content),
            await http.post(f"/conversations/{made['id']}/items", content=content),
        ]
    for answer in answers:
        assert answer.status_code == 400
        body = answer.json()["error"]
        assert body["message"].startswith(message)
        assert (body["type"], body["param"], body["code"]) == (
            "invalid_request_error",
            None,
            "invalid_json",
        )


async def test_a_body_over_the_limit_is_413(memory_store: Store) -> None:
    app = wrapped(memory_store, max_body_bytes=64)
    async with raw_client(app) as http:
        answer = await http.post("/conversations", json={"items": [user("x" * 100)]})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("conversation_id", ["conv_unknown", "resp_123abc", "convX"])
async def test_an_unknown_conversation_is_404_everywhere(
    store: Store, conversation_id: str
) -> None:
    expected = error(f"Conversation with id '{conversation_id}' not found.")
    base = f"/conversations/{conversation_id}"
    async with raw_client(wrapped(store)) as http:
        answers = [
            await http.get(base),
            await http.post(base, json={"metadata": {}}),
            await http.delete(base),
            await http.get(f"{base}/items"),
            await http.post(f"{base}/items", json={"items": [user("x")]}),
            await http.get(f"{base}/items/msg_1"),
            await http.delete(f"{base}/items/msg_1"),
        ]
    for answer in answers:
        assert (answer.status_code, answer.json()) == (404, expected)
        assert answer.headers["content-length"] == str(len(answer.content))


async def test_a_deleted_conversation_is_gone_but_its_items_are_not(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        made = (await http.post("/conversations", json={"items": [user("stays")]})).json()
        [item] = await listed(http, made["id"])
        assert (await http.delete(f"/conversations/{made['id']}")).status_code == 200
        expected = error(f"Conversation with id '{made['id']}' not found.")
        for answer in [
            await http.get(f"/conversations/{made['id']}"),
            await http.delete(f"/conversations/{made['id']}"),
            await http.get(f"/conversations/{made['id']}/items"),
        ]:
            assert (answer.status_code, answer.json()) == (404, expected)
        again = (await http.post("/conversations", json={"items": [{"id": item["id"]}]})).json()
        assert await listed(http, again["id"]) == [item]


async def test_an_item_not_in_the_conversation_is_404(store: Store) -> None:
    async with raw_client(wrapped(store)) as http:
        made = (await http.post("/conversations", json={"items": [user("a"), user("b")]})).json()
        [first, second] = await listed(http, made["id"])
        base = f"/conversations/{made['id']}/items"
        await http.delete(f"{base}/{first['id']}")
        answers = [
            await http.get(f"{base}/{first['id']}"),
            await http.delete(f"{base}/{first['id']}"),
            await http.get(f"{base}/msg_nope"),
        ]
        after = await http.get(f"{base}?after={first['id']}")
        assert await listed(http, made["id"]) == [second]
    for answer, item_id in zip(answers, [first["id"], first["id"], "msg_nope"], strict=True):
        assert (answer.status_code, answer.json()) == (
            404,
            error(f"No item found with id '{item_id}'"),
        )
    assert after.status_code == 404
    assert after.json() == error(f"No item found with id '{first['id']}'", "after")


@pytest.mark.parametrize(
    ("query", "param"), [("limit=0", "limit"), ("limit=101", "limit"), ("order=up", "order")]
)
async def test_bad_list_parameters_are_400(memory_store: Store, query: str, param: str) -> None:
    async with raw_client(wrapped(memory_store)) as http:
        made = (await http.post("/conversations", json={})).json()
        answer = await http.get(f"/conversations/{made['id']}/items?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert answer.json()["error"]["code"] == "invalid_value"


# -- callers, the store, and routes that are not ours ---------------------------------------


async def test_another_callers_conversation_is_not_found(store: Store) -> None:
    app = wrapped(store)
    async with raw_client(app, "sk-alice") as alice, raw_client(app, "sk-bob") as bob:
        made = (await alice.post("/conversations", json={"items": [user("private")]})).json()
        [item] = await listed(alice, made["id"])
        base = f"/conversations/{made['id']}"
        expected = error(f"Conversation with id '{made['id']}' not found.")
        for answer in [
            await bob.get(base),
            await bob.post(base, json={"metadata": {"x": "y"}}),
            await bob.get(f"{base}/items"),
            await bob.post(f"{base}/items", json={"items": [user("intruder")]}),
            await bob.get(f"{base}/items/{item['id']}"),
            await bob.delete(f"{base}/items/{item['id']}"),
            await bob.delete(base),
        ]:
            assert (answer.status_code, answer.json()) == (404, expected)
        stolen = await bob.post("/conversations", json={"items": [{"id": item["id"]}]})
        assert stolen.status_code == 404
        assert stolen.json()["error"]["param"] == "items"
        assert await listed(alice, made["id"]) == [item]
        assert (await alice.get(base)).json()["metadata"] == {}


class FailingStore(MemoryStore):
    """A store whose conversation reads fail as an unreachable backend's would."""

    async def get_conversation(self, owner: str, conversation_id: str) -> Any:
        raise StoreUnavailable("down")

    async def conversation_items(self, owner: str, conversation_id: str) -> Any:
        raise StoreUnavailable("down")


async def test_a_failing_store_is_503() -> None:
    async with raw_client(wrapped(FailingStore())) as http:
        made = (await http.post("/conversations", json={})).json()
        answers = [
            await http.get(f"/conversations/{made['id']}"),
            await http.get(f"/conversations/{made['id']}/items"),
            await http.post(f"/conversations/{made['id']}/items", json={"items": [user("x")]}),
        ]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json() == {
            "error": {
                "message": "The response store is unavailable; please retry.",
                "type": "server_error",
                "param": None,
                "code": "store_unavailable",
            }
        }


class RecordingApp:
    """The wrapped app: answers 418 and notes each path it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_other_routes_and_methods_reach_the_app(memory_store: Store) -> None:
    inner = RecordingApp()
    app = ResponsesStateMiddleware(inner, store=memory_store)
    requests = [
        ("GET", "/v1/conversations"),
        ("PUT", "/v1/conversations/conv_1"),
        ("GET", "/v1/conversationsx"),
        ("GET", "/v1/conversations/conv_1/other"),
        ("PATCH", "/v1/conversations/conv_1/items"),
        ("GET", "/v1/conversations//items"),
        ("GET", "/v1/conversations/conv_1/items/msg_1/more"),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as h:
        for method, path in requests:
            assert (await h.request(method, path)).status_code == 418
    assert inner.seen == requests
