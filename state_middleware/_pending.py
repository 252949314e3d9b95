"""The pending mark of a streamed turn: begun and ended by one object.

A stream shows its response id before the turn is stored, so a follow-up may name it
while it runs; the mark lets that follow-up wait (``Store.wait``). The turn begins the
mark before calling the app and ends it once: as soon as the turn is stored (waiters
may go on at once) or, at the latest, when the turn is over, whatever happened.
"""

from __future__ import annotations

import logging
from types import TracebackType

from ._store import Store, StoreError

__all__ = ["PendingMark"]

logger = logging.getLogger("state_middleware")


class PendingMark:
    """``async with PendingMark(...)``: the mark is held inside the block (when
    ``active``); entering raises ``StoreError`` if it cannot be set."""

    __slots__ = ("active", "owner", "response_id", "store")

    def __init__(self, store: Store, owner: str, response_id: str, *, active: bool) -> None:
        self.store = store
        self.owner = owner
        self.response_id = response_id
        self.active = active

    async def __aenter__(self) -> PendingMark:
        if self.active:
            await self.store.begin(self.owner, self.response_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.end()

    async def end(self) -> None:
        """Clear the mark (once); a failure is only logged: the mark expires."""
        if not self.active:
            return
        self.active = False
        try:
            await self.store.end(self.owner, self.response_id)
        except StoreError as exc:
            logger.warning("store failed ending %s: %s", self.response_id, exc)
