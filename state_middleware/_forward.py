"""``ForwardingApp``: a raw ASGI app that sends every HTTP request to one upstream server.

Both bodies stream: the request body is fed to httpx as the ASGI server delivers it, and
each chunk read from the upstream is sent on at once as one ``http.response.body``.
Connections to the upstream are kept alive in one pool per app (an
``httpx.AsyncHTTPTransport``, made on first use and closed on lifespan shutdown or
``aclose()``). Requests go straight to that transport: an ``httpx.AsyncClient`` on top
would add redirect, auth and cookie handling the proxy must not do (a client keeps the
upstream's cookies in one jar shared by every caller) and ~0.2 ms a request. Proxy
environment variables (``HTTP_PROXY``...) are not used: the upstream is reached
directly.

Path rule: ``prefix`` is stripped from the incoming path (``root_path`` first removed)
and the rest is appended to the upstream base URL; the query string is kept. With
``upstream="http://h:8000/v1"`` and ``prefix="/v1"``, ``/v1/models?x=1`` goes to
``http://h:8000/v1/models?x=1``; a path outside ``prefix`` such as ``/health`` is
appended whole (``http://h:8000/v1/health``).

Headers: hop-by-hop headers (``connection`` and every header it names, ``keep-alive``,
``proxy-*``, ``te``, ``trailer``, ``transfer-encoding``, ``upgrade``) are dropped both
ways; ``host`` and ``expect`` are not forwarded. The client's ``content-length`` is kept
(the middleware corrects it when it rewrites a body), and a body without one is sent
chunked. ``accept-encoding`` is replaced by ``identity`` so that replies reach the
middleware uncompressed, which it needs in order to read and store them.

Failures: an upstream that cannot be connected to is answered with 502 (code
``upstream_unreachable``), one that does not answer within ``read_timeout`` with 504
(``upstream_timeout``), one that breaks the exchange otherwise with 502
(``upstream_error``), all with an OpenAI-shaped error body. Once the reply has started
a failure can only end the body early. A client that goes away (``http.disconnect``,
or ``send`` raising ``OSError``) closes the upstream request, so the upstream sees the
disconnect too.

A dead kept-alive connection (an upstream may close one without ``Connection: close``):
a request that went out on it and failed before its reply head is sent once more, on a
new connection, as ``_forward_retry`` describes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import Any
from urllib.parse import quote

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from . import _defaults
from ._asgi import ClientGone, header, send_json
from ._errors import error_body
from ._extras import MISSING_PROXY_MESSAGE
from ._forward_retry import RETRY_KEEPALIVE_CONNECTIONS, ReplayableBody, StaleConnectionRetry

try:
    import anyio
    import httpx
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(MISSING_PROXY_MESSAGE, name=exc.name) from exc

__all__ = [
    "TIMEOUT_MESSAGE",
    "UNREACHABLE_MESSAGE",
    "UPSTREAM_ERROR_MESSAGE",
    "ForwardingApp",
]

logger = logging.getLogger("state_middleware.proxy")

UNREACHABLE_MESSAGE = "The upstream server {} could not be reached: {}"
TIMEOUT_MESSAGE = "The upstream server {} did not answer within {} seconds."
UPSTREAM_ERROR_MESSAGE = "The upstream server {} broke off the exchange: {}"

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"expect", b"accept-encoding"}
#: asyncio already disables Nagle's algorithm on every TCP socket it makes; we ask for
#: it explicitly so that no event loop or backend can bring a 40 ms stall back.
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
#: below the 5 s keep-alive of uvicorn (vLLM) and llama.cpp, so an idle connection is
#: dropped by us before the upstream closes it under a new request
_KEEPALIVE_EXPIRY = 4.0
_KEEPALIVE_CONNECTIONS = 64

#: Chunks httpcore already holds come without a pause, and a server's send does not
#: pause either, so a fast stream could run on without the event loop ever seeing that
#: the client left (asyncio logs every write to a dead socket from the fifth on). The
#: relay yields after this many chunks: the disconnect is noticed within a few writes,
#: and other requests get their turn.
_YIELD_EVERY = 4

#: characters left as they are in a forwarded path or query (others are escaped, and
#: escapes already there are kept)
_URL_SAFE = "/:@!$&'()*+,;=~%"

Headers = list[tuple[bytes, bytes]]


def _without_hop_by_hop(headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]) -> Headers:
    """Headers minus ``drop`` and minus every header the ``connection`` header names."""
    pairs = [(bytes(k).lower(), bytes(v)) for k, v in headers]
    named = {
        token.strip().lower()
        for key, value in pairs
        if key == b"connection"
        for token in value.split(b",")
    }
    return [(k, v) for k, v in pairs if k not in drop and k not in named]


class ForwardingApp:
    """An ASGI app that proxies every HTTP request to ``upstream`` (a base URL).

    ``connect_timeout`` bounds opening a connection; ``read_timeout`` bounds each wait
    for upstream data (so a long generation may take any time as long as it streams)
    and each write. Lifespan scopes are handled (the pool is closed on shutdown);
    websocket scopes are refused.
    """

    def __init__(
        self,
        upstream: str,
        *,
        prefix: str = _defaults.PREFIX,
        connect_timeout: float = _defaults.CONNECT_TIMEOUT,
        read_timeout: float = _defaults.READ_TIMEOUT,
    ) -> None:
        url = httpx.URL(upstream)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"upstream must be an http:// or https:// URL, got {upstream!r}")
        if url.query or url.fragment:
            raise ValueError("upstream must not have a query string or fragment")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError("prefix must start with '/' and not end with it, or be ''")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive")
        self.upstream = str(url).rstrip("/")
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._timeouts = timeout.as_dict()
        self._pool: httpx.AsyncHTTPTransport | None = None
        self._retry_pool: httpx.AsyncHTTPTransport | None = None

    def pool(self) -> httpx.AsyncHTTPTransport:
        """The connection pool, made on first use (in the running event loop)."""
        if self._pool is None:
            self._pool = _transport(_KEEPALIVE_CONNECTIONS)
        return self._pool

    def retry_pool(self) -> httpx.AsyncHTTPTransport:
        """The pool retries go through (see ``_forward_retry``): it keeps no connection
        alive, so each request through it opens a new one. Made on first use."""
        if self._retry_pool is None:
            self._retry_pool = _transport(RETRY_KEEPALIVE_CONNECTIONS)
        return self._retry_pool

    async def aclose(self) -> None:
        """Close the pooled connections (a later request opens new ones)."""
        pools = (self._pool, self._retry_pool)
        self._pool = self._retry_pool = None
        for pool in pools:
            if pool is not None:
                await pool.aclose()

    def upstream_url(self, scope: Any) -> str:
        """Where a request with this scope goes (see the module docstring)."""
        path = _raw_route_path(scope)
        prefix = self.prefix.encode()
        if prefix and (path == prefix or path.startswith(prefix + b"/")):
            path = path[len(prefix) :]
        url = self.upstream + quote(path, safe=_URL_SAFE)
        query: bytes = scope.get("query_string", b"")
        return f"{url}?{quote(query, safe=_URL_SAFE + '?')}" if query else url

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            await _Exchange(self, scope, receive, send).run()
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            message: Any = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1003, "reason": ""})

    async def _lifespan(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        while True:
            message: Any = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def upstream_request(
        self,
        scope: Any,
        content: AsyncIterable[bytes] | None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Request:
        """The upstream request for ``scope``, its body read from ``content``; the
        timeouts are added to ``extensions`` (a dict of the caller's, or a new one)."""
        headers = _without_hop_by_hop(scope["headers"], _NOT_FORWARDED)
        headers.append((b"accept-encoding", b"identity"))
        extensions = {} if extensions is None else extensions
        extensions["timeout"] = self._timeouts
        # Built directly, not with client.build_request: no default headers are added.
        return httpx.Request(
            scope["method"],
            self.upstream_url(scope),
            headers=headers,
            content=content,
            extensions=extensions,
        )


def _transport(keepalive_connections: int) -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=keepalive_connections,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
        ),
        socket_options=_SOCKET_OPTIONS,
    )


def _raw_route_path(scope: Any) -> bytes:
    """The percent-encoded path the app routes on (``root_path`` removed).

    Not ``_asgi.route_path``, which gives the decoded ``path`` to match routes on: the
    upstream must get the path as the client sent it (``%2F`` stays ``%2F``)."""
    root: str = scope.get("root_path", "")
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        path: str = scope.get("path", "/")
        raw = quote(path, safe=_URL_SAFE.replace("%", "")).encode("ascii")
    else:
        raw = raw.split(b"?", 1)[0]
    root_bytes = root.encode()
    if root and raw.startswith(root_bytes):
        raw = raw[len(root_bytes) :]
    return raw or b"/"


class _Exchange:
    """One request forwarded and its reply relayed; built per request."""

    def __init__(
        self,
        app: ForwardingApp,
        scope: Any,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.cancel = anyio.CancelScope()
        self.watcher: asyncio.Task[None] | None = None
        self.client_gone = False
        self.finished = False  # the last body message is (being) sent to the client

    async def run(self) -> None:
        try:
            with self.cancel:
                await self._exchange()
        finally:
            watcher = self.watcher
            if watcher is not None:
                watcher.cancel()
                await asyncio.wait({watcher})
                if not watcher.cancelled():
                    watcher.exception()  # retrieved, so asyncio never logs it

    async def _exchange(self) -> None:
        response = await self._send_request()
        if response is None:
            return
        try:
            await self._relay(response)
        except ClientGone:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()  # mid-stream, this closes the upstream connection

    async def _send_request(self) -> httpx.Response | None:
        """Send the request upstream and wait for the reply's head; ``None`` when the
        client is gone or an error was answered instead."""
        headers = self.scope["headers"]
        has_body = (
            header(headers, b"content-length") not in (None, b"0")
            or header(headers, b"transfer-encoding") is not None
        )
        body = ReplayableBody(self._request_body()) if has_body else None
        if body is None:
            self._watch_for_disconnect()
        app = self.app
        try:
            retry = StaleConnectionRetry(self.scope, app.upstream)
            request = app.upstream_request(self.scope, body, retry.extensions)
            return await retry.send(request, body, app.pool(), app.retry_pool)
        except ClientGone:
            return None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            await self._fail(502, "upstream_unreachable", UNREACHABLE_MESSAGE, exc)
        except httpx.TimeoutException as exc:
            await self._fail(504, "upstream_timeout", TIMEOUT_MESSAGE, exc)
        except httpx.TransportError as exc:
            await self._fail(502, "upstream_error", UPSTREAM_ERROR_MESSAGE, exc)
        finally:
            if body is not None:
                with anyio.CancelScope(shield=True):
                    await body.aclose()  # a body left half read by a failed send
        return None

    async def _request_body(self) -> AsyncGenerator[bytes, None]:
        """The request body as the server delivers it; then watch for a disconnect."""
        while True:
            message: Any = await self.receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ClientGone
            if message["type"] != "http.request":
                continue
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                break
        self._watch_for_disconnect()

    def _watch_for_disconnect(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            message: Any = await self.receive()
            if message["type"] == "http.disconnect":
                # Once the reply is complete a server reports a disconnect too (there
                # is nothing more to receive); then the exchange is left to finish.
                if not self.finished:
                    self.client_gone = True
                    self.cancel.cancel()
                return

    async def _relay(self, response: httpx.Response) -> None:
        headers = _without_hop_by_hop(response.headers.raw, _HOP_BY_HOP)
        await self._emit(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": headers,
                "trailers": False,
            }
        )
        declared = header(headers, b"content-length")
        # With a Content-Length the last chunk can carry more_body=False, which saves
        # a send. The loop still runs to its end: httpcore only puts the connection
        # back in the pool once it has seen the end of the message.
        remaining = int(declared) if declared is not None and declared.isdigit() else -1
        ended = False
        count = 0
        try:
            async for chunk in response.aiter_raw():
                count += 1
                remaining -= len(chunk)
                ended = self.finished = remaining == 0
                await self._emit(
                    {"type": "http.response.body", "body": chunk, "more_body": not ended}
                )
                if count % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except httpx.TransportError as exc:
            # The reply has started: all that is left is to end it. A streamed turn then
            # has no terminal event, so the middleware stores nothing.
            logger.warning("upstream reply from %s ended early: %r", self.app.upstream, exc)
        if not ended:
            self.finished = True
            await self._emit({"type": "http.response.body", "body": b"", "more_body": False})

    async def _emit(self, message: Any) -> None:
        try:
            await self.send(message)
        except OSError as exc:  # how most servers report a client that went away
            self.client_gone = True
            raise ClientGone from exc

    async def _fail(self, status: int, code: str, template: str, exc: httpx.HTTPError) -> None:
        detail = self.app.read_timeout if status == 504 else (str(exc) or type(exc).__name__)
        message = template.format(self.app.upstream, detail)
        logger.warning("%s %s: %s", self.scope["method"], self.scope["path"], message)
        self.finished = True
        try:
            await send_json(self.send, status, error_body(message, "server_error", None, code))
        except OSError:
            self.client_gone = True
