"""The HTTP front door of the turn pipeline: ``POST {prefix}/responses``.

Reads the body (bounded, disconnect-aware), parses it, identifies the caller, and runs
the :class:`~._turn.Turn` with the client's own ``send`` as the sink and the client's
``receive`` as the caller's messages.
"""

from __future__ import annotations

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from ._asgi import BodyTooLarge, ClientGone, header, read_body, send_api_error
from ._errors import ApiError
from ._request import parse_turn_request
from ._settings import Settings
from ._turn import Turn

__all__ = ["serve_turn"]


async def serve_turn(
    settings: Settings, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    declared = header(scope["headers"], b"content-length")
    try:
        raw = await read_body(
            receive,
            settings.max_body_bytes,
            int(declared) if declared and declared.isdigit() else None,
        )
    except ClientGone:
        return
    except BodyTooLarge as exc:
        error = ApiError(
            413,
            f"Request body too large: the limit is {exc.limit} bytes.",
            code="request_too_large",
        )
        await send_api_error(send, error)
        return
    try:
        request = parse_turn_request(raw)
    except ApiError as exc:
        await send_api_error(send, exc)
        return
    owner = settings.identity(scope) or ""
    await Turn(settings, scope, owner, request).run(send, receive)
