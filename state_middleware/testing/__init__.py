"""Test helpers: fake stateless upstreams and a streaming in-process httpx transport.

``StreamingASGITransport`` needs ``httpx``; it is imported on first use, so the fake
apps work without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._chat_app import ScriptedChatApp
from ._responses_app import ReceivedRequest, ScriptedResponsesApp

if TYPE_CHECKING:
    from ._transport import StreamingASGITransport

__all__ = [
    "ReceivedRequest",
    "ScriptedChatApp",
    "ScriptedResponsesApp",
    "StreamingASGITransport",
]


def __getattr__(name: str) -> Any:
    if name == "StreamingASGITransport":
        from ._transport import StreamingASGITransport

        return StreamingASGITransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
