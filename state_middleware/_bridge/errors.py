"""Mapping an upstream Chat Completions error onto an OpenAI error body.

Every failure the bridge detects itself is a core :class:`~.._errors.ApiError`.
An upstream Chat Completions error (any non-2xx answer) keeps its status and message:
:func:`chat_error_to_response_error` rewraps whatever body came back, JSON or not, into
``{"error": {"message", "type", "param", "code"}}`` with all four keys present.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._errors import ApiError

__all__ = ["chat_error_to_response_error"]

#: longest upstream text kept when the upstream error body is not JSON
_MAX_TEXT_MESSAGE = 2000

_encoder = msgspec.json.Encoder()


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
    error = ApiError(
        status,
        message or f"Upstream returned HTTP {status}.",
        param=_str_or_none(param),
        code=_str_or_none(code),
        type=type_,
    )
    return error.body()
