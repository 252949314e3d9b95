"""Every example, served by real uvicorn, holds a conversation with the official SDK."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from ._servers import serve

EXAMPLES = [
    ("examples.fastapi_app", "app"),
    ("examples.starlette_app", "app"),
    ("examples.django_asgi", "application"),
    ("examples.uvicorn_oneliner", "app"),
]


@pytest.fixture(params=EXAMPLES, ids=[module.split(".")[1] for module, _ in EXAMPLES])
def client(request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
    """An SDK client talking to one example app over a real socket."""
    module, attribute = request.param
    app = getattr(importlib.import_module(module), attribute)
    with (
        serve(app) as base_url,
        openai.OpenAI(base_url=base_url + "/v1", api_key="sk-example", max_retries=0) as sdk,
    ):
        yield sdk


def reply(response: Any) -> str:
    """The reply text, lower-cased: the FastAPI, Starlette and Django models shout."""
    text: str = response.output_text
    return text.lower()


def test_example_replays_the_first_turn_into_the_second(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="hello there")
    second = client.responses.create(model="m", input="and again", previous_response_id=first.id)

    assert reply(first) == "[1 items] hello there"
    assert reply(second) == "[3 items] and again"  # user, assistant, user
    assert second.previous_response_id == first.id
    assert second.id != first.id


def test_example_serves_stored_responses_and_their_input_items(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="hello there")
    second = client.responses.create(model="m", input="and again", previous_response_id=first.id)

    stored = client.responses.retrieve(second.id)
    items = client.responses.input_items.list(second.id)

    assert stored.id == second.id
    assert stored.previous_response_id == first.id
    assert reply(stored) == "[3 items] and again"
    assert len(items.data) == 3


def test_example_streams_a_turn_onto_a_chain(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="hello there")
    deltas = []
    with client.responses.stream(
        model="m", input="stream this please", previous_response_id=first.id
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    third = client.responses.create(model="m", input="after", previous_response_id=final.id)

    assert len(deltas) > 1
    assert "".join(deltas) == final.output_text
    assert reply(final) == "[3 items] stream this please"
    assert final.previous_response_id == first.id
    assert client.responses.retrieve(final.id).output_text == final.output_text
    assert reply(third) == "[5 items] after"
