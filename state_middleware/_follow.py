"""Streaming a background response's recorded events: to the client that created it
with ``stream: true``, and to any client that resumes it with
``GET {prefix}/responses/{id}?stream=true[&starting_after=N]``, on any replica.

The events come from the store, numbered from 0, each framed as the SSE a live stream
has (``event: <type>`` and ``data: <payload>``), so the bytes a resumed client gets,
joined to what it had, are one uninterrupted stream. Following ends after the last
event of a finished response, when the client leaves, or when the events can no longer
be read (expired), which is said with an ``error`` event. While no event comes, the
response's state is looked at every ``heartbeat`` seconds, so that one whose worker died
is seen to have failed (the store fails it when its lease is over).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._settings import Settings
from ._sse import format_frame
from ._store import StoreError

__all__ = ["EVENTS_GONE_MESSAGE", "follow_events"]

EVENTS_GONE_MESSAGE = (
    "The events of this background response are no longer kept; retrieve the response "
    "instead of streaming it."
)


class _Kind(msgspec.Struct):
    type: str = "message"


_kind = msgspec.json.Decoder(_Kind)
_encoder = msgspec.json.Encoder()
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


async def follow_events(
    settings: Settings,
    owner: str,
    response_id: str,
    after: int,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
) -> None:
    """Send the events numbered above ``after`` as an SSE stream, then follow live."""
    start: Any = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
    gone = asyncio.ensure_future(_client_gone(receive))
    try:
        await send(start)
        await _follow(settings, owner, response_id, after, send, gone)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:  # the client went away while we sent: nothing more to do
        return
    finally:
        gone.cancel()


async def _follow(
    settings: Settings,
    owner: str,
    response_id: str,
    after: int,
    send: ASGISendCallable,
    gone: asyncio.Future[None],
) -> None:
    store = settings.store
    while not gone.done():
        try:
            read = await store.read_events(owner, response_id, after, settings.background.heartbeat)
            if read is not None and not read[0] and not read[1]:
                # Nothing for a while: a response whose worker died ends here.
                await store.get_background(owner, response_id)
        except StoreError as exc:
            await _send_error(send, after, "store_unavailable", f"{exc}")
            return
        if read is None:
            await _send_error(send, after, "events_expired", EVENTS_GONE_MESSAGE)
            return
        events, finished = read
        if events:
            frames = [format_frame(_kind.decode(event).type, event) for event in events]
            after += len(events)
            body: Any = {"type": "http.response.body", "body": b"".join(frames), "more_body": True}
            await send(body)
        if finished:
            return


async def _client_gone(receive: ASGIReceiveCallable) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send_error(send: ASGISendCallable, after: int, code: str, message: str) -> None:
    payload = _encoder.encode(
        {
            "type": "error",
            "sequence_number": after + 1,
            "code": code,
            "message": message,
            "param": None,
        }
    )
    await send(
        {"type": "http.response.body", "body": format_frame("error", payload), "more_body": True}
    )
