"""GET, DELETE and input_items on stored responses, through the official SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from state_middleware import ResponsesStateMiddleware, Store
from state_middleware.testing import ScriptedResponsesApp

from .conftest import sdk_client

pytestmark = pytest.mark.anyio


async def build_chain(client: openai.AsyncOpenAI, turns: int) -> list[str]:
    ids: list[str] = []
    for n in range(turns):
        kwargs = {"previous_response_id": ids[-1]} if ids else {}
        made = await client.responses.create(model="m", input=f"u{n}", **kwargs)  # type: ignore[arg-type]
        ids.append(made.id)
    return ids


async def test_retrieve_returns_the_stored_response_object(store: Store) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    async with sdk_client(app) as client:
        made = await client.responses.create(model="m", input="hello", metadata={"a": "b"})
        fetched = await client.responses.retrieve(made.id)
    assert fetched.model_dump() == made.model_dump()


async def test_delete_answers_deleted_then_not_found(store: Store) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    async with (
        sdk_client(app) as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        made = await client.responses.create(model="m", input="x")
        deleted = await http.delete(
            f"/v1/responses/{made.id}", headers={"authorization": "Bearer sk-test"}
        )
        assert deleted.status_code == 200
        assert deleted.json() == {"id": made.id, "object": "response.deleted", "deleted": True}
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.delete(made.id)
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="m", input="y", previous_response_id=made.id)


async def test_deleting_a_response_keeps_its_descendants_whole(store: Store) -> None:
    upstream = ScriptedResponsesApp()
    app = ResponsesStateMiddleware(upstream, store=store)
    async with sdk_client(app) as client:
        ids = await build_chain(client, 4)
        await client.responses.delete(ids[1])
        await client.responses.delete(ids[0])
        items = await client.responses.input_items.list(ids[3], order="asc", limit=100)
        more = await client.responses.create(model="m", input="u4", previous_response_id=ids[3])
    assert more.output_text == "[9 items] u4"
    assert [i.content[0].text for i in items.data][:2] == ["u0", "[1 items] u0"]  # type: ignore[union-attr]


async def test_input_items_cover_the_whole_context_and_paginate(store: Store) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    async with sdk_client(app) as client:
        ids = await build_chain(client, 3)
        everything = await client.responses.input_items.list(ids[2], order="asc", limit=100)
        texts = [item.content[0].text for item in everything.data]  # type: ignore[union-attr]
        assert texts == ["u0", "[1 items] u0", "u1", "[3 items] u1", "u2"]
        assert everything.data[0].type == "message"
        assert everything.data[0].content[0].type == "input_text"  # type: ignore[union-attr]
        assert all(item.id for item in everything.data)
        assert everything.first_id == everything.data[0].id
        assert everything.last_id == everything.data[-1].id
        assert everything.has_more is False

        newest_first = await client.responses.input_items.list(ids[2])
        assert [i.id for i in newest_first.data] == [i.id for i in reversed(everything.data)]

        page1 = await client.responses.input_items.list(ids[2], limit=2, order="asc")
        assert page1.has_more is True
        page2 = await client.responses.input_items.list(
            ids[2], limit=2, order="asc", after=page1.last_id
        )
        assert [i.id for i in page1.data + page2.data] == [i.id for i in everything.data[:4]]

        walked = [i.id async for i in client.responses.input_items.list(ids[2], limit=1)]
        assert walked == [i.id for i in reversed(everything.data)]

        again = await client.responses.input_items.list(ids[2], order="asc", limit=100)
        assert [i.id for i in again.data] == [i.id for i in everything.data]  # ids are stable


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("order=up", "order"),
        ("after=msg_nope", "after"),
    ],
)
async def test_input_items_reject_bad_parameters(store: Store, query: str, param: str) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    async with (
        sdk_client(app) as client,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"authorization": "Bearer sk-test"},
        ) as http,
    ):
        made = await client.responses.create(model="m", input="x")
        answer = await http.get(f"/v1/responses/{made.id}/input_items?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("bad_id", ["resp_unknown", "resp_bad%20chars", "x" * 300])
async def test_unknown_ids_are_404_everywhere(store: Store, bad_id: str) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        for method, path in [
            ("GET", f"/v1/responses/{bad_id}"),
            ("DELETE", f"/v1/responses/{bad_id}"),
            ("GET", f"/v1/responses/{bad_id}/input_items"),
        ]:
            answer = await http.request(method, path)
            assert answer.status_code == 404
            assert answer.json()["error"]["type"] == "invalid_request_error"
            assert answer.headers["content-length"] == str(len(answer.content))
