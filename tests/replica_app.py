"""One replica for the multi-process tests: the scripted upstream behind the middleware,
storing in a Redis shared with the other replicas.

Run with ``python -m uvicorn tests.replica_app:app``; configured by environment:
``REDIS_URL`` (required), ``DELAY`` (seconds before each SSE event, default 0) and
``BACKGROUND_LEASE`` (seconds a background worker's lease lasts, default the package's).

A request with the header ``x-test-hold: <key>`` is held after the first chunk of its
reply until the test pushes to the Redis list ``<key>``: a gate across processes.
"""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio

from state_middleware import BackgroundSettings, RedisStore, ResponsesStateMiddleware
from state_middleware.testing import ScriptedResponsesApp

HOLD_HEADER = b"x-test-hold"

upstream = ScriptedResponsesApp(delay=float(os.environ.get("DELAY", "0")))


async def held_upstream(scope: Any, receive: Any, send: Any) -> None:
    hold = dict(scope.get("headers", [])).get(HOLD_HEADER) if scope["type"] == "http" else None
    if hold is None:
        await upstream(scope, receive, send)
        return
    chunks = 0

    async def send_held(message: Any) -> None:
        nonlocal chunks
        if message["type"] == "http.response.body":
            chunks += 1
            if chunks == 2:
                async with redis.asyncio.Redis.from_url(os.environ["REDIS_URL"]) as gate:
                    await gate.blpop([hold.decode()], timeout=0)
        await send(message)

    await upstream(scope, receive, send_held)


lease = float(os.environ.get("BACKGROUND_LEASE", "20"))
app = ResponsesStateMiddleware(
    held_upstream,
    background=BackgroundSettings(lease=lease, heartbeat=lease / 8),
    store=RedisStore.from_url(
        os.environ["REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=0.5
    ),
)
