"""Raw-ASGI protocol tests: no buffering, store-before-terminal, disconnects, bodies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from state_middleware import MemoryStore, ResponsesStateMiddleware, TurnRecord

from ._sync import soon

pytestmark = pytest.mark.anyio

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/responses",
    "raw_path": b"/v1/responses",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer k")],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 2),
}


def frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def response_obj(status: str, output: list[Any]) -> dict[str, Any]:
    return {
        "id": "resp_up",
        "object": "response",
        "status": status,
        "output": output,
        "created_at": 1,
        "model": "m",
    }


ITEM = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "hi", "annotations": []}],
}

EVENTS = [
    {"type": "response.created", "sequence_number": 0, "response": response_obj("in_progress", [])},
    {
        "type": "response.output_item.added",
        "sequence_number": 1,
        "output_index": 0,
        "item": {**ITEM, "status": "in_progress", "content": []},
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 2,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
    },
    {"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": ITEM},
    {
        "type": "response.completed",
        "sequence_number": 4,
        "response": response_obj("completed", [ITEM]),
    },
]


class GatedApp:
    """Sends one SSE event each time the test opens the gate, then ends the body at the
    next opening. ``parked`` is set while it waits at the gate, so everything it sent
    before has been through ``send``."""

    def __init__(self, frames: list[bytes], split: bool = False) -> None:
        self.frames = frames
        self.split = split
        self.gate = asyncio.Semaphore(0)
        self.parked = asyncio.Event()
        self.received: list[Any] = []

    async def step(self) -> None:
        """Open the gate once and return when the app waits at it again (or ended)."""
        self.parked.clear()
        self.gate.release()
        await self.parked.wait()

    async def _wait_at_the_gate(self) -> None:
        self.parked.set()
        await self.gate.acquire()
        self.parked.clear()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.received.append(await receive())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for data in self.frames:
            await self._wait_at_the_gate()
            if self.split:
                middle = len(data) // 2
                await send({"type": "http.response.body", "body": data[:middle], "more_body": True})
                await send({"type": "http.response.body", "body": data[middle:], "more_body": True})
            else:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await self._wait_at_the_gate()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.parked.set()  # ended: nothing more to wait for


class LoggingStore(MemoryStore):
    def __init__(self, log: list[Any]) -> None:
        super().__init__()
        self.log = log

    async def put(self, owner: str, record: TurnRecord, **options: Any) -> None:
        self.log.append(("put", record.id))
        await super().put(owner, record, **options)


def body_receive(*chunks: bytes) -> Any:
    """A ``receive`` giving ``chunks``, then waiting for ``receive.disconnect()``;
    ``receive.waiting`` is set once someone waits there."""
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    disconnected = asyncio.Event()
    waiting = asyncio.Event()

    async def receive() -> Any:
        if queue:
            return queue.pop(0)
        waiting.set()
        await disconnected.wait()
        return {"type": "http.disconnect"}

    receive.disconnect = disconnected.set  # type: ignore[attr-defined]
    receive.waiting = waiting  # type: ignore[attr-defined]
    return receive


@pytest.mark.parametrize("split", [False, True])
async def test_each_event_is_forwarded_before_the_app_produces_the_next(split: bool) -> None:
    log: list[Any] = []
    app = GatedApp([frame(e) for e in EVENTS], split=split)
    store = LoggingStore(log)
    middleware = ResponsesStateMiddleware(app, store=store)

    async def send(message: Any) -> None:
        log.append(message)

    receive = body_receive(b'{"model":"m",', b'"input":"hi","stream":true}')
    task = asyncio.ensure_future(middleware(dict(SCOPE), receive, send))
    await soon(app.parked.wait(), "the app starting its reply")
    assert [m["type"] for m in log] == ["http.response.start"]
    assert all(k != b"content-length" for k, _ in log[0]["headers"])
    for index, event in enumerate(EVENTS):
        await soon(app.step(), f"the app sending {event['type']}")
        # The app waits at the gate again: what it sent is all the client may have.
        bodies = [
            m["body"] for m in log if isinstance(m, dict) and m["type"] == "http.response.body"
        ]
        text = b"".join(bodies)
        assert text.count(b"\n\n") == index + 1, f"event {event['type']} was held back"
    await soon(app.step(), "the app ending the body")
    await soon(task, "the middleware returning")
    puts = [i for i, m in enumerate(log) if isinstance(m, tuple)]
    terminal = next(
        i
        for i, m in enumerate(log)
        if isinstance(m, dict) and b"response.completed" in m.get("body", b"")
    )
    assert len(puts) == 1
    assert puts[0] < terminal  # stored before the terminal event was sent
    assert app.received[0]["body"] == b'{"model":"m","input":"hi","stream":true}'


async def test_ids_are_stamped_into_every_response_object_and_nothing_else_changes() -> None:
    app = GatedApp([frame(e) for e in EVENTS])
    for _ in range(len(EVENTS) + 1):  # every event, and the end of the body
        app.gate.release()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    middleware = ResponsesStateMiddleware(app)
    await middleware(dict(SCOPE), body_receive(b'{"input":"hi","stream":true}'), send)
    text = b"".join(m.get("body", b"") for m in sent[1:])
    frames = [f for f in text.split(b"\n\n") if f]
    assert len(frames) == len(EVENTS)
    ids = set()
    for raw, original in zip(frames, EVENTS, strict=True):
        event_line, data_line = raw.split(b"\n")
        assert event_line == f"event: {original['type']}".encode()
        event = json.loads(data_line.removeprefix(b"data: "))
        if "response" in event:
            ids.add(event["response"].pop("id"))
            assert event["response"].pop("previous_response_id") is None
            assert event["response"].pop("store") is True
            original = {
                **original,
                "response": {k: v for k, v in original["response"].items() if k != "id"},
            }
            assert event == original
        else:
            assert raw + b"\n\n" == frame(original)  # untouched, byte for byte
    assert len(ids) == 1


async def test_disconnect_while_reading_the_body_calls_nothing() -> None:
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    messages = [
        {"type": "http.request", "body": b'{"in', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        raise AssertionError("nothing may be sent")

    await ResponsesStateMiddleware(app)(dict(SCOPE), receive, send)
    assert not called


async def test_after_the_body_the_app_waits_on_the_real_receive() -> None:
    seen: list[Any] = []
    receive = body_receive(b'{"input":"x","stream":true}')

    async def app(scope: Any, app_receive: Any, send: Any) -> None:
        seen.append(await app_receive())
        waiter = asyncio.ensure_future(app_receive())
        waiting = asyncio.ensure_future(receive.waiting.wait())
        await soon(
            asyncio.wait({waiter, waiting}, return_when=asyncio.FIRST_COMPLETED),
            "the app's receive answering or reaching the server's",
        )
        # It reached the server's receive: no fake empty body, no premature disconnect.
        assert waiting.done()
        assert not waiter.done()
        receive.disconnect()
        seen.append(await waiter)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": frame(EVENTS[4]), "more_body": False})

    store = MemoryStore()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await ResponsesStateMiddleware(app, store=store)(dict(SCOPE), receive, send)
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]
    assert store.size == 0  # the client left before the terminal event: nothing kept


async def test_unknown_message_types_are_forwarded() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "trailers": True,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": frame(EVENTS[0]), "more_body": False})
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await ResponsesStateMiddleware(app)(dict(SCOPE), body_receive(b'{"input":"x"}'), send)
    assert sent[-1]["type"] == "http.response.trailers"


async def test_compressed_replies_pass_through_and_are_not_stored() -> None:
    body = b"\x1f\x8b compressed bytes"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-encoding", b"gzip"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    store = MemoryStore()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await ResponsesStateMiddleware(app, store=store)(
        dict(SCOPE), body_receive(b'{"input":"x"}'), send
    )
    assert sent[1]["body"] == body
    assert store.size == 0


async def test_json_replies_get_a_correct_content_length_after_stamping() -> None:
    reply = json.dumps(response_obj("completed", [ITEM])).encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(reply)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply[:10], "more_body": True})
        await send({"type": "http.response.body", "body": reply[10:]})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await ResponsesStateMiddleware(app)(dict(SCOPE), body_receive(b'{"input":"x"}'), send)
    start, body = sent
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
    assert json.loads(body["body"])["id"].startswith("resp_")
