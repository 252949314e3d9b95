"""A kept-alive upstream connection that died is retried once, on a new connection.

uvicorn closes a connection, without ``Connection: close``, when an app raises after its
reply started; the proxy may already have sent the next request on it. Two upstreams:
uvicorn serving ``DroppingUpstream`` in a thread (that real behaviour, gated so that the
close always lands on the next request), and a raw TCP server in the test's event loop for
what uvicorn never does (close a new connection unanswered, answer garbage).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from state_middleware import _forward_retry
from state_middleware.proxy import create_app

from ._servers import serve
from .test_proxy import EVENT_TIMEOUT, _call, _read, _reply, in_process

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


class DroppingUpstream:
    """Routes that leave the proxy holding a dead kept-alive connection.

    ``/v1/crash``: answers 500 in full, then raises once the next request on the same
    connection has arrived, so uvicorn closes the connection under that request.
    ``/v1/cut``: streams ``partial``, then raises: the reply ends early.
    ``/v1/echo``: on a connection whose crash is pending, it reads one body message, sets
    ``doomed``, and waits to be cut off; elsewhere it answers 200 with the body it read.
    ``seen`` holds (path, client port) for every request.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.doomed = threading.Event()
        self.doomed_port = 0
        self.next_arrived = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        port: int = scope["client"][1]
        self.seen.append((scope["path"], port))
        if scope["path"] == "/v1/crash":
            await _read(receive)
            self.doomed_port = port
            self.next_arrived = asyncio.Event()
            await _reply(send, 500, b"boom")
            await asyncio.wait_for(self.next_arrived.wait(), EVENT_TIMEOUT)
            raise RuntimeError("unhandled, after the reply was sent")
        if scope["path"] == "/v1/cut":
            await _read(receive)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("unhandled, in the middle of the reply")
        if port == self.doomed_port:
            await receive()
            self.doomed.set()
            self.next_arrived.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await _reply(send, 200, await _read(receive))

    def ports(self, path: str) -> list[int]:
        return [port for seen_path, port in self.seen if seen_path == path]


@pytest.fixture(scope="module")
def dropping() -> Iterator[tuple[DroppingUpstream, str]]:
    app = DroppingUpstream()
    with serve(app) as url:
        yield app, url


async def test_the_request_after_an_upstream_crash_is_sent_again_on_a_new_connection(
    dropping: tuple[DroppingUpstream, str],
) -> None:
    upstream, url = dropping
    upstream.seen.clear()
    async with in_process(url + "/v1") as http:
        crashed = await http.get("/v1/crash")
        after = await http.post("/v1/echo", content=b"the next caller")
    assert crashed.status_code == 500
    assert (after.status_code, after.content) == (200, b"the next caller")
    [crash_port] = upstream.ports("/v1/crash")
    first, retried = upstream.ports("/v1/echo")
    assert first == crash_port  # the kept-alive connection was reused, and died
    assert retried != crash_port


async def test_a_streamed_request_body_is_sent_again_in_full(
    dropping: tuple[DroppingUpstream, str],
) -> None:
    """The client sends its second chunk only once the doomed connection has the first,
    so the retry must replay what was sent and go on reading from the client."""
    upstream, url = dropping
    app = create_app(upstream=url + "/v1")
    for headers in ([(b"content-length", b"10")], [(b"transfer-encoding", b"chunked")]):
        upstream.doomed.clear()
        assert (await _call(app, "GET", "/v1/crash", [], []))[0] == 500
        body = [b"01234", upstream.doomed, b"56789"]
        assert await _call(app, "POST", "/v1/echo", headers, body) == (200, b"0123456789")
    await app.app.aclose()  # type: ignore[attr-defined]


async def test_a_body_larger_than_the_replay_limit_is_not_sent_again(
    dropping: tuple[DroppingUpstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream, url = dropping
    monkeypatch.setattr(_forward_retry, "_REPLAY_LIMIT", 4)
    upstream.seen.clear()
    app = create_app(upstream=url + "/v1")
    assert (await _call(app, "GET", "/v1/crash", [], []))[0] == 500
    headers = [(b"content-length", b"10")]
    status, body = await _call(app, "POST", "/v1/echo", headers, [b"01234", b"56789"])
    await app.app.aclose()  # type: ignore[attr-defined]
    assert status == 502
    assert json.loads(body)["error"]["code"] == "upstream_error"
    assert len(upstream.ports("/v1/echo")) == 1


async def test_a_reply_cut_off_after_it_started_is_not_sent_again(
    dropping: tuple[DroppingUpstream, str],
) -> None:
    upstream, url = dropping
    upstream.seen.clear()
    async with in_process(url + "/v1") as http:
        assert (await http.get("/v1/echo")).status_code == 200
        cut = await http.get("/v1/cut")
    assert (cut.status_code, cut.content) == (200, b"partial")
    assert upstream.ports("/v1/cut") == upstream.ports("/v1/echo")  # on the reused connection


class RawUpstream:
    """A TCP server on 127.0.0.1 that reads request heads (no bodies) and sends
    ``replies`` in turn, on whichever connection asks; ``None``, or no reply left,
    closes the connection unanswered. Counts connections and requests."""

    def __init__(self, *replies: bytes | None) -> None:
        self.replies = list(replies)
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                reply = self.replies.pop(0) if self.replies else None
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        except asyncio.IncompleteReadError:
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def raw_upstream(*replies: bytes | None) -> AsyncIterator[tuple[RawUpstream, str]]:
    upstream = RawUpstream(*replies)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream, f"http://127.0.0.1:{port}/v1"


async def test_a_new_connection_closed_unanswered_is_not_retried() -> None:
    async with raw_upstream(None) as (upstream, url), in_process(url) as http:
        response = await http.get("/v1/models")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert (upstream.connections, upstream.requests) == (1, 1)


async def test_a_garbled_reply_on_a_kept_alive_connection_is_not_retried() -> None:
    """Bytes of a reply arrived (h11 could not parse them): the connection was alive."""
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with raw_upstream(ok, b"NOT HTTP\r\n\r\n") as (upstream, url), in_process(url) as http:
        assert (await http.get("/v1/models")).content == b"ok"
        response = await http.get("/v1/models")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert (upstream.connections, upstream.requests) == (1, 2)
