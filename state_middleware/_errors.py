"""OpenAI-shaped error payloads (``{"error": {message, type, param, code}}``).

Message texts that tests and clients match on are module constants.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ApiError",
    "conversation_not_found",
    "error_body",
    "error_type_for_status",
    "item_not_found",
    "previous_not_found",
    "response_not_found",
]

PREVIOUS_NOT_FOUND = "Previous response with id '{}' not found."
WORKER_LOST_MESSAGE = (
    "The process running this background response stopped before it finished; "
    "please create the response again."
)
CONVERSATION_NOT_FOUND = "Conversation with id '{}' not found."
ITEM_NOT_FOUND = (
    "Item with id '{}' not found. Items are not persisted when `store` is set to false. "
    "Try again with `store` set to true, or remove this item from your input."
)
RESPONSE_NOT_FOUND = "Response with id '{}' not found."

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


class ApiError(Exception):
    """An error the middleware answers itself, before or instead of the app: an HTTP
    status and the four fields of an OpenAI error object. ``type`` defaults to the
    conventional one for the status. A plain exception class, so ``add_note``,
    tracebacks and context managers work as for any other."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type if type is not None else error_type_for_status(status)
        self.param = param
        self.code = code

    def body(self) -> bytes:
        """``{"error": {message, type, param, code}}`` as compact JSON."""
        return error_body(self.message, self.type, self.param, self.code)

    def __repr__(self) -> str:
        return (
            f"ApiError({self.status}, {self.message!r}, param={self.param!r}, code={self.code!r})"
        )


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


def conversation_not_found(conversation_id: str, *, param: str | None = None) -> ApiError:
    return ApiError(404, CONVERSATION_NOT_FOUND.format(conversation_id), param=param)


def item_not_found(item_id: str, *, param: str = "input") -> ApiError:
    """An item reference naming an item that is not stored (or not the caller's)."""
    return ApiError(404, ITEM_NOT_FOUND.format(item_id), param=param)


def response_not_found(response_id: str) -> ApiError:
    return ApiError(404, RESPONSE_NOT_FOUND.format(response_id))


def store_unavailable(code: str) -> ApiError:
    """The store failed (``code`` names how): a 503 the client may retry."""
    return ApiError(
        503, "The response store is unavailable; please retry.", type="server_error", code=code
    )


ITEMS_MISSING = (
    "This conversation can no longer be loaded whole: some of its items were evicted or "
    "have expired."
)


def store_failed(code: str) -> ApiError:
    """The error for a ``StoreError`` of this ``code``: a 503 to retry, except for a
    conversation that lost items (retrying cannot help)."""
    if code == "conversation_items_missing":
        return ApiError(500, ITEMS_MISSING, code=code)
    return store_unavailable(code)


def invalid_type(param: str, expected: str, got: object) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_kind(got)} instead.",
        param=param,
        code="invalid_type",
    )


def missing_parameter(param: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
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
