"""Errors of the Responses-to-Chat bridge, and the mapping of upstream Chat errors.

Every failure the bridge detects before calling the upstream is a :class:`BridgeError`:
an HTTP status plus the four fields of an OpenAI error object (``message``, ``type``,
``param``, ``code``). The middleware answers it with :meth:`BridgeError.to_body` as the
JSON body, so a client sees the same shape api.openai.com uses.

An upstream Chat Completions error (any non-2xx answer) keeps its status and message:
:func:`chat_error_to_response_error` rewraps whatever body came back, JSON or not, into
``{"error": {"message", "type", "param", "code"}}`` with all four keys present.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["BridgeError", "chat_error_to_response_error", "error_type_for_status"]

#: longest upstream text kept when the upstream error body is not JSON
_MAX_TEXT_MESSAGE = 2000

_encoder = msgspec.json.Encoder()


def error_type_for_status(status: int) -> str:
    """The conventional OpenAI error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class BridgeError(Exception):
    """A request the bridge cannot translate, or a translation that failed.

    ``param`` names the offending request field (``"tools"``, ``"input"``, ...) so the
    client knows what to change; ``code`` is a machine-readable code or ``None``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type if type is not None else error_type_for_status(status)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error envelope ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_body(self) -> bytes:
        """:meth:`to_dict` encoded as compact JSON."""
        return _encoder.encode(self.to_dict())

    def __repr__(self) -> str:
        return f"BridgeError({self.status}, {self.message!r}, param={self.param!r})"


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _fields_from_json(payload: Any) -> tuple[str | None, str | None, Any, Any]:
    """(message, type, param, code) found in a decoded upstream error body.

    Understands the OpenAI envelope, a bare error object, ``{"error": "text"}`` and the
    ``{"detail": ...}`` shape FastAPI apps send.
    """
    if not isinstance(payload, dict):
        return (payload if isinstance(payload, str) else None), None, None, None
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        return None, None, None, None
    message = error.get("message")
    if message is None and "detail" in error:
        detail = error["detail"]
        message = detail if isinstance(detail, str) else _encoder.encode(detail).decode()
    return (
        _str_or_none(message),
        _str_or_none(error.get("type")),
        error.get("param"),
        error.get("code"),
    )


def chat_error_to_response_error(status: int, body: bytes) -> bytes:
    """Rewrap an upstream Chat Completions error body as an OpenAI error body.

    The upstream ``message`` (and ``type``, ``param``, ``code`` when present) is kept.
    A body that is not JSON becomes the message as text; an empty or useless one gets
    ``"Upstream returned HTTP <status>."``. The caller keeps the upstream status.
    """
    message: str | None
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        message, type_, param, code = text[:_MAX_TEXT_MESSAGE] or None, None, None, None
    else:
        message, type_, param, code = _fields_from_json(payload)
    error = BridgeError(
        status,
        message or f"Upstream returned HTTP {status}.",
        param=_str_or_none(param),
        code=_str_or_none(code),
        type=type_,
    )
    return error.to_body()
