"""Synchronisation for tests: gates a test opens, and a guard against hangs.

Tests wait for events, never for the clock. ``HANG_GUARD`` only turns a deadlock (say a
middleware that buffers, so the event a test waits for never comes) into a failure that
names what never happened; it measures nothing, and a passing test never gets near it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TypeVar

import pytest

__all__ = ["HANG_GUARD", "Gate", "soon"]

#: seconds before a wait that should end at once is declared a hang
HANG_GUARD = 30.0

T = TypeVar("T")


async def soon(awaitable: Awaitable[T], what: str) -> T:
    """Await ``awaitable``; fail the test (instead of hanging) if ``what`` never happens."""
    try:
        return await asyncio.wait_for(awaitable, HANG_GUARD)
    except asyncio.TimeoutError:
        pytest.fail(f"{what} never happened (the test would have hung)", pytrace=False)


class Gate:
    """An injectable ``sleep(delay)`` that waits for the test instead of the clock.

    Each ``open()`` lets one sleeper through (or the next one, if nobody waits yet);
    ``passed`` counts those let through. ``open`` may be called from another thread than
    the sleeper's event loop, so a gate also paces an app served by uvicorn in a thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets = 0
        self._sleeper: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self.passed = 0

    async def __call__(self, delay: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        ticket: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._tickets:
                self._tickets -= 1
                ticket.set_result(None)
            else:
                self._sleeper = (loop, ticket)
        try:
            await ticket
        finally:
            with self._lock:
                if self._sleeper is not None and self._sleeper[1] is ticket:
                    self._sleeper = None  # cut short (a disconnect): its ticket is not used
        with self._lock:
            self.passed += 1

    def open(self, times: int = 1) -> None:
        for _ in range(times):
            with self._lock:
                sleeper, self._sleeper = self._sleeper, None
                if sleeper is None:
                    self._tickets += 1
                    continue
            loop, ticket = sleeper
            loop.call_soon_threadsafe(_let_through, ticket)


def _let_through(ticket: asyncio.Future[None]) -> None:
    if not ticket.done():
        ticket.set_result(None)
