"""The forwarding app's one retry, for a request sent on a kept-alive connection that was dead.

An upstream may close a pooled connection without ``Connection: close`` (uvicorn does
when an app raises after its reply started), and the next request, any caller's, can go
out on it before the close is seen. A request sent on a reused connection that fails
before its reply head arrived (reset, or closed with no reply: ``ReadError``,
``WriteError``, a ``RemoteProtocolError`` not raised by the HTTP parser) is sent once
more, on a new connection from a second pool that keeps none alive
(``RETRY_KEEPALIVE_CONNECTIONS``), so the retry can neither land on another dead
connection nor run a third time. A new connection that fails, any failure once the head
arrived, and a reply the parser rejected (bytes came, so the connection was alive) are
not retried; a head cut off part-way looks like no reply to httpcore and is retried. The
first attempt may have reached the upstream app before the close (it does in the uvicorn
case), so a retried POST can run twice there; browsers resend on a stale keep-alive on
the same terms. httpcore's trace hook tells a new connection from a reused one (only a
new one starts with a ``connection.connect_tcp`` event); the hook leaves the request
after its first event, so tracing costs one call per request.

The request body streams, so a retry needs the bytes already sent: :class:`ReplayableBody`
keeps them (the chunks themselves, no copy) until the reply head arrives, up to
``_REPLAY_LIMIT`` (4 MiB). That covers the JSON bodies the API exchanges, even long
chains the middleware expanded (which it holds in memory anyway); a body past the limit
stops being kept and is not retried. The retry sends the kept chunks, then goes on
reading from the client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ._extras import MISSING_PROXY_MESSAGE

try:
    import h11
    import httpx
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(MISSING_PROXY_MESSAGE, name=exc.name) from exc

__all__ = [
    "RETRY_KEEPALIVE_CONNECTIONS",
    "ReplayableBody",
    "StaleConnectionRetry",
    "connection_was_dead",
]

logger = logging.getLogger("state_middleware.proxy")

#: connections the retry pool keeps alive: none, so every retry opens a new one
RETRY_KEEPALIVE_CONNECTIONS = 0
#: request body bytes kept, until the reply head arrives, to send again on a retry
_REPLAY_LIMIT = 4 * 2**20
#: how a kept-alive connection that was already dead fails before the reply head
_DEAD_CONNECTION = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def connection_was_dead(exc: httpx.TransportError) -> bool:
    """Whether ``exc``, raised before the reply head was complete, says the connection
    was dead. An error of the HTTP parser (h11) in its chain means reply bytes came;
    for a connection closed with no reply httpcore raises its own, from nothing."""
    if not isinstance(exc, _DEAD_CONNECTION):
        return False
    chained = exc.__cause__ or exc.__context__
    while chained is not None:
        if isinstance(chained, h11.RemoteProtocolError):
            return False
        chained = chained.__cause__ or chained.__context__
    return True


class StaleConnectionRetry:
    """One request's attempts: its ``extensions`` (httpcore's trace hook) go on the
    request, and :meth:`send` sends it, once more if the first attempt died on a reused
    connection. Built per request, before the request."""

    def __init__(self, scope: Any, upstream: str) -> None:
        self.scope = scope
        self.upstream = upstream
        self.extensions: dict[str, Any] = {"trace": self._trace}
        self.reused: bool | None = None  # was the first attempt sent on a pooled connection

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook. Its first event names the connection: a new one
        starts with ``connection.connect_tcp``, a pooled one with ``http11.*``. Then
        the hook leaves the request, which is not traced further."""
        if self.reused is None:
            self.reused = not event.startswith("connection.")
            self.extensions.pop("trace", None)

    async def send(
        self,
        request: httpx.Request,
        body: ReplayableBody | None,
        pool: httpx.AsyncHTTPTransport,
        retry_pool: Callable[[], httpx.AsyncHTTPTransport],
    ) -> httpx.Response:
        """Send ``request`` (its body ``body``) through ``pool`` and wait for the reply
        head; when a reused connection was dead, send it again through ``retry_pool()``.
        Any other failure is raised."""
        try:
            response = await pool.handle_async_request(request)
        except httpx.TransportError as exc:
            if not (self.reused and connection_was_dead(exc)):
                raise
            if body is not None and not body.rewind():
                raise
            logger.info(
                "%s %s: the kept-alive connection to %s was dead (%r); sending again",
                self.scope["method"],
                self.scope["path"],
                self.upstream,
                exc,
            )
            response = await retry_pool().handle_async_request(request)
        if body is not None:
            body.forget()
        return response


class ReplayableBody:
    """The request body as the client sends it, keeping the chunks sent (up to
    ``_REPLAY_LIMIT`` bytes) so that ``rewind`` can start it again for a retry."""

    def __init__(self, chunks: AsyncGenerator[bytes, None]) -> None:
        self._chunks = chunks
        self._kept: list[bytes] | None = []
        self._size = 0
        self._position = 0  # kept chunks already sent by this attempt

    def __aiter__(self) -> ReplayableBody:
        return self

    async def __anext__(self) -> bytes:
        kept = self._kept
        if kept is not None and self._position < len(kept):
            self._position += 1
            return kept[self._position - 1]
        chunk = await self._chunks.__anext__()
        if kept is not None:
            self._size += len(chunk)
            if self._size > _REPLAY_LIMIT:
                self._kept = None
            else:
                kept.append(chunk)
                self._position += 1
        return chunk

    def rewind(self) -> bool:
        """Start again from the first byte; ``False`` if the bytes sent were not kept."""
        self._position = 0
        return self._kept is not None

    def forget(self) -> None:
        """Stop keeping chunks (the reply has started: there is no retry any more)."""
        self._kept = None

    async def aclose(self) -> None:
        await self._chunks.aclose()
