"""What a soak middleware process serves: ``ResponsesStateMiddleware`` with a
``RedisStore`` in front of an upstream that answers with a digest of the history it got.

``python -m uvicorn _soak_app:middleware --factory`` with ``SOAK_REDIS_URL`` set (a
single Redis, or any node of a Redis Cluster: ``RedisStore.from_url`` tells which).

The upstream is ``ScriptedResponsesApp``, scripted to answer every request with
``history_digest`` of its input items, so a client that knows which turns its chain
holds can tell whether the upstream saw exactly those items, in order (``expected``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

import state_middleware
from state_middleware import RedisStore, ResponsesStateMiddleware
from state_middleware.testing import ReceivedRequest, ScriptedResponsesApp

__all__ = ["HistoryDigestApp", "expected", "history_digest", "middleware"]

REDIS_URL_VARIABLE = "SOAK_REDIS_URL"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and "text" in part
        )
    return repr(content)


def history_digest(items: Iterable[Mapping[str, Any]]) -> str:
    """``<n> items <hash>``: how many items and a hash of each one's type, role and text
    in order (what the upstream answers, and what the client expects)."""
    digest = hashlib.blake2b(digest_size=16)
    count = 0
    for item in items:
        kind = item.get("type", "message")
        digest.update(f"{kind}\x1f{item.get('role')}\x1f{_text(item.get('content'))}\x1e".encode())
        count += 1
    return f"{count} items {digest.hexdigest()}"


def expected(turns: Iterable[tuple[str, str]], user_text: str) -> str:
    """The digest the upstream must answer for a turn sending ``user_text`` after
    ``turns`` (the chain's (user text, assistant text) pairs, oldest first)."""
    items: list[dict[str, Any]] = []
    for user, assistant in turns:
        items.append({"type": "message", "role": "user", "content": user})
        items.append({"type": "message", "role": "assistant", "content": assistant})
    items.append({"type": "message", "role": "user", "content": user_text})
    return history_digest(items)


def _digest_reply(request: ReceivedRequest) -> dict[str, Any]:
    received = request.body.get("input")
    if isinstance(received, str):
        received = [{"type": "message", "role": "user", "content": received}]
    return {"text": history_digest(received if isinstance(received, list) else [])}


class HistoryDigestApp:
    """``ScriptedResponsesApp`` answering every request with ``history_digest`` of its
    input; it keeps no log of the requests (a soak sends thousands of long ones)."""

    def __init__(self) -> None:
        self.upstream = ScriptedResponsesApp()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            # Every entry is the same: which request pops which does not matter.
            self.upstream.script.append(_digest_reply)
            self.upstream.requests.clear()
        await self.upstream(scope, receive, send)


def middleware() -> ResponsesStateMiddleware:
    """The app of one soak process (a uvicorn ``--factory``); says on stderr which
    ``state_middleware`` it runs."""
    print(f"soak app: {Path(state_middleware.__file__).parent}", file=sys.stderr)
    store = RedisStore.from_url(os.environ[REDIS_URL_VARIABLE])
    return ResponsesStateMiddleware(HistoryDigestApp(), store=store)
