"""Metrics and the per-turn DEBUG line: turns driven through the middleware in process
(the official SDK, raw WebSocket ASGI messages), each counted in a registry of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from state_middleware import (
    MemoryStore,
    ResponsesStateMiddleware,
    Store,
    StoreUnavailable,
    TurnRecord,
    TurnStats,
)
from state_middleware._identity import hash_credentials
from state_middleware._metrics import STORE_OPERATIONS, MeasuredStore
from state_middleware._record import chain_input
from state_middleware.metrics import MetricsEndpoint, PrometheusMetrics
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp

from ._servers import free_port
from ._sync import Gate, soon
from .conftest import sdk_client
from .test_proxy import running, start_proxy

pytestmark = pytest.mark.anyio

SECRET = "the password is swordfish"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def wrap(registry: CollectorRegistry, store: Any = None, **kwargs: Any) -> Any:
    upstream = kwargs.pop("upstream", None) or ScriptedResponsesApp()
    metrics = PrometheusMetrics(registry)
    return ResponsesStateMiddleware(upstream, store, metrics=metrics, **kwargs)


def turns(registry: CollectorRegistry, outcome: str, door: str = "http") -> float | None:
    labels = {"outcome": outcome, "door": door, "upstream": "responses"}
    return registry.get_sample_value("state_middleware_turns_total", labels)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def started(client: openai.AsyncOpenAI, **request: Any) -> tuple[Any, Any, str]:
    """A streamed turn, its first event (``response.created``) read: the stream, the
    iterator of the events still to come, and the response id."""
    stream = await client.responses.create(model="m", stream=True, **request)
    events = aiter(stream)
    created = await anext(events)
    assert created.type == "response.created"
    return stream, events, created.response.id


class WatchedWaits(MemoryStore):
    """Says when a follow-up starts waiting for a pending turn."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, owner: str, response_id: str, timeout: float) -> bool:
        self.waiting.set()
        return await super().wait(owner, response_id, timeout)


async def test_stored_turns_are_counted_with_the_context_they_replayed(
    registry: CollectorRegistry, store: Store
) -> None:
    app = wrap(registry, store)
    async with sdk_client(app) as client:
        first = await client.responses.create(model="m", input="hello")
        await client.responses.create(model="m", input="again", previous_response_id=first.id)
    assert turns(registry, "stored") == 2
    assert value(registry, "state_middleware_turn_seconds_count", door="http", upstream="responses")
    # only the follow-up replays a context: the first turn's input and output
    assert value(registry, "state_middleware_context_items_count") == 1
    assert value(registry, "state_middleware_context_items_sum") == 2
    owner = hash_credentials([(b"authorization", b"Bearer sk-test")])
    chain = await app.store.get_chain(owner, first.id)
    assert value(registry, "state_middleware_context_bytes_sum") == len(chain_input(chain))
    assert value(registry, "state_middleware_store_seconds_count", op="put") == 2
    assert value(registry, "state_middleware_store_seconds_count", op="get_chain") == 1


async def test_a_store_false_turn_is_counted_and_never_stored(
    registry: CollectorRegistry,
) -> None:
    app = wrap(registry)
    async with sdk_client(app) as client:
        await client.responses.create(model="m", input="hello", store=False)
    assert turns(registry, "not_stored") == 1
    assert turns(registry, "stored") is None
    assert value(registry, "state_middleware_store_seconds_count", op="put") is None


async def test_a_turn_through_the_chat_bridge_is_labelled_chat(
    registry: CollectorRegistry,
) -> None:
    app = wrap(registry, upstream=ScriptedChatApp(), upstream_api="chat")
    async with sdk_client(app) as client:
        await client.responses.create(model="m", input="hello")
    labels = {"outcome": "stored", "door": "http", "upstream": "chat"}
    assert registry.get_sample_value("state_middleware_turns_total", labels) == 1


@pytest.mark.parametrize("magic", ["CUT:3", "RESPONSE_FAILED"])
async def test_a_stream_that_fails_is_counted_as_failed(
    registry: CollectorRegistry, magic: str
) -> None:
    app = wrap(registry)
    async with sdk_client(app) as client:
        stream = await client.responses.create(model="m", input=f"hi {magic}", stream=True)
        with contextlib.suppress(openai.APIError):  # raised on an error event
            [event async for event in stream]
    assert turns(registry, "failed") == 1
    assert (
        value(registry, "state_middleware_turn_seconds_count", door="http", upstream="responses")
        is None
    )


class SignallingMetrics(PrometheusMetrics):
    """Says when a turn has been reported."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.reported = asyncio.Event()

    def turn(self, stats: TurnStats) -> None:
        super().turn(stats)
        self.reported.set()


async def test_a_client_leaving_mid_stream_is_counted_as_cancelled(
    registry: CollectorRegistry,
) -> None:
    gate = Gate()
    metrics = SignallingMetrics(registry)
    app = ResponsesStateMiddleware(ScriptedResponsesApp(sleep=gate), metrics=metrics)
    async with sdk_client(app) as client:
        gate.open(2)
        stream, _events, _id = await started(client, input="DELTAS:5")
        await stream.close()
        gate.open(100)
        await soon(metrics.reported.wait(), "the turn being reported")
    assert turns(registry, "cancelled") == 1


async def test_a_previous_response_or_conversation_not_found_is_counted(
    registry: CollectorRegistry,
) -> None:
    app = wrap(registry, pending_timeout=0)
    async with sdk_client(app) as client:
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="m", input="x", previous_response_id="resp_nope")
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="m", input="x", conversation="conv_nope")
    assert turns(registry, "not_found") == 2
    assert value(registry, "state_middleware_context_items_count") == 0


async def test_a_locked_conversation_refuses_the_second_turn(registry: CollectorRegistry) -> None:
    gate = Gate()
    app = wrap(registry, upstream=ScriptedResponsesApp(sleep=gate))
    async with sdk_client(app) as client:
        conversation = await client.conversations.create()
        gate.open(2)
        _stream, events, _id = await started(client, input="DELTAS:3", conversation=conversation.id)
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="m", input="b", conversation=conversation.id)
        gate.open(100)
        [event async for event in events]
    assert value(registry, "state_middleware_conversation_locks_total", result="acquired") == 1
    assert value(registry, "state_middleware_conversation_locks_total", result="refused") == 1
    assert turns(registry, "refused") == 1
    assert turns(registry, "stored") == 1


async def test_a_follow_up_waiting_for_a_running_turn_is_counted(
    registry: CollectorRegistry,
) -> None:
    gate = Gate()
    store = WatchedWaits()
    app = wrap(registry, store, upstream=ScriptedResponsesApp(sleep=gate))
    async with sdk_client(app) as client:
        gate.open(2)
        _stream, events, response_id = await started(client, input="DELTAS:2")
        follow_up = asyncio.ensure_future(
            client.responses.create(model="m", input="next", previous_response_id=response_id)
        )
        await soon(store.waiting.wait(), "the follow-up waiting")
        gate.open(100)
        [event async for event in events]
        await soon(follow_up, "the follow-up")
    assert value(registry, "state_middleware_pending_wait_seconds_count") == 1
    assert turns(registry, "stored") == 2


async def test_a_background_turn_is_counted_and_its_gauges_follow_it(
    registry: CollectorRegistry,
) -> None:
    gate = Gate()
    app = wrap(registry, upstream=ScriptedResponsesApp(sleep=gate))
    async with sdk_client(app) as client:
        stream = await client.responses.create(
            model="m", input="DELTAS:2", background=True, stream=True
        )
        events = aiter(stream)
        gate.open(1)  # response.created of the upstream (not recorded)
        gate.open(1)
        while (await anext(events)).type != "response.in_progress":
            pass
        assert value(registry, "state_middleware_background_running") == 1
        assert value(registry, "state_middleware_background_queued") == 0
        gate.open(100)
        [event async for event in events]
    await soon(asyncio.gather(*app.background.tasks), "the background task ending")
    assert turns(registry, "stored", door="background") == 1
    assert value(registry, "state_middleware_background_running") == 0
    assert value(registry, "state_middleware_store_seconds_count", op="record_events")


async def test_a_websocket_turn_and_its_connection_are_counted(
    registry: CollectorRegistry,
) -> None:
    app = wrap(registry)
    incoming: asyncio.Queue[Any] = asyncio.Queue()
    for message in (
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": '{"type": "response.create", "input": "hi"}'},
    ):
        incoming.put_nowait(message)
    connected: list[float | None] = []

    async def send(message: Any) -> None:
        if message["type"] == "websocket.accept":
            connected.append(value(registry, "state_middleware_websocket_connections"))
        if message["type"] == "websocket.send" and '"response.completed"' in message["text"]:
            incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})

    scope = {"type": "websocket", "path": "/v1/responses", "headers": [], "subprotocols": []}
    await soon(app(scope, incoming.get, send), "the WebSocket session ending")
    assert connected == [1]
    assert value(registry, "state_middleware_websocket_connections") == 0
    assert turns(registry, "stored", door="websocket") == 1


async def test_store_errors_are_counted_by_operation_and_code(
    registry: CollectorRegistry,
) -> None:
    class FailingPuts(MemoryStore):
        async def put(self, owner: str, record: TurnRecord, **kwargs: Any) -> None:
            raise StoreUnavailable("down")

    app = wrap(registry, FailingPuts())
    async with sdk_client(app) as client:
        with pytest.raises(openai.InternalServerError):
            await client.responses.create(model="m", input="hello")
    labels = {"op": "put", "code": "store_unavailable"}
    assert value(registry, "state_middleware_store_errors_total", **labels) == 1
    assert value(registry, "state_middleware_store_seconds_count", op="put") == 1
    assert turns(registry, "store_error") == 1


async def test_the_memory_store_reports_its_bytes_and_evictions(
    registry: CollectorRegistry,
) -> None:
    store = MemoryStore(max_bytes=4000)
    app = wrap(registry, store)
    async with sdk_client(app) as client:
        for n in range(10):
            await client.responses.create(model="m", input=f"turn {n} " + "x" * 300)
    assert store.evictions > 0
    assert value(registry, "state_middleware_memory_store_evictions_total") == store.evictions
    assert value(registry, "state_middleware_memory_store_bytes") == store.size > 0


def test_without_metrics_the_store_is_called_directly() -> None:
    store = MemoryStore()
    plain = ResponsesStateMiddleware(ScriptedResponsesApp(), store)
    assert plain.settings.store is store
    measured = ResponsesStateMiddleware(
        ScriptedResponsesApp(), store, metrics=PrometheusMetrics(CollectorRegistry())
    )
    assert isinstance(measured.settings.store, MeasuredStore)
    assert measured.store is store
    assert {"put", "get_chain", "wait", "record_events"} <= set(STORE_OPERATIONS)


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="state_middleware"):
        yield caplog


async def test_each_turn_logs_one_debug_line_with_ids_and_sizes_and_no_content(
    debug_log: pytest.LogCaptureFixture,
) -> None:
    app = ResponsesStateMiddleware(ScriptedResponsesApp())  # no metrics: still logged
    async with sdk_client(app, api_key="sk-secret-key") as client:
        first = await client.responses.create(model="m", input=SECRET)
        debug_log.clear()
        second = await client.responses.create(
            model="m", input=SECRET, previous_response_id=first.id
        )
    lines = [r.getMessage() for r in debug_log.records if r.getMessage().startswith("turn ")]
    assert len(lines) == 1
    owner = hash_credentials([(b"authorization", b"Bearer sk-secret-key")])
    fields = dict(re.findall(r"(\w+)=(\S+)", lines[0]))
    assert lines[0].startswith(f"turn {second.id} ")
    assert fields["owner"] == owner[:8]
    assert fields["door"] == "http"
    assert fields["upstream"] == "responses"
    assert fields["outcome"] == "stored"
    assert fields["context_items"] == "2"
    assert int(fields["context_bytes"]) > len(SECRET)
    assert {"load_ms", "store_ms", "total_ms"} <= set(fields)
    every_line = "\n".join(r.getMessage() for r in debug_log.records)
    assert "swordfish" not in every_line
    assert "sk-secret-key" not in every_line
    assert owner not in every_line  # a prefix only


async def test_the_metrics_endpoint_serves_the_exposition_and_passes_the_rest(
    registry: CollectorRegistry,
) -> None:
    app = MetricsEndpoint(wrap(registry), "/metrics", registry)
    async with sdk_client(app) as client:
        await client.responses.create(model="m", input="hello")
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        scraped = await http.get("/metrics")
        other = await http.get("/v1/models")  # the scripted app's own 404
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert (
        'state_middleware_turns_total{door="http",outcome="stored",upstream="responses"} 1.0'
        in scraped.text
    )
    assert other.status_code == 404


@pytest.mark.slow
def test_serve_exposes_metrics_on_its_own_path_and_on_a_port_apart(tmp_path: Path) -> None:
    port = free_port()
    options = ("--metrics", "/metrics", "--metrics-port", str(port))
    with running(start_proxy("http://127.0.0.1:9/v1", tmp_path, *options)) as proxy:
        body = {"model": "m", "input": "hello"}
        unreachable = httpx.post(proxy.url + "/v1/responses", json=body, timeout=10)
        scraped = httpx.get(proxy.url + "/metrics", timeout=10)
        apart = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert unreachable.status_code == 502
    line = 'state_middleware_turns_total{door="http",outcome="failed",upstream="responses"} 1.0'
    for reply in (scraped, apart):
        assert reply.status_code == 200
        assert line in reply.text.splitlines()
        assert "process_cpu_seconds_total" in reply.text  # the global registry's own
