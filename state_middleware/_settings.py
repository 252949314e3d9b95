"""The validated configuration one middleware instance shares with its responders."""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.typing import ASGI3Application

from . import _defaults
from ._identity import IdentityFunc
from ._metrics import NO_METRICS, Metrics
from ._store import Store
from ._upstream import Upstream

__all__ = ["BackgroundSettings", "Settings"]


@dataclass(frozen=True, slots=True)
class BackgroundSettings:
    """Bounds of background turns (see :mod:`._background`)."""

    #: turns running at once in this process; others wait as ``queued``
    running: int = _defaults.BACKGROUND_RUNNING
    #: turns waiting; past ``running + queued`` a new one is refused with 429
    queued: int = _defaults.BACKGROUND_QUEUED
    #: seconds a worker's lease lasts unless renewed (a dead worker's turn fails then)
    lease: float = _defaults.BACKGROUND_LEASE
    #: seconds between renewals of the lease and looks for a cancel
    heartbeat: float = _defaults.BACKGROUND_HEARTBEAT
    #: seconds running turns get on shutdown before they are failed
    grace: float = _defaults.BACKGROUND_GRACE
    #: seconds a cancel waits for the turn to stop before it answers
    cancel_wait: float = _defaults.BACKGROUND_CANCEL_WAIT

    def __post_init__(self) -> None:
        if self.running < 1 or self.queued < 0:
            raise ValueError("background running must be >= 1 and queued >= 0")
        if not 0 < self.heartbeat < self.lease:
            raise ValueError("background heartbeat must be positive and below the lease")
        if self.grace < 0 or self.cancel_wait < 0:
            raise ValueError("background grace and cancel_wait must not be negative")


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
    background: BackgroundSettings = BackgroundSettings()
    #: what the pipeline reports to (hooks that do nothing unless metrics were given)
    metrics: Metrics = NO_METRICS
