"""The standalone proxy: ``python -m state_middleware serve`` and ``proxy.create_app``.

Two levels. Real processes on 127.0.0.1 (the proxy started with its command line, the
scripted upstream under ``python -m uvicorn``) driven by the official SDK; and the same
app in process, pointed at an upstream served by uvicorn in a thread, where the test
can read what the upstream received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from state_middleware import cli
from state_middleware._forward import UNREACHABLE_MESSAGE
from state_middleware.proxy import UPSTREAM_ENV, create_app
from state_middleware.testing import ScriptedResponsesApp, StreamingASGITransport

from ._redis import RedisServer
from ._servers import free_port, listening, serve, wait_until_serving
from ._ws import text_of, turn, ws_url

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-proxy-test"
EVENT_TIMEOUT = 5.0


# -- real processes -------------------------------------------------------------------


class Process:
    """A server subprocess on a free 127.0.0.1 port; its output goes to a file."""

    def __init__(self, command: list[str], port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=_env()
            )
        try:
            wait_until_serving(lambda: listening(port), self.process, str(command))
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
                self.process.kill()
                self.process.wait()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def start_upstream(factory: str, log_dir: Path) -> Process:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", f"tests.upstream_app:{factory}"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return Process(command, port, log_dir / f"upstream-{factory}-{port}.log")


def start_proxy(upstream: str, log_dir: Path, *options: str) -> Process:
    port = free_port()
    command = [sys.executable, "-m", "state_middleware", "serve", "--upstream", upstream]
    command += ["--port", str(port), "--log-level", "warning", *options]
    return Process(command, port, log_dir / f"proxy-{port}.log")


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-logs")


@pytest.fixture(scope="module")
def upstream(log_dir: Path) -> Iterator[Process]:
    """The scripted upstream (Responses and Chat Completions) in its own process."""
    with running(start_upstream("combined", log_dir)) as process:
        yield process


@pytest.fixture(scope="module")
def proxy(upstream: Process, log_dir: Path) -> Iterator[Process]:
    with running(start_proxy(upstream.url + "/v1", log_dir)) as process:
        yield process


@pytest.fixture(scope="module")
def chat_proxy(upstream: Process, log_dir: Path) -> Iterator[Process]:
    with running(start_proxy(upstream.url + "/v1", log_dir, "--upstream-api", "chat")) as process:
        yield process


@contextlib.contextmanager
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url + "/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


def test_a_chain_through_the_proxy_reaches_the_upstream_with_its_history(proxy: Process) -> None:
    with sdk(proxy.url) as client:
        first = client.responses.create(model="m", input="hello")
        second = client.responses.create(model="m", input="again", previous_response_id=first.id)
    assert first.output_text == "[1 items] hello"
    assert second.output_text == "[3 items] again"
    assert second.previous_response_id == first.id


def test_a_streamed_turn_continues_a_chain(proxy: Process) -> None:
    with sdk(proxy.url) as client:
        first = client.responses.create(model="m", input="hello")
        events = list(
            client.responses.create(
                model="m", input="DELTAS:4", previous_response_id=first.id, stream=True
            )
        )
        deltas = [e for e in events if e.type == "response.output_text.delta"]
        final = events[-1]
        assert final.type == "response.completed"
        third = client.responses.create(
            model="m", input="third", previous_response_id=final.response.id
        )
    assert len(deltas) == 4
    assert third.output_text == "[5 items] third"


def test_stored_responses_are_retrieved_and_deleted_through_the_proxy(proxy: Process) -> None:
    with sdk(proxy.url) as client:
        created = client.responses.create(model="m", input="keep me")
        assert client.responses.retrieve(created.id).output_text == "[1 items] keep me"
        items = client.responses.input_items.list(created.id)
        assert [item.type for item in items.data] == ["message"]
        client.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(created.id)


@pytest.mark.anyio
async def test_websocket_mode_is_served_and_chains_store_false_turns(proxy: Process) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with connect(ws_url(proxy.url), additional_headers=headers) as ws:
        first = await turn(ws, input="hello", store=False)
        first_id = first[-1]["response"]["id"]
        second = await turn(ws, input="again", store=False, previous_response_id=first_id)
    assert text_of(first[-1]["response"]) == "[1 items] hello"
    assert text_of(second[-1]["response"]) == "[3 items] again"


@pytest.mark.anyio
async def test_no_websocket_refuses_the_handshake_with_426(
    upstream: Process, log_dir: Path
) -> None:
    with running(start_proxy(upstream.url + "/v1", log_dir, "--no-websocket")) as refusing:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(refusing.url)):
                pass  # pragma: no cover - the handshake fails
        with sdk(refusing.url) as client:  # HTTP is served as ever
            answered = client.responses.create(model="m", input="hello")
    assert refused.value.response.status_code == 426
    assert answered.output_text == "[1 items] hello"


def test_chat_mode_translates_and_chains(chat_proxy: Process) -> None:
    with sdk(chat_proxy.url) as client:
        first = client.responses.create(model="m", input="hello")
        second = client.responses.create(
            model="m", input="again", previous_response_id=first.id, stream=True
        )
        final = list(second)[-1]
    assert first.output_text == "[1 messages] hello"
    assert final.type == "response.completed"
    assert final.response.output_text == "[3 messages] again"


def test_chat_completions_pass_through_a_responses_mode_proxy(proxy: Process) -> None:
    with sdk(proxy.url) as client:
        completion = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content == "[1 messages] hi"


def test_the_upstreams_own_errors_pass_through(proxy: Process) -> None:
    with sdk(proxy.url) as client, pytest.raises(openai.NotFoundError) as caught:
        client.models.list()
    assert caught.value.body == {
        "message": "Invalid URL (GET /v1/models)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_an_upstream_nobody_listens_on_is_a_502(log_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with (
        running(start_proxy(dead, log_dir)) as process,
        sdk(process.url) as client,
        pytest.raises(openai.InternalServerError) as caught,
    ):
        client.responses.create(model="m", input="hello")
    assert caught.value.status_code == 502
    body: Any = caught.value.body
    assert body["code"] == "upstream_unreachable"
    assert body["type"] == "server_error"
    assert body["param"] is None
    assert dead in body["message"]


def test_a_chain_in_redis_survives_a_proxy_restart(upstream: Process, log_dir: Path) -> None:
    with RedisServer() as redis:
        options = ("--redis-url", redis.url)
        with (
            running(start_proxy(upstream.url + "/v1", log_dir, *options)) as first_proxy,
            sdk(first_proxy.url) as client,
        ):
            first = client.responses.create(model="m", input="hello")
        with (
            running(start_proxy(upstream.url + "/v1", log_dir, *options)) as second_proxy,
            sdk(second_proxy.url) as client,
        ):
            second = client.responses.create(
                model="m", input="again", previous_response_id=first.id
            )
    assert second.output_text == "[3 items] again"


# -- an upstream this process can watch ---------------------------------------------


class TrickyUpstream:
    """Routes that misbehave on purpose; records what it saw.

    ``/v1/slow``: never answers; returns when the client (the proxy) leaves.
    ``/v1/drip``: streams one frame, then nothing until ``http.disconnect``, when it sets
    ``disconnected``. ``/v1/burst``: streams 20000 small frames as fast as it can and
    releases ``burst_left`` when it sees the client leave before the end.
    ``/v1/gate``: streams ``first``, waits for ``gate``, then streams ``second``.
    ``/v1/upload``: reads the body, setting ``first_chunk`` on its first chunk, then
    answers with the size read. ``.../echo`` (any prefix): answers with the request as
    JSON. ``/v1/chunked``: a chunked reply with a ``keep-alive`` header.
    ``POST /v1/responses`` with input ``STALL``: streams ``response.created`` and stalls
    until the client leaves.
    Anything else goes to a ``ScriptedResponsesApp`` (``self.scripted``).
    """

    def __init__(self) -> None:
        self.scripted = ScriptedResponsesApp()
        self.disconnected = threading.Event()
        self.burst_left = threading.Semaphore(0)
        self.gate = threading.Event()
        self.first_chunk = threading.Event()
        self.echoed: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        route = {
            "slow": self._slow,
            "drip": self._drip,
            "burst": self._burst,
            "gate": self._gate,
            "upload": self._upload,
            "echo": self._echo,
            "chunked": self._chunked,
        }.get(scope["path"].rsplit("/", 1)[-1])
        if route is not None:
            await route(scope, receive, send)
            return
        body = await _read(receive)
        if scope["path"] == "/v1/responses" and b'"STALL"' in body:
            await self._stall(receive, send)
            return
        replayed = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def replay() -> Any:
            return next(replayed, None) or await receive()

        await self.scripted(scope, replay, send)

    async def _slow(self, scope: Any, receive: Any, send: Any) -> None:
        await _wait_for_disconnect(receive)  # slower than any read timeout

    async def _drip(self, scope: Any, receive: Any, send: Any) -> None:
        await _start(send, b"text/event-stream")
        await _chunk(send, b"data: 0\n\n")
        await _wait_for_disconnect(receive)
        self.disconnected.set()

    async def _burst(self, scope: Any, receive: Any, send: Any) -> None:
        await _start(send, b"text/event-stream")
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            for n in range(20_000):
                if watcher.done():
                    self.burst_left.release()
                    return
                await _chunk(send, b"data: %d\n\n" % n)
                await asyncio.sleep(0)  # a yield, so the watcher runs: no wait for anything
            await _chunk(send, b"", more=False)
        finally:
            watcher.cancel()

    async def _gate(self, scope: Any, receive: Any, send: Any) -> None:
        await _start(send, b"text/plain")
        await _chunk(send, b"first")
        await anyio.to_thread.run_sync(self.gate.wait, EVENT_TIMEOUT)
        await _chunk(send, b"second", more=False)

    async def _upload(self, scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if size:
                self.first_chunk.set()
            if not message.get("more_body", False):
                break
        await _reply(send, 200, str(size).encode())

    async def _echo(self, scope: Any, receive: Any, send: Any) -> None:
        body = await _read(receive)
        seen = {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query_string": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "body": body.decode(),
            "client_port": scope["client"][1],
        }
        self.echoed.append(seen)
        await _reply(send, 200, msgspec.json.encode(seen), b"application/json")

    async def _chunked(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"keep-alive", b"timeout=5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _chunk(send, b"a")
        await _chunk(send, b"b", more=False)

    async def _stall(self, receive: Any, send: Any) -> None:
        await _start(send, b"text/event-stream")
        created = {"type": "response.created", "sequence_number": 0, "response": {}}
        created["response"] = {"id": "resp_up", "object": "response", "status": "in_progress"}
        await _chunk(
            send, b"event: response.created\ndata: " + msgspec.json.encode(created) + b"\n\n"
        )
        await _wait_for_disconnect(receive)  # the proxy's read timeout ends it


async def _wait_for_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _start(send: Any, content_type: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )


async def _chunk(send: Any, body: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _reply(send: Any, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


@pytest.fixture(scope="module")
def tricky() -> Iterator[tuple[TrickyUpstream, str]]:
    app = TrickyUpstream()
    with serve(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def tricky_proxy(tricky: tuple[TrickyUpstream, str], log_dir: Path) -> Iterator[Process]:
    _, url = tricky
    with running(start_proxy(url + "/v1", log_dir, "--read-timeout", "0.5")) as process:
        yield process


def test_an_upstream_slower_than_the_read_timeout_is_a_504(tricky_proxy: Process) -> None:
    response = httpx.get(tricky_proxy.url + "/v1/slow", timeout=10)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert error["type"] == "server_error"
    assert error["param"] is None
    assert "0.5 seconds" in error["message"]


def test_a_stall_after_the_reply_started_ends_it_and_stores_nothing(
    tricky_proxy: Process,
) -> None:
    with sdk(tricky_proxy.url) as client:
        events = list(client.responses.create(model="m", input="STALL", stream=True))
        assert [event.type for event in events] == ["response.created"]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(events[0].response.id)


def test_a_client_leaving_mid_stream_closes_the_upstream_stream(
    tricky: tuple[TrickyUpstream, str], tricky_proxy: Process
) -> None:
    upstream_app, _ = tricky
    upstream_app.disconnected.clear()
    with httpx.stream("GET", tricky_proxy.url + "/v1/drip", timeout=10) as response:
        assert next(response.iter_raw()).startswith(b"data: 0")
    assert upstream_app.disconnected.wait(EVENT_TIMEOUT)


def test_a_client_leaving_a_fast_stream_is_noticed_at_once(
    tricky: tuple[TrickyUpstream, str], tricky_proxy: Process
) -> None:
    """Chunks httpx already holds arrive without a pause; the proxy still yields after
    each, so it stops after one write to the dead socket (asyncio logs from the fifth)."""
    upstream_app, _ = tricky
    for _ in range(3):
        with httpx.stream("GET", tricky_proxy.url + "/v1/burst", timeout=10) as response:
            assert next(response.iter_raw()).startswith(b"data: 0")
        # The proxy writes to the dead socket before it drops the upstream stream.
        assert upstream_app.burst_left.acquire(timeout=EVENT_TIMEOUT), "the proxy read on"
    assert "socket.send() raised exception" not in tricky_proxy.output()


# -- in process ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process(upstream_url: str, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``create_app(upstream=...)`` in this event loop."""
    app = create_app(upstream=upstream_url, **options)
    try:
        async with httpx.AsyncClient(
            transport=StreamingASGITransport(app), base_url="http://proxy", timeout=10
        ) as http:
            yield http
    finally:
        await app.app.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_authorization_and_end_to_end_headers_reach_the_upstream(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    upstream_app, url = tricky
    async with in_process(url + "/v1") as http:
        response = await http.post(
            "/v1/responses",
            json={"model": "m", "input": "hello"},
            headers={
                "Authorization": "Bearer sk-secret",
                "X-Custom": "kept",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "named by connection",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic cHJveHk=",
                "Upgrade": "h2c",
                "Accept-Encoding": "gzip",
            },
        )
    assert response.status_code == 200
    seen = upstream_app.scripted.requests[-1].headers
    assert seen["authorization"] == "Bearer sk-secret"
    assert seen["x-custom"] == "kept"
    assert seen["host"] == url.removeprefix("http://")
    assert seen["accept-encoding"] == "identity"
    for name in ("x-hop", "keep-alive", "te", "proxy-authorization", "upgrade", "connection"):
        assert name not in seen
    assert int(seen["content-length"]) == len(upstream_app.scripted.requests[-1].raw_body)


@pytest.mark.anyio
async def test_hop_by_hop_headers_of_the_reply_are_dropped(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    _, url = tricky
    async with in_process(url + "/v1") as http:
        response = await http.get("/v1/chunked")
    assert response.content == b"ab"
    assert response.headers["content-type"] == "text/plain"
    assert "keep-alive" not in response.headers
    assert "transfer-encoding" not in response.headers  # the upstream's chunking


@pytest.mark.anyio
async def test_a_head_request_gets_the_headers_and_no_body(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    upstream_app, url = tricky
    async with in_process(url + "/v1") as http:
        response = await http.head("/v1/echo")
        after = await http.get("/v1/echo")  # the connection is still usable
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0
    assert after.json()["method"] == "GET"
    assert upstream_app.echoed[-2]["method"] == "HEAD"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("base", "path", "expected_path", "expected_query"),
    [
        ("/v1", "/v1/echo?limit=2&after=a%2Fb", "/v1/echo", "limit=2&after=a%2Fb"),
        ("/api/v1", "/v1/echo", "/api/v1/echo", ""),
        ("", "/v1/echo", "/echo", ""),
        ("/v1", "/echo", "/v1/echo", ""),  # outside the prefix: appended whole
    ],
)
async def test_the_prefix_is_swapped_for_the_upstream_base_url(
    tricky: tuple[TrickyUpstream, str],
    base: str,
    path: str,
    expected_path: str,
    expected_query: str,
) -> None:
    upstream_app, url = tricky
    async with in_process(url + base) as http:
        await http.get(path)
    seen = upstream_app.echoed[-1]
    assert seen["raw_path"] == expected_path
    assert seen["query_string"] == expected_query


def test_encoded_paths_and_queries_are_passed_on_as_sent(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    _, url = tricky
    app = create_app(upstream=url + "/v1")
    forward: Any = app.app
    scope = {"path": "/v1/files/a/b", "raw_path": b"/v1/files/a%2Fb", "query_string": b"q=%20"}
    assert forward.upstream_url(scope) == url + "/v1/files/a%2Fb?q=%20"
    rooted = {**scope, "root_path": "/mnt", "raw_path": b"/mnt/v1/files/a%2Fb"}
    assert forward.upstream_url(rooted) == url + "/v1/files/a%2Fb?q=%20"
    no_raw = {"path": "/v1/a b", "query_string": b""}
    assert forward.upstream_url(no_raw) == url + "/v1/a%20b"
    not_ascii = {"raw_path": "/v1/é".encode(), "query_string": "q=é&r=?".encode()}
    assert forward.upstream_url(not_ascii) == url + "/v1/%C3%A9?q=%C3%A9&r=?"


@pytest.mark.anyio
async def test_upstream_connections_are_kept_alive_and_reused(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    """A reply must be read to its end (httpcore pools a connection only then), and the
    disconnect a server reports once the reply is complete must not cancel that."""
    upstream_app, url = tricky
    async with in_process(url + "/v1") as http:
        for _ in range(2):
            assert (await http.get("/v1/echo")).status_code == 200
            assert (await http.post("/v1/echo", content=b"body")).status_code == 200
            assert (await http.get("/v1/chunked")).content == b"ab"
    ports = {seen["client_port"] for seen in upstream_app.echoed[-4:]}
    assert len(ports) == 1


@pytest.mark.anyio
async def test_request_bodies_are_forwarded_as_they_arrive(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    """The second chunk is only delivered once the upstream has read the first, so a
    proxy that buffered the request body would wait forever."""
    upstream_app, url = tricky
    app = create_app(upstream=url + "/v1")
    for headers in ([(b"content-length", b"10")], [(b"transfer-encoding", b"chunked")]):
        upstream_app.first_chunk.clear()
        status, body = await _call(
            app,
            "POST",
            "/v1/upload",
            headers,
            [b"01234", upstream_app.first_chunk, b"56789"],
        )
        assert (status, body) == (200, b"10")
    await app.app.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_client_leaving_during_its_upload_aborts_the_upstream_request(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    upstream_app, url = tricky
    upstream_app.first_chunk.clear()
    app = create_app(upstream=url + "/v1")
    messages = [
        {"type": "http.request", "body": b"01234", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        if len(messages) == 1:  # the upstream has the first chunk before the client leaves
            assert await anyio.to_thread.run_sync(upstream_app.first_chunk.wait, EVENT_TIMEOUT)
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = _scope("POST", "/v1/upload", [(b"content-length", b"10")])
    await app(scope, receive, send)
    assert sent == []
    await app.app.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_reply_chunks_are_forwarded_as_they_arrive(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    upstream_app, url = tricky
    upstream_app.gate.clear()
    async with in_process(url + "/v1") as http, http.stream("GET", "/v1/gate") as response:
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"first"
        upstream_app.gate.set()
        assert [chunk async for chunk in chunks] == [b"second"]


@pytest.mark.anyio
async def test_an_unreachable_upstream_answers_an_openai_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with in_process(dead, connect_timeout=2) as http:
        response = await http.get("/v1/models")
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message.startswith(UNREACHABLE_MESSAGE.format(dead, ""))
    assert response.json() == {
        "error": {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": "upstream_unreachable",
        }
    }
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.anyio
async def test_a_send_that_raises_closes_the_upstream_stream(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    upstream_app, url = tricky
    upstream_app.disconnected.clear()
    app = create_app(upstream=url + "/v1")
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            raise OSError("client gone")

    await _call(app, "GET", "/v1/drip", [], [], send=send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert await anyio.to_thread.run_sync(upstream_app.disconnected.wait, EVENT_TIMEOUT)
    await app.app.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_pool_is_made_on_first_use_and_closed_at_lifespan_shutdown(
    tricky: tuple[TrickyUpstream, str],
) -> None:
    _, url = tricky
    app = create_app(upstream=url + "/v1")
    forward: Any = app.app
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []
    status, _ = await _call(app, "GET", "/v1/echo", [], [])
    assert status == 200
    pool = forward.pool()
    assert forward.pool() is pool
    assert len(pool._pool.connections) == 1  # kept alive

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert pool._pool.connections == []
    assert forward.pool() is not pool
    await forward.aclose()


@pytest.mark.anyio
async def test_upstream_sockets_have_tcp_nodelay(tricky: tuple[TrickyUpstream, str]) -> None:
    """asyncio already disables Nagle on every TCP socket it makes (so does a plain
    httpx client), and the proxy's pool asks for it explicitly too."""
    _, url = tricky
    app = create_app(upstream=url + "/v1")
    forward: Any = app.app
    async with httpx.AsyncClient() as plain, plain.stream("GET", url + "/v1/echo") as response:
        sock = response.extensions["network_stream"].get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    request = forward.upstream_request({"method": "GET", "path": "/v1/echo", "headers": []}, None)
    response = await forward.pool().handle_async_request(request)
    sock = response.extensions["network_stream"].get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await response.aclose()
    await forward.aclose()


@pytest.mark.anyio
async def test_websockets_other_than_responses_are_refused() -> None:
    app = create_app(upstream="http://127.0.0.1:1/v1")
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    # ({prefix}/responses is the middleware's WebSocket mode: served, not forwarded)
    scope = {"type": "websocket", "path": "/v1/realtime", "headers": []}
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["type"] == "websocket.close"


async def _call(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: list[bytes | threading.Event],
    send: Any = None,
) -> tuple[int, bytes]:
    """Call ``app`` with a raw scope. ``body`` items are chunks, or events to wait for
    before the next chunk (no chunks: one empty ``http.request``); after the body,
    ``receive`` waits for the response to end, then reports a disconnect."""
    pieces = list(body) or [b""]
    done = asyncio.Event()
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Any:
        while pieces and isinstance(pieces[0], threading.Event):
            event = pieces.pop(0)
            assert isinstance(event, threading.Event)
            assert await anyio.to_thread.run_sync(event.wait, EVENT_TIMEOUT), "never read"
        if pieces:
            chunk = pieces.pop(0)
            assert isinstance(chunk, bytes)
            return {"type": "http.request", "body": chunk, "more_body": bool(pieces)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def record(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(_scope(method, path, headers), receive, send or record)
    return status, b"".join(chunks)


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"proxy"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("proxy", 80),
    }


# -- configuration and command line ---------------------------------------------------


def test_the_factory_reads_the_upstream_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(UPSTREAM_ENV, raising=False)
    with pytest.raises(ValueError, match=UPSTREAM_ENV):
        create_app()
    monkeypatch.setenv(UPSTREAM_ENV, "http://127.0.0.1:9/v1")
    forward: Any = create_app().app
    assert forward.upstream == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("bad", ["ftp://host/v1", "http:///v1", "http://h/v1?x=1", "nonsense"])
def test_bad_upstream_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="upstream"):
        create_app(upstream=bad)


SERVE_OPTIONS = (
    "--upstream",
    "--upstream-api",
    "--connect-timeout",
    "--read-timeout",
    "--host",
    "--port",
    "--prefix",
    "--log-level",
    "--access-log",
    "--metrics",
    "--metrics-port",
    "--no-websocket",
    "--redis-url",
    "--ttl",
    "--max-bytes",
    "--max-body-bytes",
    "--pending-timeout",
    "--system-role",
    "--reasoning-field",
    "--max-tokens-field",
    "--unsupported-tools",
)


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["serve", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    usage = text.split("\n\n")[0]
    assert set(re.findall(r"--[a-z-]+", usage)) == set(SERVE_OPTIONS)
    for option in SERVE_OPTIONS:  # each one explained in its own entry
        assert re.search(rf"^  {option}\b.*\n?.*\w", text, re.MULTILINE), option
    assert "(default: 127.0.0.1)" in text


def test_max_bytes_and_redis_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(
            ["serve", "--upstream", "http://h/v1", "--redis-url", "redis://h", "--max-bytes", "9"]
        )
    assert caught.value.code == 2
    assert "--max-bytes" in capsys.readouterr().err


def test_serve_without_uvicorn_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert cli.main(["serve", "--upstream", "http://h/v1"]) == 1
    assert 'pip install "state-middleware[serve]"' in capsys.readouterr().err
