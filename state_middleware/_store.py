"""The public storage protocol every backend implements.

Records are always addressed by ``(owner, response_id)``: ``owner`` is the caller's
identity key, so a record created by one caller is invisible to every other. A store
never changes a stored record; forks are just several records naming the same parent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ._record import TurnRecord

__all__ = ["Store", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """A store could not do what was asked; nothing was half written."""

    #: short machine-readable code used in the OpenAI-shaped error the middleware sends
    code = "store_error"


class StoreUnavailable(StoreError):
    """The backend did not answer (down, timed out)."""

    code = "store_unavailable"


@runtime_checkable
class Store(Protocol):
    """Async storage for turns.

    Semantics every implementation keeps:

    - ``put`` stores a new record and refreshes the sliding TTL of every ancestor named
      through ``parent_id``, so a live chain never half expires. It raises
      ``StoreError`` if the record cannot be kept.
    - ``get`` returns the record, or ``None`` for a missing, expired, deleted or foreign
      id.
    - ``get_chain`` returns the record and all its ancestors, oldest first, refreshing
      each one's TTL; ``None`` if the named record is unavailable or *any* ancestor is
      missing (a chain is replayed whole or not at all). Deleted ancestors still count:
      deleting a response never breaks its descendants.
    - ``delete`` hides the record from ``get``/``get_chain`` and returns whether it was
      there; its items stay available to descendants that still need them.
    - ``begin``/``end`` bracket a turn being produced, and ``wait`` blocks until that
      turn has ended (or ``timeout`` seconds pass), returning whether it was pending.
      This lets a follow-up that names a still-streaming response wait for it.
    - ``remember``/``recall`` keep small per-owner notes (the bridge keeps the reasoning
      text of tool calls by call id, for clients that drop reasoning items); they live
      as long as records do, and ``recall`` returns only the keys it has.
    """

    async def put(self, owner: str, record: TurnRecord) -> None: ...

    async def get(self, owner: str, response_id: str) -> TurnRecord | None: ...

    async def get_chain(self, owner: str, response_id: str) -> list[TurnRecord] | None: ...

    async def delete(self, owner: str, response_id: str) -> bool: ...

    async def begin(self, owner: str, response_id: str) -> None: ...

    async def end(self, owner: str, response_id: str) -> None: ...

    async def wait(self, owner: str, response_id: str, timeout: float) -> bool: ...

    async def remember(self, owner: str, notes: Mapping[str, bytes]) -> None: ...

    async def recall(self, owner: str, keys: Sequence[str]) -> dict[str, bytes]: ...
