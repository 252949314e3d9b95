"""What the middleware reports about itself, and the hooks it reports through.

:class:`Metrics` is the set of hooks the pipeline calls: a turn ended, a store call
took so long or failed, a follow-up waited for a pending turn, a conversation lock was
taken or refused, a WebSocket opened or closed; plus two ``watch_*`` calls made once at
start-up for the gauges read at scrape time (background turns, ``MemoryStore`` bytes and
evictions). Every hook does nothing here: this class is the default, so an instance
without metrics pays a method call at most. ``enabled`` says whether anything listens;
when it does not, the store is not wrapped (:class:`MeasuredStore`) and no turn's
context is counted. :class:`~state_middleware.metrics.PrometheusMetrics` is the real
one (the ``[metrics]`` extra).

Each turn also ends with one DEBUG line on the ``state_middleware`` logger
(:data:`TURN_LOG_FORMAT`): ids, sizes and timings, never content, and the owner only as
a prefix of its digest.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, Protocol, cast

import msgspec

from ._errors import ApiError
from ._store import Store, StoreError

__all__ = [
    "CANCELLED",
    "FAILED",
    "NOT_FOUND",
    "NOT_STORED",
    "NO_METRICS",
    "OUTCOMES",
    "REFUSED",
    "STORED",
    "STORE_ERROR",
    "STORE_OPERATIONS",
    "TURN_LOG_FORMAT",
    "MeasuredStore",
    "Metrics",
    "TurnStats",
    "measured_store",
    "outcome_of_refusal",
    "report_turn",
]

logger = logging.getLogger("state_middleware")

# -- how a turn ended ------------------------------------------------------------------
STORED = "stored"  # completed or incomplete, and stored
NOT_STORED = "not_stored"  # completed or incomplete with store: false
FAILED = "failed"  # the app's reply was no success (error status, failed, cut, raised)
CANCELLED = "cancelled"  # the caller left, or a background turn was cancelled
NOT_FOUND = "not_found"  # the previous response, conversation or an item was not found
REFUSED = "refused"  # any other 4xx before the app was called (conversation_locked, 429)
STORE_ERROR = "store_error"  # the store failed loading the context or storing the turn
OUTCOMES = (STORED, NOT_STORED, FAILED, CANCELLED, NOT_FOUND, REFUSED, STORE_ERROR)

#: every method of the ``Store`` protocol: the ``op`` label of the store metrics
STORE_OPERATIONS = tuple(name for name, _ in inspect.getmembers(Store, inspect.iscoroutinefunction))

#: the per-turn DEBUG line: response id, owner digest prefix, door, upstream mode,
#: outcome, replayed context (items, bytes), milliseconds before the app was called
#: (lock, history, any pending wait), storing, and in all
TURN_LOG_FORMAT = (
    "turn %s owner=%s door=%s upstream=%s outcome=%s context_items=%d context_bytes=%d "
    "load_ms=%.1f store_ms=%.1f total_ms=%.1f"
)
_OWNER_PREFIX = 8  # hex digits of the owner digest a log line shows

_items_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class TurnStats:
    """What is known of one turn when it ends (no content: sizes and timings)."""

    __slots__ = (
        "door",
        "ended",
        "history",
        "outcome",
        "prepared",
        "started",
        "store_seconds",
        "upstream",
    )

    def __init__(self, door: str, upstream: str) -> None:
        #: ``http``, ``background`` or ``websocket``
        self.door = door
        #: ``responses`` or ``chat``
        self.upstream = upstream
        self.outcome = ""
        #: the replayed context (a JSON array), ``None`` for a turn that continues nothing
        self.history: bytes | None = None
        self.started = perf_counter()
        self.prepared = self.started  # when the app could be called
        self.ended = self.started
        self.store_seconds = 0.0  # spent storing the finished turn

    @property
    def context_bytes(self) -> int:
        return 0 if self.history is None else len(self.history)

    @property
    def context_items(self) -> int:
        """Items of the replayed context (counted when asked: a scan of its JSON)."""
        return 0 if self.history is None else len(_items_decoder.decode(self.history))

    @property
    def load_seconds(self) -> float:
        return self.prepared - self.started

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class BackgroundGauges(Protocol):
    """What the background gauges read (``BackgroundRuns``)."""

    @property
    def queued(self) -> int: ...

    @property
    def running(self) -> int: ...


class MemoryGauges(Protocol):
    """What the in-memory store gauges read (``MemoryStore``)."""

    @property
    def size(self) -> int: ...

    @property
    def evictions(self) -> int: ...


class Metrics:
    """Hooks that do nothing: the default, and the base of a real backend, which
    overrides what it records and sets ``enabled``."""

    #: whether anything records: when false the store is called directly and no turn's
    #: context is counted
    enabled = False

    def turn(self, stats: TurnStats) -> None:
        """A turn ended (called once per turn, whatever its outcome)."""

    def store_call(self, op: str, seconds: float) -> None:
        """A store call returned or raised after ``seconds``."""

    def store_error(self, op: str, code: str) -> None:
        """A store call raised ``StoreError`` with ``code``."""

    def pending_wait(self, seconds: float) -> None:
        """A follow-up waited ``seconds`` for the turn it continues to end."""

    def conversation_lock(self, acquired: bool) -> None:
        """A turn took its conversation's lock, or was refused ``conversation_locked``."""

    def websocket_connection(self, delta: int) -> None:
        """A WebSocket connection opened (``+1``) or closed (``-1``)."""

    def watch_background(self, runs: BackgroundGauges) -> None:
        """Called once per middleware: its background turns, read at scrape time."""

    def watch_memory_store(self, store: MemoryGauges) -> None:
        """Called once per middleware whose store is a ``MemoryStore``."""


#: the no-op hooks every middleware without metrics shares
NO_METRICS = Metrics()


def outcome_of_refusal(exc: BaseException) -> str:
    """The outcome of a turn that ended with ``exc`` before the app was called."""
    if isinstance(exc, ApiError):
        if exc.status == 404 or exc.code == "previous_response_not_found":
            return NOT_FOUND
        return REFUSED if exc.status < 500 else FAILED
    if isinstance(exc, StoreError):
        return STORE_ERROR
    return FAILED if isinstance(exc, Exception) else CANCELLED


def report_turn(metrics: Metrics, stats: TurnStats, response_id: str, owner: str) -> None:
    """Hand an ended turn to ``metrics`` and, at DEBUG, log its line."""
    stats.ended = perf_counter()
    metrics.turn(stats)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            TURN_LOG_FORMAT,
            response_id,
            owner[:_OWNER_PREFIX] or "-",
            stats.door,
            stats.upstream,
            stats.outcome,
            stats.context_items,
            stats.context_bytes,
            stats.load_seconds * 1000,
            stats.store_seconds * 1000,
            stats.seconds * 1000,
        )


class MeasuredStore:
    """A store whose every call (each ``Store`` method) is timed and whose
    ``StoreError``\\ s are counted; anything else is the wrapped store's own."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        for op in STORE_OPERATIONS:
            setattr(self, op, _measured(op, getattr(store, op), metrics))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def measured_store(store: Store, metrics: Metrics) -> Store:
    """``store`` itself when nothing records, else it wrapped in a :class:`MeasuredStore`."""
    if not metrics.enabled:
        return store
    return cast(Store, MeasuredStore(store, metrics))


def _measured(
    op: str, call: Callable[..., Awaitable[Any]], metrics: Metrics
) -> Callable[..., Awaitable[Any]]:
    async def measured(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        try:
            return await call(*args, **kwargs)
        except StoreError as exc:
            metrics.store_error(op, exc.code)
            raise
        finally:
            metrics.store_call(op, perf_counter() - started)

    return measured
