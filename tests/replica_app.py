"""One replica for the multi-process tests: the scripted upstream behind the middleware,
storing in a Redis shared with the other replicas.

Run with ``python -m uvicorn tests.replica_app:app``; configured by environment:
``REDIS_URL`` (required) and ``DELAY`` (seconds before each SSE event, default 0).
"""

from __future__ import annotations

import os

from state_middleware import RedisStore, ResponsesStateMiddleware
from state_middleware.testing import ScriptedResponsesApp

app = ResponsesStateMiddleware(
    ScriptedResponsesApp(delay=float(os.environ.get("DELAY", "0"))),
    store=RedisStore.from_url(
        os.environ["REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=0.5
    ),
)
