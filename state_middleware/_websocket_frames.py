"""The frames a WebSocket turn sends, and the HTTP request it is to the app.

:class:`FrameSink` is the ASGI ``send`` a WebSocket turn tees its reply to: each SSE
event of the reply becomes one text frame (its ``data`` payload, with the lane's
``stream_id`` when it has one); a reply that is not a stream becomes the frames it
stands for, an error reply one ``error`` frame. :func:`http_scope` is the scope the
turn calls the app with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ._asgi import header
from ._sse import SSEDecoder

__all__ = ["FrameSink", "error_frame", "http_scope"]

_HANDSHAKE_ONLY = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
        b"content-type",
        b"transfer-encoding",
    }
)
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

#: sends one text frame
SendText = Callable[[bytes], Awaitable[None]]


class FrameSink:
    """The ASGI ``send`` a WebSocket turn tees its reply to: each SSE event becomes one
    text frame; a reply that is not a stream becomes the frames it stands for."""

    def __init__(self, send_text: SendText, stream_id: str | None) -> None:
        self.send_text = send_text
        self.stream_id = stream_id
        self.decoder = SSEDecoder()
        self.status = 200
        self.stream = False
        self.held: list[bytes] = []

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            content_type = (header(message.get("headers", []), b"content-type") or b"").lower()
            self.stream = 200 <= self.status < 300 and content_type.startswith(b"text/event-stream")
            return
        if kind != "http.response.body":
            return
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.stream:
            for frame in self.decoder.frames(chunk, last=not more):
                if frame.data is not None and frame.data != b"[DONE]":
                    await self.send_text(self._laned(frame.data))
            return
        self.held.append(chunk)
        if not more:
            await self._whole(b"".join(self.held))

    def _laned(self, payload: bytes) -> bytes:
        if self.stream_id is None:
            return payload
        try:
            event = _decoder.decode(payload)
        except msgspec.DecodeError:
            return payload
        if isinstance(event, dict):
            event["stream_id"] = self.stream_id
            return _encoder.encode(event)
        return payload

    async def _whole(self, body: bytes) -> None:
        try:
            value = _decoder.decode(body)
        except msgspec.DecodeError:
            value = None
        if (
            200 <= self.status < 300
            and isinstance(value, dict)
            and value.get("object") == "response"
        ):
            terminal = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
                str(value.get("status")), "response.completed"
            )
            for number, kind in enumerate(("response.created", terminal)):
                event = {"type": kind, "sequence_number": number, "response": value}
                await self.send_text(self._laned(_encoder.encode(event)))
            return
        status = self.status if self.status >= 400 else 502
        await self.send_text(error_frame(status, body, self.stream_id))


def error_frame(status: int, body: bytes, stream_id: str | None) -> bytes:
    """``{"type": "error", "status": ..., "error": {...}}`` from an error body."""
    try:
        value = _decoder.decode(body)
    except msgspec.DecodeError:
        value = None
    error = value.get("error") if isinstance(value, dict) else None
    if not isinstance(error, dict):
        error = {
            "type": "server_error" if status >= 500 else "invalid_request_error",
            "code": None,
            "message": body.decode("utf-8", "replace")[:2000] or f"HTTP {status}",
            "param": None,
        }
    frame: dict[str, Any] = {"type": "error", "status": status, "error": error}
    if stream_id is not None:
        frame["stream_id"] = stream_id
    return _encoder.encode(frame)


def http_scope(scope: Any) -> Any:
    """The HTTP scope a WebSocket's turns call the app with: ``POST`` on the same path,
    the handshake's headers (credentials included) without the WebSocket ones."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _HANDSHAKE_ONLY]
    headers.append((b"content-type", b"application/json"))
    return {
        "type": "http",
        "asgi": scope.get("asgi", {"version": "3.0"}),
        "http_version": scope.get("http_version", "1.1"),
        "method": "POST",
        "scheme": "https" if scope.get("scheme") == "wss" else "http",
        "path": scope["path"],
        "raw_path": scope.get("raw_path") or scope["path"].encode(),
        "root_path": scope.get("root_path", ""),
        "query_string": b"",
        "headers": headers,
        "client": scope.get("client"),
        "server": scope.get("server"),
        "extensions": {},
        **({"state": scope["state"]} if "state" in scope else {}),
    }
