"""Prometheus metrics for the middleware (the ``[metrics]`` extra: ``prometheus_client``).

::

    from prometheus_client import CollectorRegistry
    from state_middleware.metrics import MetricsEndpoint, PrometheusMetrics

    registry = CollectorRegistry()  # or leave it out: prometheus_client's global one
    app = ResponsesStateMiddleware(app, metrics=PrometheusMetrics(registry))
    app = MetricsEndpoint(app, "/metrics", registry)  # GET /metrics: the exposition

Every metric is named ``state_middleware_*``; the README's "Metrics" section lists them.
One ``PrometheusMetrics`` per registry; several middlewares may share it (their gauges
add up).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope

from ._asgi import route_path
from ._extras import MISSING_METRICS_MESSAGE
from ._metrics import NOT_STORED, STORED, BackgroundGauges, MemoryGauges, Metrics, TurnStats

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.asgi import make_asgi_app
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(MISSING_METRICS_MESSAGE, name=exc.name) from exc

__all__ = ["Metrics", "MetricsEndpoint", "PrometheusMetrics", "TurnStats"]

_INF = float("inf")
#: a turn from request to stored: long for a model, short for a scripted app
TURN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, _INF)
#: a store call: a tenth of a millisecond (memory) to seconds (a Redis timing out)
STORE_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
    *(0.1, 0.25, 0.5, 1, 2.5, 5, _INF),
)
CONTEXT_ITEM_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, _INF)
#: 1 KiB to 64 MiB, by fours
CONTEXT_BYTE_BUCKETS = (*(1024 * 4**k for k in range(9)), _INF)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, _INF)


class PrometheusMetrics(Metrics):
    """Records into ``registry`` (default: ``prometheus_client.REGISTRY``)."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self.turns = Counter(
            "state_middleware_turns",
            "Turns by how they ended, front door and the API the app speaks.",
            ["outcome", "door", "upstream"],
            registry=registry,
        )
        self.turn_seconds = Histogram(
            "state_middleware_turn_seconds",
            "Seconds from request to stored (or to the end, store: false) of turns that succeeded.",
            ["door", "upstream"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.context_items = Histogram(
            "state_middleware_context_items",
            "Items replayed to the app per turn that continues a chain or a conversation.",
            buckets=CONTEXT_ITEM_BUCKETS,
            registry=registry,
        )
        self.context_bytes = Histogram(
            "state_middleware_context_bytes",
            "Bytes (JSON) replayed to the app per turn that continues a chain or a conversation.",
            buckets=CONTEXT_BYTE_BUCKETS,
            registry=registry,
        )
        self.store_seconds = Histogram(
            "state_middleware_store_seconds",
            "Seconds per store call, by operation (wait and read_events include the time waited).",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "state_middleware_store_errors",
            "Store calls that failed, by operation and error code.",
            ["op", "code"],
            registry=registry,
        )
        self.pending_wait_seconds = Histogram(
            "state_middleware_pending_wait_seconds",
            "Seconds a follow-up waited for the still running turn it continues.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.conversation_locks = Counter(
            "state_middleware_conversation_locks",
            "Conversation locks taken (acquired) or refused as conversation_locked.",
            ["result"],
            registry=registry,
        )
        self.websocket_connections = Gauge(
            "state_middleware_websocket_connections",
            "Open WebSocket connections.",
            registry=registry,
        )
        self.watched = _Watched()
        registry.register(self.watched)
        self._turn_children: dict[tuple[str, str, str], Any] = {}
        self._seconds_children: dict[tuple[str, str], Any] = {}
        self._store_children: dict[str, Any] = {}

    def turn(self, stats: TurnStats) -> None:
        key = (stats.outcome, stats.door, stats.upstream)
        counter = self._turn_children.get(key)
        if counter is None:
            counter = self._turn_children[key] = self.turns.labels(*key)
        counter.inc()
        if stats.history is not None:
            self.context_items.observe(stats.context_items)
            self.context_bytes.observe(stats.context_bytes)
        if stats.outcome in (STORED, NOT_STORED):
            seconds = self._seconds_children.get(key[1:])
            if seconds is None:
                seconds = self._seconds_children[key[1:]] = self.turn_seconds.labels(*key[1:])
            seconds.observe(stats.seconds)

    def store_call(self, op: str, seconds: float) -> None:
        histogram = self._store_children.get(op)
        if histogram is None:
            histogram = self._store_children[op] = self.store_seconds.labels(op)
        histogram.observe(seconds)

    def store_error(self, op: str, code: str) -> None:
        self.store_errors.labels(op, code).inc()

    def pending_wait(self, seconds: float) -> None:
        self.pending_wait_seconds.observe(seconds)

    def conversation_lock(self, acquired: bool) -> None:
        self.conversation_locks.labels("acquired" if acquired else "refused").inc()

    def websocket_connection(self, delta: int) -> None:
        self.websocket_connections.inc(delta)

    def watch_background(self, runs: BackgroundGauges) -> None:
        self.watched.runs.add(runs)

    def watch_memory_store(self, store: MemoryGauges) -> None:
        self.watched.stores.add(store)


class _Watched(Collector):
    """The gauges read at scrape time from the background turns and the ``MemoryStore``
    of every middleware using these metrics (held weakly)."""

    def __init__(self) -> None:
        self.runs: weakref.WeakSet[BackgroundGauges] = weakref.WeakSet()
        self.stores: weakref.WeakSet[MemoryGauges] = weakref.WeakSet()

    def describe(self) -> Iterable[Metric]:
        return self._families(collect=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(collect=True)

    def _families(self, *, collect: bool) -> list[Metric]:
        runs = list(self.runs) if collect else []
        stores = list(self.stores) if collect else []
        return [
            GaugeMetricFamily(
                "state_middleware_background_queued",
                "Background turns waiting for a slot.",
                value=sum(each.queued for each in runs),
            ),
            GaugeMetricFamily(
                "state_middleware_background_running",
                "Background turns running.",
                value=sum(each.running for each in runs),
            ),
            GaugeMetricFamily(
                "state_middleware_memory_store_bytes",
                "Bytes held by MemoryStore (expired entries dropped first).",
                value=sum(each.size for each in stores),
            ),
            CounterMetricFamily(
                "state_middleware_memory_store_evictions",
                "MemoryStore entries evicted to stay within max_bytes.",
                value=sum(each.evictions for each in stores),
            ),
        ]


class MetricsEndpoint:
    """``app`` with ``GET path`` answered with the Prometheus exposition of
    ``registry`` (default: ``prometheus_client.REGISTRY``); everything else is
    ``app``'s."""

    def __init__(
        self, app: ASGI3Application, path: str, registry: CollectorRegistry | None = None
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"the metrics path must start with '/', got {path!r}")
        self.app = app
        self.path = path
        self.exposition = make_asgi_app(REGISTRY if registry is None else registry)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and route_path(scope) == self.path:
            await self.exposition(scope, receive, send)
            return
        await self.app(scope, receive, send)
