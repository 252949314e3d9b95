"""The ``state-middleware`` command: ``state-middleware serve --upstream URL [options]``.

Also ``python -m state_middleware serve ...``. ``serve`` needs uvicorn, httpx and anyio
(``pip install "state-middleware[serve]"``); ``--redis-url`` needs the ``redis`` extra,
``--metrics`` and ``--metrics-port`` the ``metrics`` extra. They are imported when
``serve`` runs, so ``--help`` and ``--version`` need none of them.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__, _defaults
from ._metrics import Metrics
from ._store import Store

__all__ = ["MISSING_EXTRA_MESSAGE", "build_parser", "main"]

MISSING_EXTRA_MESSAGE = (
    'state-middleware serve needs uvicorn, httpx and anyio: pip install "state-middleware[serve]"'
)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

logger = logging.getLogger("state_middleware.proxy")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="state-middleware",
        description="Stateful OpenAI Responses API in front of any OpenAI-compatible server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the stateful proxy",
        description=(
            "Serve a proxy that forwards every request to --upstream and adds the stateful "
            "Responses API (previous_response_id, GET/DELETE /v1/responses/{id}, "
            "input_items). A request to PREFIX/x goes to UPSTREAM/x: the prefix is "
            "stripped from the path and the rest appended to the upstream URL, query "
            "string kept. An upstream that cannot be reached is answered with 502, one "
            "that times out with 504."
        ),
        formatter_class=_HelpFormatter,
    )
    serve.set_defaults(parser=serve)  # errors are reported with serve's usage
    upstream = serve.add_argument_group("upstream")
    upstream.add_argument(
        "--upstream",
        required=True,
        metavar="URL",
        help="base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1",
    )
    upstream.add_argument(
        "--upstream-api",
        choices=("responses", "chat"),
        default=_defaults.UPSTREAM_API,
        help="what the upstream serves: the Responses API, or only Chat Completions "
        "(Responses requests are then translated to Chat Completions)",
    )
    upstream.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=_defaults.CONNECT_TIMEOUT,
        metavar="S",
        help="seconds to open a connection to the upstream before answering 502",
    )
    upstream.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=_defaults.READ_TIMEOUT,
        metavar="S",
        help="seconds to wait for upstream data before answering 504 (or, once the reply "
        "has started, ending it)",
    )
    listen = serve.add_argument_group("listening")
    listen.add_argument("--host", default=_defaults.HOST, help="address to bind")
    listen.add_argument("--port", type=int, default=_defaults.PORT, help="port to bind")
    listen.add_argument(
        "--prefix",
        default=_defaults.PREFIX,
        help="path prefix of the API, stripped before the path is appended to --upstream",
    )
    listen.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=_defaults.LOG_LEVEL,
        help="log level of the server",
    )
    listen.add_argument("--access-log", action="store_true", help="log every request")
    listen.add_argument(
        "--metrics",
        metavar="PATH",
        help="serve Prometheus metrics at GET PATH of this server, e.g. /metrics "
        "(needs the metrics extra)",
    )
    listen.add_argument(
        "--metrics-port",
        type=_positive_int,
        metavar="N",
        help="serve Prometheus metrics on port N of --host, apart from the API "
        "(needs the metrics extra)",
    )
    listen.add_argument(
        "--no-websocket",
        action="store_true",
        help="refuse WebSocket mode on PREFIX/responses (the handshake is answered with "
        "426, and clients such as Codex use HTTP)",
    )
    state = serve.add_argument_group("stored responses")
    state.add_argument(
        "--redis-url",
        metavar="URL",
        help="keep responses in Redis (shared by processes, survives restarts) instead "
        "of this process's memory, e.g. redis://127.0.0.1:6379/0 (or any node of a Redis "
        "Cluster)",
    )
    state.add_argument(
        "--ttl",
        type=_positive_float,
        metavar="S",
        help="seconds an unused response is kept, refreshed on use (default: "
        f"{_defaults.MEMORY_TTL:g} in memory, {_defaults.REDIS_TTL:g} in Redis)",
    )
    state.add_argument(
        "--max-bytes",
        type=_positive_int,
        metavar="N",
        help="bytes of responses kept in memory, least recently used evicted first "
        f"(default: {_defaults.MEMORY_MAX_BYTES}); not with --redis-url, as Redis is "
        "bounded by its maxmemory",
    )
    state.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=_defaults.MAX_BODY_BYTES,
        metavar="N",
        help="largest Responses request body accepted (413 past it)",
    )
    state.add_argument(
        "--pending-timeout",
        type=float,
        default=_defaults.PENDING_TIMEOUT,
        metavar="S",
        help="seconds a follow-up waits for the turn it continues to finish",
    )
    bridge = serve.add_argument_group("with --upstream-api chat")
    bridge.add_argument(
        "--system-role",
        default=_defaults.SYSTEM_ROLE,
        metavar="ROLE",
        help="role of the message carrying instructions (some servers want 'developer')",
    )
    bridge.add_argument(
        "--reasoning-field",
        default=_defaults.REASONING_FIELD,
        metavar="FIELD",
        help="message field carrying reasoning text sent back to the upstream "
        "('reasoning' for Ollama and newer vLLM)",
    )
    bridge.add_argument(
        "--max-tokens-field",
        choices=("max_completion_tokens", "max_tokens"),
        default=_defaults.MAX_TOKENS_FIELD,
        help="field max_output_tokens becomes",
    )
    bridge.add_argument(
        "--unsupported-tools",
        choices=("reject", "drop"),
        default=_defaults.UNSUPPORTED_TOOLS,
        help="what to do with tools Chat Completions cannot express: answer 400, or drop them",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args.parser
    if args.redis_url and args.max_bytes is not None:
        parser.error("--max-bytes applies to the in-memory store, not with --redis-url")
    if args.metrics is not None and not args.metrics.startswith("/"):
        parser.error("--metrics must be a path starting with '/', e.g. /metrics")
    try:
        import uvicorn

        from .proxy import create_app
    except ImportError:
        print(MISSING_EXTRA_MESSAGE, file=sys.stderr)
        return 1
    try:
        metrics = _metrics(args)
    except ImportError as exc:  # --metrics without prometheus_client
        print(str(exc), file=sys.stderr)
        return 1
    try:
        app: Any = create_app(
            upstream=args.upstream,
            upstream_api=args.upstream_api,
            store=_store(args),
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            prefix=args.prefix,
            max_body_bytes=args.max_body_bytes,
            pending_timeout=args.pending_timeout,
            system_role=args.system_role,
            reasoning_field=args.reasoning_field,
            max_tokens_field=args.max_tokens_field,
            unsupported_tools=args.unsupported_tools,
            metrics=metrics,
            websocket=not args.no_websocket,
        )
    except ImportError as exc:  # --redis-url without the redis client
        print(str(exc), file=sys.stderr)
        return 1
    except ValueError as exc:
        parser.error(str(exc))
    if args.metrics is not None:
        from .metrics import MetricsEndpoint

        app = MetricsEndpoint(app, args.metrics)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.host)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        log_config=_log_config(uvicorn.config.LOGGING_CONFIG, args.log_level),
        log_level=args.log_level,
        access_log=args.access_log,
        # The upstream's own Server and Date headers are passed on.
        server_header=False,
        date_header=False,
    )
    store = "redis" if args.redis_url else "memory"
    logger.info(
        "proxying http://%s:%d%s -> %s (%s API, %s store)",
        args.host,
        args.port,
        args.prefix,
        args.upstream,
        args.upstream_api,
        store,
    )
    uvicorn.Server(config).run()
    return 0


def _metrics(args: argparse.Namespace) -> Metrics | None:
    """Metrics in prometheus_client's global registry (with its process and platform
    collectors) when they are to be served."""
    if args.metrics is None and args.metrics_port is None:
        return None
    from .metrics import PrometheusMetrics

    return PrometheusMetrics()


def _store(args: argparse.Namespace) -> Store:
    if args.redis_url:
        from ._stores.redis import RedisStore

        if args.ttl is None:
            return RedisStore.from_url(args.redis_url)
        return RedisStore.from_url(args.redis_url, ttl=args.ttl)
    from ._stores.memory import MemoryStore

    options: dict[str, Any] = {}
    if args.ttl is not None:
        options["ttl"] = args.ttl
    if args.max_bytes is not None:
        options["max_bytes"] = args.max_bytes
    return MemoryStore(**options)


def _log_config(base: dict[str, Any], level: str) -> dict[str, Any]:
    """uvicorn's logging setup, with the ``state_middleware`` loggers added."""
    config = copy.deepcopy(base)
    config["loggers"]["state_middleware"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
