"""The HTTP front door of the turn pipeline: ``POST {prefix}/responses``.

Reads the body (bounded, disconnect-aware), parses it, identifies the caller, and runs
the :class:`~._turn.Turn` with the client's own ``send`` as the sink and the client's
``receive`` as the caller's messages; a ``background: true`` turn goes to the background
front door (:mod:`._background`) instead.
"""

from __future__ import annotations

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from ._asgi import ClientGone, read_request_body, send_api_error
from ._background import BackgroundRuns
from ._errors import ApiError
from ._request import parse_turn_request
from ._settings import Settings
from ._turn import Turn

__all__ = ["serve_turn"]


async def serve_turn(
    settings: Settings,
    runs: BackgroundRuns,
    scope: HTTPScope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
) -> None:
    try:
        request = parse_turn_request(
            await read_request_body(scope, receive, settings.max_body_bytes)
        )
    except ClientGone:
        return
    except ApiError as exc:
        await send_api_error(send, exc)
        return
    owner = settings.identity(scope) or ""
    if request.background:
        turn = Turn(settings, scope, owner, request.for_background(), door="background")
        await runs.serve(turn, request.stream, receive, send)
        return
    await Turn(settings, scope, owner, request).run(send, receive)
