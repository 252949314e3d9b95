"""``ResponsesStateMiddleware``: config, routing, and pass-through for everything else."""

from __future__ import annotations

from typing import Any, Literal

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
)

from . import _defaults
from ._asgi import route_path
from ._background import BackgroundRuns
from ._background_endpoints import cancel_response, get_response
from ._bridge.turn import BridgeOptions
from ._bridge.upstream import ChatUpstream
from ._conversations import serve_conversations
from ._endpoints import delete_response, list_input_items
from ._http_turn import serve_turn
from ._identity import IdentityFunc, default_identity
from ._metrics import NO_METRICS, Metrics, measured_store
from ._settings import BackgroundSettings, Settings
from ._store import Store
from ._stores.memory import MemoryStore
from ._upstream import ResponsesUpstream, Upstream
from ._websocket import WebSocketSession, refuse_websocket

__all__ = ["ResponsesStateMiddleware"]

MaxTokensField = Literal["max_completion_tokens", "max_tokens"]


class ResponsesStateMiddleware:
    """Adds the stateful half of the OpenAI Responses API to a stateless ASGI app.

    ``POST {prefix}/responses`` requests naming ``previous_response_id`` reach the app
    with the whole stored conversation as ``input``; finished turns are stored;
    ``GET``/``DELETE {prefix}/responses/{id}`` and ``.../input_items`` are answered
    from the store. Every other request passes through untouched.

    With ``upstream_api="chat"`` the app only needs ``POST {prefix}/chat/completions``:
    Responses requests are translated to Chat Completions and the replies back
    (``system_role``, ``reasoning_field``, ``max_tokens_field`` and
    ``unsupported_tools`` tune the translation).

    ``metrics`` (e.g. ``state_middleware.metrics.PrometheusMetrics()``) records turns,
    store calls, waits, locks, background turns and WebSocket connections; without it
    nothing is recorded and the store is called directly.
    """

    def __init__(
        self,
        app: ASGI3Application,
        store: Store | None = None,
        *,
        prefix: str = _defaults.PREFIX,
        identity: IdentityFunc | None = None,
        max_body_bytes: int = _defaults.MAX_BODY_BYTES,
        pending_timeout: float = _defaults.PENDING_TIMEOUT,
        upstream_api: Literal["responses", "chat"] = _defaults.UPSTREAM_API,
        system_role: str = _defaults.SYSTEM_ROLE,
        reasoning_field: str = _defaults.REASONING_FIELD,
        max_tokens_field: Literal[
            "max_completion_tokens", "max_tokens"
        ] = _defaults.MAX_TOKENS_FIELD,
        unsupported_tools: Literal["reject", "drop"] = _defaults.UNSUPPORTED_TOOLS,
        background: BackgroundSettings | None = None,
        websocket: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError("prefix must start with '/' and not end with it, or be ''")
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if pending_timeout < 0:
            raise ValueError("pending_timeout must not be negative")
        if upstream_api not in ("responses", "chat"):
            raise ValueError("upstream_api must be 'responses' or 'chat'")
        upstream: Upstream
        if upstream_api == "chat":
            options = BridgeOptions(
                system_role=system_role,
                reasoning_field=reasoning_field,
                max_tokens_field=max_tokens_field,
                unsupported_tools=unsupported_tools,
            )
            upstream = ChatUpstream(options, prefix)
        else:
            _reject_bridge_options(
                system_role=system_role,
                reasoning_field=reasoning_field,
                max_tokens_field=max_tokens_field,
                unsupported_tools=unsupported_tools,
            )
            upstream = ResponsesUpstream()
        self.app = app
        self._store = store if store is not None else MemoryStore()
        self.metrics = metrics if metrics is not None else NO_METRICS
        self.settings = Settings(
            app=app,
            store=measured_store(self._store, self.metrics),
            identity=identity or default_identity,
            prefix=prefix,
            max_body_bytes=max_body_bytes,
            pending_timeout=pending_timeout,
            conversation_lease=_defaults.CONVERSATION_LEASE,
            upstream=upstream,
            background=background if background is not None else BackgroundSettings(),
            metrics=self.metrics,
        )
        self.background = BackgroundRuns(self.settings)
        self.metrics.watch_background(self.background)
        if isinstance(self._store, MemoryStore):
            self.metrics.watch_memory_store(self._store)
        self.websocket = websocket
        self._collection = prefix + "/responses"
        self._item_prefix = self._collection + "/"
        self._conversations = prefix + "/conversations"

    @property
    def store(self) -> Store:
        """The store given (or made), never wrapped."""
        return self._store

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] == "websocket" and route_path(scope) == self._collection:
            if self.websocket:
                self.metrics.websocket_connection(1)
                try:
                    await WebSocketSession(self.settings, scope, receive, send).run()
                finally:
                    self.metrics.websocket_connection(-1)
            else:
                await refuse_websocket(scope, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        method = scope["method"]
        if path == self._collection and method == "POST":
            await serve_turn(self.settings, self.background, scope, receive, send)
            return
        if path.startswith(self._item_prefix) and await self._stored(scope, path, receive, send):
            return
        if path.startswith(self._conversations) and await serve_conversations(
            self.settings, scope, receive, send, path[len(self._conversations) :]
        ):
            return
        await self.app(scope, receive, send)

    def _lifespan_receive(self, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
        """The app's lifespan ``receive``: at shutdown, background turns are given their
        grace period (then failed) before the app hears of it."""

        async def receive_shutdown() -> Any:
            message: Any = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.background.shutdown()
            return message

        return receive_shutdown

    async def _stored(
        self, scope: Any, path: str, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> bool:
        """Serve the stored-response endpoints; ``False`` when the route is not ours."""
        rest = path[len(self._item_prefix) :].split("/")
        method = scope["method"]
        store = self.settings.store
        query: bytes = scope.get("query_string", b"")
        if len(rest) == 1 and rest[0] and method in ("GET", "DELETE"):
            owner = self.settings.identity(scope) or ""
            if method == "GET":
                await get_response(self.settings, owner, rest[0], query, receive, send)
            else:
                await delete_response(send, store, owner, rest[0])
            return True
        if len(rest) == 2 and rest[0] and rest[1] == "cancel" and method == "POST":
            owner = self.settings.identity(scope) or ""
            await cancel_response(self.settings, owner, rest[0], send, self.background.stop_here)
            return True
        if len(rest) == 2 and rest[0] and rest[1] == "input_items" and method == "GET":
            owner = self.settings.identity(scope) or ""
            await list_input_items(send, store, owner, rest[0], query)
            return True
        return False


def _reject_bridge_options(**given: str) -> None:
    """Bridge options mean nothing to an app that speaks Responses: setting one is a
    mistake worth knowing about at start-up."""
    defaults = BridgeOptions()
    changed = sorted(name for name, value in given.items() if value != getattr(defaults, name))
    if changed:
        raise ValueError(f"{', '.join(changed)} only apply with upstream_api='chat'")
