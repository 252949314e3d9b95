"""OpenAI-shaped error payloads (``{"error": {message, type, param, code}}``).

Message texts that tests and clients match on are module constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

__all__ = [
    "ApiError",
    "error_body",
    "previous_not_found",
    "response_not_found",
]

PREVIOUS_NOT_FOUND = "Previous response with id '{}' not found."
RESPONSE_NOT_FOUND = "Response with id '{}' not found."

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class ApiError(Exception):
    """An error the middleware answers itself, before or instead of the app."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None, code: str | None) -> bytes:
    return _encoder.encode(
        {"error": {"message": message, "type": type, "param": param, "code": code}}
    )


def previous_not_found(response_id: str) -> ApiError:
    return ApiError(
        400,
        PREVIOUS_NOT_FOUND.format(response_id),
        param="previous_response_id",
        code="previous_response_not_found",
    )


def response_not_found(response_id: str) -> ApiError:
    return ApiError(404, RESPONSE_NOT_FOUND.format(response_id))


def store_unavailable(code: str) -> ApiError:
    """The store failed (``code`` names how): a 503 the client may retry."""
    return ApiError(
        503, "The response store is unavailable; please retry.", type="server_error", code=code
    )


def invalid_type(param: str, expected: str, got: object) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_kind(got)} instead.",
        param=param,
        code="invalid_type",
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
