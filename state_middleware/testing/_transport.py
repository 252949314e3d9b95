"""An in-process httpx transport that streams an ASGI app's response as it is sent.

``httpx.ASGITransport`` runs the app to completion before it returns a response, so a
client can never see an event before the app has finished. ``StreamingASGITransport``
runs the app as a task instead: the response is returned as soon as
``http.response.start`` arrives, and each ``http.response.body`` chunk reaches the
response stream the moment the app sends it.

It behaves like a spec-2.4 HTTP/1.1 server:

* the request body arrives as a single ``http.request`` message; after that ``receive``
  blocks until the response is complete or the client closes it, then returns
  ``http.disconnect``;
* once the client has closed the response early, ``send`` raises ``OSError``;
* closing the response waits briefly for the app to finish, then cancels it;
* an app exception before the response starts is raised by ``handle_async_request``;
  after that it is raised from the response stream, or, if nobody reads it any more,
  from closing the response (except the ``OSError`` of a send after an early close).

The app runs in an asyncio task, so this transport needs the asyncio backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .._extras import MISSING_TESTING_MESSAGE

try:
    import httpx
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(MISSING_TESTING_MESSAGE, name=exc.name) from exc

__all__ = ["DISCONNECT_GRACE_SECONDS", "StreamingASGITransport"]

DISCONNECT_GRACE_SECONDS = 0.5
"""How long closing a response waits for the app to return before cancelling it."""

# Loose on purpose: apps typed with asgiref, Starlette or Django types are all accepted.
_ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
_Headers = list[tuple[bytes, bytes]]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Send httpx requests to an ASGI app in this event loop, streaming the responses.

    ``root_path`` is the mount point the app sees, as behind a proxy that strips it: the
    scope's ``path`` and ``raw_path`` are ``root_path`` followed by the URL path.
    """

    def __init__(self, app: _ASGIApp, *, root_path: str = "") -> None:
        self.app = app
        self.root_path = root_path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        exchange = _Exchange(self.app, self._scope(request), body, head=request.method == "HEAD")
        status, headers = await exchange.start()
        return httpx.Response(status, headers=headers, stream=exchange, request=request)

    def _scope(self, request: httpx.Request) -> dict[str, Any]:
        url = request.url
        raw_path = url.raw_path.split(b"?", 1)[0]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": self.root_path + url.path,
            "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": url.query,
            "root_path": self.root_path,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": ("127.0.0.1", 123),
            "server": (url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 80)),
        }


class _Exchange(httpx.AsyncByteStream):
    """One request/response exchange: the app task and the stream the client reads."""

    def __init__(self, app: _ASGIApp, scope: dict[str, Any], body: bytes, *, head: bool) -> None:
        self._app = app
        self._scope = scope
        self._request_body: bytes | None = body
        self._head = head
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[tuple[int, _Headers]] = loop.create_future()
        # Items are body chunks, ``None`` for the end, or the exception that ended it.
        self._chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._finished = asyncio.Event()  # response complete or client gone
        self._complete = False
        self._client_gone = False
        self._closed = False
        self._app_error: BaseException | None = None
        self._app_error_seen = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[int, _Headers]:
        """Start the app and wait for ``http.response.start``."""
        self._task = asyncio.create_task(self._run_app())
        try:
            return await asyncio.shield(self._started)
        except BaseException:
            self._app_error_seen = True
            await self.aclose()
            raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                self._app_error_seen = True
                raise item
            yield item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._complete:
            self._client_gone = True
        self._finished.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait({task}, timeout=DISCONNECT_GRACE_SECONDS)
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task})
        error = self._app_error
        if error is None or self._app_error_seen:
            return
        self._app_error_seen = True
        if not (self._client_gone and isinstance(error, OSError)):
            raise error

    async def _run_app(self) -> None:
        try:
            await self._app(self._scope, self._receive, self._send)
        except Exception as exc:
            self._fail(exc)
            return
        if not self._started.done():
            self._fail(RuntimeError("The ASGI app returned without starting a response."))
        elif not self._complete and not self._client_gone:
            # What a client sees when a server closes a chunked response early.
            self._fail(
                httpx.RemoteProtocolError(
                    "The ASGI app returned without completing the response body."
                )
            )

    def _fail(self, error: BaseException) -> None:
        self._app_error = error
        if not self._started.done():
            self._started.set_exception(error)
        elif not self._complete:
            self._chunks.put_nowait(error)

    async def _receive(self) -> dict[str, Any]:
        if self._request_body is not None:
            body, self._request_body = self._request_body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._finished.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Any) -> None:
        if self._client_gone:
            raise OSError("The client closed the response.")
        kind = message["type"]
        if kind == "http.response.start":
            if self._started.done():
                raise RuntimeError("http.response.start was sent twice.")
            headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
            self._started.set_result((message["status"], headers))
        elif kind == "http.response.body":
            if not self._started.done():
                raise RuntimeError("http.response.body was sent before http.response.start.")
            if self._complete:
                raise RuntimeError("http.response.body was sent after the response completed.")
            body = bytes(message.get("body", b""))
            if body and not self._head:
                self._chunks.put_nowait(body)
            if not message.get("more_body", False):
                self._complete = True
                self._chunks.put_nowait(None)
                self._finished.set()
        # Other messages (trailers, debug, ...) need extensions this server does not offer.
        await asyncio.sleep(0)  # let the reader run, like a socket write would
