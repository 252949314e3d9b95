"""Real servers for tests: uvicorn serving an ASGI app on 127.0.0.1 in a thread, and
the one readiness poll for servers started as subprocesses."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from ._sync import HANG_GUARD

#: how long a subprocess may take to start serving
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until_serving(
    ready: Callable[[], bool], process: subprocess.Popen[Any], what: str
) -> None:
    """Poll ``ready`` until it holds; raise if ``process`` exits or ``START_TIMEOUT``
    passes first.

    The only polling loop of the suite. A server in another process has no event to wait
    on (they log at warning level, so not even a "running on" line), and this waits for
    readiness, not for any behaviour a test checks.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)


class _Server(uvicorn.Server):
    """A uvicorn server that says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


@contextmanager
def serve(app: Any, **config: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1; yields the base URL (no trailing slash)."""
    port = free_port()
    server = _Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            **config,
        )
    )
    thread = threading.Thread(target=_run_then_say_so, args=(server,), daemon=True)
    thread.start()
    server.listening.wait(HANG_GUARD)
    if not server.started:  # it failed (and set the event on the way out) or hangs
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _run_then_say_so(server: _Server) -> None:
    try:
        server.run()
    finally:
        server.listening.set()  # a server that failed to start wakes the waiter too


def run(coro: Any) -> Any:
    return asyncio.run(coro)
