"""What a turn holds in the store while it runs, each begun and ended by one object.

Both are taken before the app is called and ended once: as soon as the turn is stored
(so that the next request, which may come the moment the client has the terminal
event, finds them gone) or, at the latest, when the turn is over, whatever happened.

- :class:`PendingMark`: a stream shows its response id before the turn is stored, so a
  follow-up may name it while it runs; the mark lets that follow-up wait
  (``Store.wait``).
- :class:`ConversationLock`: one turn at a time per conversation; a request on a
  conversation whose lock is held gets OpenAI's 400 ``conversation_locked``. The lock
  has a lease, so a process that dies holding it blocks the conversation no longer.
"""

from __future__ import annotations

import logging
import secrets
from types import TracebackType

from ._errors import ApiError
from ._metrics import NO_METRICS, Metrics
from ._store import Store, StoreError

__all__ = ["CONVERSATION_LOCKED_MESSAGE", "ConversationLock", "PendingMark"]

CONVERSATION_LOCKED_MESSAGE = (
    "Another process is currently operating on this conversation. Please retry in a few seconds."
)

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
        await self.begin()
        return self

    async def begin(self) -> None:
        """Set the mark (when ``active``); raises ``StoreError``."""
        if self.active:
            await self.store.begin(self.owner, self.response_id)

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


class ConversationLock:
    """``async with ConversationLock(...)``: the conversation's lock is held inside the
    block (when ``conversation`` is set); entering raises ``ApiError`` (400
    ``conversation_locked``) when another turn holds it, ``StoreError`` when the store
    fails."""

    __slots__ = ("conversation", "held", "lease", "metrics", "owner", "store", "token")

    def __init__(
        self,
        store: Store,
        owner: str,
        conversation: str | None,
        *,
        lease: float,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.store = store
        self.owner = owner
        self.conversation = conversation
        self.lease = lease
        self.metrics = metrics
        self.token = secrets.token_hex(16) if conversation is not None else ""
        self.held = False

    async def __aenter__(self) -> ConversationLock:
        await self.acquire()
        return self

    async def acquire(self) -> None:
        """Take the lock (when there is a conversation); raises ``ApiError`` when
        another turn holds it, ``StoreError`` when the store fails."""
        if self.conversation is None:
            return
        acquired = await self.store.lock_conversation(
            self.owner, self.conversation, self.token, self.lease
        )
        self.metrics.conversation_lock(acquired)
        if not acquired:
            raise ApiError(
                400,
                CONVERSATION_LOCKED_MESSAGE,
                param="conversation",
                code="conversation_locked",
            )
        self.held = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.end()

    async def end(self) -> None:
        """Release the lock (once); a failure is only logged: the lease ends it."""
        if not self.held or self.conversation is None:
            return
        self.held = False
        try:
            await self.store.unlock_conversation(self.owner, self.conversation, self.token)
        except StoreError as exc:
            logger.warning("store failed unlocking %s: %s", self.conversation, exc)
