"""``GET {prefix}/responses/{id}`` (a stored response, or a background response as it
stands; ``?stream=true[&starting_after=N]`` streams a background one) and
``POST {prefix}/responses/{id}/cancel``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._asgi import send_api_error, send_json
from ._errors import ApiError, response_not_found, store_failed
from ._follow import follow_events
from ._ids import ID_PATTERN
from ._record import BackgroundState, response_with_output
from ._settings import Settings
from ._snapshot import ResponseSnapshot
from ._store import StoreError

__all__ = [
    "NOT_BACKGROUND_CANCEL",
    "NOT_BACKGROUND_STREAM",
    "NOT_STREAMED",
    "cancel_response",
    "get_response",
]

NOT_BACKGROUND_STREAM = (
    "Streaming a stored response is only possible for background responses created with "
    "stream=true."
)
NOT_STREAMED = (
    "You can only start a new stream from a background response if you created it with stream=true."
)
NOT_BACKGROUND_CANCEL = "Only responses created with background=true can be cancelled."
_encoder = msgspec.json.Encoder()


async def get_response(
    settings: Settings,
    owner: str,
    response_id: str,
    query: bytes,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
) -> None:
    store = settings.store
    try:
        stream, after = _stream_params(query)
        if not ID_PATTERN.fullmatch(response_id):
            raise response_not_found(response_id)
        if stream:
            state = await store.get_background(owner, response_id)
            if state is None:
                if await store.get(owner, response_id) is not None:
                    raise ApiError(400, NOT_BACKGROUND_STREAM, param="stream")
                raise response_not_found(response_id)
            if not state.stream:
                raise ApiError(400, NOT_STREAMED, param="stream")
        else:
            body = await _current(settings, owner, response_id)
            if body is None:
                raise response_not_found(response_id)
            await send_json(send, 200, body)
            return
    except StoreError as exc:
        await send_api_error(send, store_failed(exc.code))
        return
    except ApiError as exc:
        await send_api_error(send, exc)
        return
    await follow_events(settings, owner, response_id, after, receive, send)


async def cancel_response(
    settings: Settings,
    owner: str,
    response_id: str,
    send: ASGISendCallable,
    stop_here: Callable[[str, str], None],
) -> None:
    """Ask a background response to stop and answer it as it ends (or as it stands,
    ``cancelled``, if its worker has not stopped within ``cancel_wait``)."""
    store = settings.store
    try:
        state = (
            await store.get_background(owner, response_id)
            if ID_PATTERN.fullmatch(response_id)
            else None
        )
        if state is None:
            if ID_PATTERN.fullmatch(response_id) and await store.get(owner, response_id):
                raise ApiError(400, NOT_BACKGROUND_CANCEL)
            raise response_not_found(response_id)
        if not state.finished:
            await store.cancel_background(owner, response_id)
            stop_here(owner, response_id)
            state = await _wait_finished(settings, owner, response_id, state)
        body = await _current(settings, owner, response_id, cancelling=True)
        if body is None:
            raise response_not_found(response_id)
    except StoreError as exc:
        await send_api_error(send, store_failed(exc.code))
        return
    except ApiError as exc:
        await send_api_error(send, exc)
        return
    await send_json(send, 200, body)


async def _wait_finished(
    settings: Settings, owner: str, response_id: str, state: BackgroundState
) -> BackgroundState:
    store = settings.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.background.cancel_wait
    after = state.events - 1
    while not state.finished:
        left = deadline - loop.time()
        if left <= 0:
            break
        read = await store.read_events(
            owner, response_id, after, min(left, settings.background.heartbeat)
        )
        if read is not None:
            after += len(read[0])
        latest = await store.get_background(owner, response_id)
        if latest is None:
            break
        state = latest
    return state


async def _current(
    settings: Settings, owner: str, response_id: str, *, cancelling: bool = False
) -> bytes | None:
    """The response as it stands: stored, finished, or folded from its events so far
    (``cancelled`` when a cancel is waiting for a worker that has not stopped yet)."""
    store = settings.store
    record = await store.get(owner, response_id)
    if record is not None:
        return response_with_output(record)
    state = await store.get_background(owner, response_id)
    if state is None:
        return None
    if state.finished:
        return state.response
    read = await store.read_events(owner, response_id, -1, 0)
    snapshot = ResponseSnapshot(state.response)
    snapshot.feed_all(read[0] if read is not None else [])
    status = "cancelled" if cancelling else state.status
    return snapshot.response_json(status=status)


def _stream_params(query: bytes) -> tuple[bool, int]:
    params: dict[str, Any] = dict(parse_qsl(query.decode("latin-1")))
    stream = str(params.get("stream", "false")).lower() == "true"
    raw = params.get("starting_after")
    if raw is None:
        return stream, -1
    try:
        after = int(raw)
    except ValueError:
        raise ApiError(
            400,
            f"Invalid 'starting_after': expected an integer, got '{raw}'.",
            param="starting_after",
            code="invalid_type",
        ) from None
    if after < -1:
        raise ApiError(
            400,
            f"Invalid 'starting_after': expected a sequence number, got '{raw}'.",
            param="starting_after",
            code="invalid_value",
        )
    return stream, after
