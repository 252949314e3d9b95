"""Raw-ASGI helpers with no framework import: headers, bounded body reads, replies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._errors import ApiError

__all__ = [
    "BodyTooLarge",
    "ClientGone",
    "header",
    "read_body",
    "read_request_body",
    "route_path",
    "send_api_error",
    "send_json",
    "with_content_length",
    "with_headers",
]

Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected: during its request body, or while its reply was sent."""


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """First value of a header (``name`` lower-case)."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def with_headers(
    headers: Iterable[tuple[bytes, bytes]],
    drop: Iterable[bytes],
    add: Iterable[tuple[bytes, bytes]] = (),
) -> Headers:
    """A new header list without the ``drop`` names (lower-case), plus ``add``."""
    dropped = frozenset(drop)
    kept = [(k, v) for k, v in headers if k.lower() not in dropped]
    kept.extend(add)
    return kept


def with_content_length(headers: Iterable[tuple[bytes, bytes]], length: int) -> Headers:
    """The headers of a body rewritten to ``length`` bytes: any old ``content-length``
    or ``transfer-encoding`` replaced by the exact length."""
    return with_headers(
        headers, (b"content-length", b"transfer-encoding"), [(b"content-length", b"%d" % length)]
    )


def route_path(scope: Any) -> str:
    """The path the app routes on: ``path`` with any ``root_path`` prefix removed."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


async def read_body(receive: ASGIReceiveCallable, limit: int, declared: int | None) -> bytes:
    """Read the whole request body, at most ``limit`` bytes, watching for disconnects."""
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        if message["type"] != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_request_body(scope: Any, receive: ASGIReceiveCallable, limit: int) -> bytes:
    """The whole request body, bounded by ``limit`` bytes (a declared Content-Length over
    it is refused before reading): ``ApiError`` 413 past it, ``ClientGone`` if the
    client leaves first."""
    declared = header(scope["headers"], b"content-length")
    try:
        return await read_body(
            receive, limit, int(declared) if declared and declared.isdigit() else None
        )
    except BodyTooLarge as exc:
        raise ApiError(
            413,
            f"Request body too large: the limit is {exc.limit} bytes.",
            code="request_too_large",
        ) from None


async def send_json(
    send: ASGISendCallable,
    status: int,
    body: bytes,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *extra_headers,
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_api_error(send: ASGISendCallable, error: ApiError) -> None:
    await send_json(send, error.status, error.body())
