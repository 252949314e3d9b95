"""A standalone stateful proxy: any OpenAI-compatible server, behind the middleware.

``create_app(upstream=...)`` returns ``ResponsesStateMiddleware(ForwardingApp(...))``:
every request goes to the upstream server (streamed both ways, pooled connections), and
the middleware adds the stateful Responses API on top. Run it with the command line
(``state-middleware serve --upstream URL``), or under your own ASGI server::

    app = create_app(upstream="http://127.0.0.1:8000/v1", upstream_api="chat")

    # or, reading the settings from the environment:
    STATE_MIDDLEWARE_UPSTREAM=http://127.0.0.1:8000/v1 \\
        uvicorn --factory state_middleware.proxy:create_app

Keep the server's lifespan on (uvicorn's default): shutdown closes the upstream pool.
"""

from __future__ import annotations

import os
from typing import Literal, cast

from . import _defaults
from ._forward import ForwardingApp
from ._identity import IdentityFunc
from ._metrics import Metrics
from ._middleware import ResponsesStateMiddleware
from ._settings import BackgroundSettings
from ._store import Store

__all__ = [
    "REDIS_URL_ENV",
    "UPSTREAM_API_ENV",
    "UPSTREAM_ENV",
    "ForwardingApp",
    "create_app",
]

UPSTREAM_ENV = "STATE_MIDDLEWARE_UPSTREAM"
UPSTREAM_API_ENV = "STATE_MIDDLEWARE_UPSTREAM_API"
REDIS_URL_ENV = "STATE_MIDDLEWARE_REDIS_URL"


def create_app(
    upstream: str | None = None,
    *,
    upstream_api: Literal["responses", "chat"] | None = None,
    store: Store | None = None,
    connect_timeout: float = _defaults.CONNECT_TIMEOUT,
    read_timeout: float = _defaults.READ_TIMEOUT,
    prefix: str = _defaults.PREFIX,
    identity: IdentityFunc | None = None,
    max_body_bytes: int = _defaults.MAX_BODY_BYTES,
    pending_timeout: float = _defaults.PENDING_TIMEOUT,
    system_role: str = _defaults.SYSTEM_ROLE,
    reasoning_field: str = _defaults.REASONING_FIELD,
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = _defaults.MAX_TOKENS_FIELD,
    unsupported_tools: Literal["reject", "drop"] = _defaults.UNSUPPORTED_TOOLS,
    background: BackgroundSettings | None = None,
    websocket: bool = True,
    metrics: Metrics | None = None,
) -> ResponsesStateMiddleware:
    """The proxy as an ASGI app: the middleware wrapping a ``ForwardingApp``.

    ``upstream`` is the base URL requests go to (``prefix``, ``/v1`` by default, is
    stripped from the incoming path and the rest appended to it). ``upstream_api`` is
    what the upstream speaks: ``"responses"`` or ``"chat"`` (Chat Completions only;
    Responses requests are translated). Left out, ``upstream``, ``upstream_api`` and a
    Redis store come from ``STATE_MIDDLEWARE_UPSTREAM``, ``STATE_MIDDLEWARE_UPSTREAM_API``
    and ``STATE_MIDDLEWARE_REDIS_URL``; the default store is a ``MemoryStore``.
    ``connect_timeout`` and ``read_timeout`` (seconds) bound connecting to the upstream
    and each wait for its data. The other keywords are ``ResponsesStateMiddleware``'s,
    with its defaults, and are passed to it as they are.
    """
    upstream = upstream or os.environ.get(UPSTREAM_ENV)
    if not upstream:
        raise ValueError(f"no upstream: pass upstream= or set {UPSTREAM_ENV}")
    api = upstream_api or os.environ.get(UPSTREAM_API_ENV) or _defaults.UPSTREAM_API
    if api not in ("responses", "chat"):
        raise ValueError(f"upstream_api must be 'responses' or 'chat', got {api!r}")
    if store is None and os.environ.get(REDIS_URL_ENV):
        from ._stores.redis import RedisStore

        store = RedisStore.from_url(os.environ[REDIS_URL_ENV])
    forward = ForwardingApp(
        upstream,
        prefix=prefix,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return ResponsesStateMiddleware(
        forward,
        store,
        prefix=prefix,
        identity=identity,
        max_body_bytes=max_body_bytes,
        pending_timeout=pending_timeout,
        upstream_api=cast(Literal["responses", "chat"], api),
        system_role=system_role,
        reasoning_field=reasoning_field,
        max_tokens_field=max_tokens_field,
        unsupported_tools=unsupported_tools,
        background=background,
        websocket=websocket,
        metrics=metrics,
    )
