"""Small raw-ASGI helpers shared by the fake upstream apps in this package.

Nothing here knows about the Responses or Chat Completions APIs: it reads request
bodies, writes JSON replies with an exact Content-Length, frames server-sent events and
builds OpenAI-style error bodies.
"""

from __future__ import annotations

from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

__all__ = [
    "ClientDisconnect",
    "error_body",
    "header_dict",
    "read_body",
    "send_json",
    "sse_frame",
]

_encoder = msgspec.json.Encoder()


class ClientDisconnect(Exception):
    """The client went away before the whole request body arrived."""


async def read_body(receive: ASGIReceiveCallable) -> bytes:
    """Read ``http.request`` messages until ``more_body`` is false and return the body.

    Raises ``ClientDisconnect`` if ``http.disconnect`` arrives first.
    """
    chunks: list[bytes] = []
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if message["type"] != "http.request":
            continue
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def header_dict(raw_headers: Any) -> dict[str, str]:
    """Turn ASGI ``(name, value)`` byte pairs into a dict with lower-cased names.

    Repeated headers are joined with ``", "``, as HTTP allows.
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def send_json(send: ASGISendCallable, status: int, obj: Any) -> None:
    """Send ``obj`` as a complete JSON response with an exact Content-Length."""
    body = _encoder.encode(obj)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def sse_frame(event_type: str, obj: Any) -> bytes:
    """One server-sent event: an ``event:`` line, a compact JSON ``data:`` line, a blank line."""
    return b"event: " + event_type.encode("utf-8") + b"\ndata: " + _encoder.encode(obj) + b"\n\n"


def error_body(
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An OpenAI error body; all four keys are always present, absent ones as ``null``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def run_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Answer the lifespan protocol: startup and shutdown complete at once."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
