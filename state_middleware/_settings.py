"""The validated configuration one middleware instance shares with its responders."""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.typing import ASGI3Application

from ._identity import IdentityFunc
from ._store import Store
from ._upstream import Upstream

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    app: ASGI3Application
    store: Store
    identity: IdentityFunc
    prefix: str
    max_body_bytes: int
    pending_timeout: float
    #: how long a turn may hold its conversation's lock
    conversation_lease: float
    #: how turns call the app (Responses itself, or the chat bridge)
    upstream: Upstream
