"""A real ``redis-server`` for tests: a subprocess on 127.0.0.1, started on a free port.

The session fixture ``redis_server`` yields the URL of one shared server. Tests that
stop or pause Redis start their own ``RedisServer`` so the shared one is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from types import TracebackType

import pytest
import redis

from ._servers import free_port

__all__ = ["RedisServer", "flush", "redis_server"]

REDIS_SERVER = "redis-server"
#: what redis-server logs once it accepts connections
READY = b"Ready to accept connections"


class RedisServer:
    """One ``redis-server`` without persistence; ``start`` again after ``stop`` to
    simulate a restart on the same port (the data is gone, as after a real restart
    without persistence)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = shutil.which(REDIS_SERVER)
        if executable is None:
            pytest.fail(f"{REDIS_SERVER} is not on PATH: apt-get install redis-server")
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        # Redis says when it listens; a server that cannot start exits, ending the output.
        assert self.process.stdout is not None
        said: list[bytes] = []
        for line in self.process.stdout:
            said.append(line)
            if READY in line:
                return
        output = b"".join(said).decode(errors="replace") + self._stop_process()
        raise RuntimeError(f"redis-server did not start on {self.port}:\n{output}")

    def stop(self) -> None:
        self._stop_process()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def _stop_process(self) -> str:
        process, self.process = self.process, None
        if process is None:
            return ""
        os.kill(process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
            process.kill()
            output, _ = process.communicate()
        return output.decode(errors="replace")

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def flush(url: str) -> None:
    """Empty every database of the server at ``url``."""
    with redis.Redis.from_url(url) as client:
        client.flushall()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The URL of a ``redis-server`` shared by the whole session (fails, never skips,
    without ``redis-server`` on PATH)."""
    with RedisServer() as server:
        yield server.url
