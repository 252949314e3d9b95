"""The public storage protocol every backend implements.

Records are always addressed by ``(owner, response_id)``: ``owner`` is the caller's
identity key, so a record created by one caller is invisible to every other. A store
never changes a stored record; forks are just several records naming the same parent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ._record import BackgroundState, ConversationRecord, TurnRecord

__all__ = ["ItemsMissing", "NewItem", "Store", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """A store could not do what was asked; nothing was half written."""

    #: short machine-readable code used in the OpenAI-shaped error the middleware sends
    code = "store_error"


class StoreUnavailable(StoreError):
    """The backend did not answer (down, timed out)."""

    code = "store_unavailable"


class ItemsMissing(StoreError):
    """A conversation names items the store no longer has (evicted, expired): it is
    never loaded in part."""

    code = "conversation_items_missing"


#: an item to add to a conversation: ``(id, canonical item JSON)``, or ``(id, None)`` to
#: add an item the store already has under that id (a global item reference)
NewItem = tuple[str, "bytes | None"]


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

    Items. Every item a stored turn holds (its input and output items, under the ids
    :func:`~._record.record_items` gives them, derived ones included) can be found
    again by id, and so can every item added to a conversation:

    - ``get_items`` returns the listed JSON of each id it knows (missing, expired and
      foreign ids are left out). Items are stored once: a turn's items live in its
      record, and the store keeps only a reference from each id to that record;
      items added to a conversation by the API are kept under their id. When two
      stored things hold the same id, the latest wins.

    Conversations (an ordered list of item ids, plus a ``ConversationRecord``):

    - ``create_conversation`` stores a new conversation with its first items (see
      ``NewItem``); ``get_conversation`` returns it or ``None`` (missing, expired,
      deleted, foreign); ``update_conversation`` replaces its metadata and returns the
      new record (``None`` if there is none); ``delete_conversation`` forgets it (its
      items stay findable by id) and returns whether it was there.
    - ``conversation_items`` returns ``(id, item JSON)`` of every item, oldest first, or
      ``None`` when there is no such conversation; it raises ``ItemsMissing`` rather than
      return part of a conversation.
    - ``add_items`` appends items (all or none; ``NewItem`` with ``None`` adds the
      stored item of that id, which must exist) and returns ``False`` when there is no
      such conversation. ``remove_item`` takes one occurrence of an item id out of the
      list (the item stays stored) and returns whether it was there.
    - ``put(..., item_ids=...)`` hands over ``record_item_ids(record)`` when the caller
      has it already (the store then need not decode the record's items).
    - ``put(owner, record, conversation=id)`` also appends the record's items (input
      then output) to that conversation in the same atomic step; if the conversation is
      gone by then, the record is stored and nothing appended.
    - Using a conversation (reading it or its items, adding to it) slides its TTL, and
      the items it names live at least as long as it does.
    - ``lock_conversation(owner, id, token, lease)`` takes the conversation's lock for
      ``lease`` seconds unless another token holds it (returns whether it got it);
      ``unlock_conversation`` releases it if ``token`` still holds it. A lock whose
      holder crashed ends with its lease.

    Background responses (a turn that runs without its client; any replica may poll,
    stream or cancel it):

    - ``start_background(owner, id, response, stream=, lease=)`` records a new one as
      ``queued`` with ``response`` (its queued response object, JSON) and no events, and
      takes its worker lease: while the lease lives, a worker is running it.
    - ``record_events(owner, id, events, status=, lease=)`` appends event payloads (JSON,
      numbered on from the last one), sets ``status`` (``queued`` or ``in_progress``),
      renews the lease, and returns whether a cancel was requested.
    - ``finish_background(owner, id, status, response, events)`` appends the last events
      and ends it (a finished status, the final response object). From then on its
      events are kept ``event_ttl`` seconds (a store option) and its state as long as
      stored responses. A finished one is left as it is (a response failed because its
      worker was lost stays failed when that worker finishes late).
    - ``get_background`` returns its ``BackgroundState`` (``None``: none, expired or
      foreign). One whose lease ended before it finished (its worker died) is finished
      there and then as ``failed``, with an error saying the worker was lost
      (``WORKER_LOST_MESSAGE``), and returned that way.
    - ``read_events(owner, id, after, timeout)`` returns the events numbered above
      ``after``, waiting up to ``timeout`` seconds for the first of them if there are
      none yet, and whether the response is finished with nothing more to read:
      ``(events, finished)``; ``None`` when there is no such background response or its
      events have expired.
    - ``cancel_background`` asks for a running or queued one to stop (its worker sees it
      at its next ``record_events``, or by polling ``get_background``) and returns the
      state (``None``: none); a finished one is left as it is.
    """

    async def put(
        self,
        owner: str,
        record: TurnRecord,
        *,
        conversation: str | None = None,
        item_ids: Sequence[str] | None = None,
    ) -> None: ...

    async def get(self, owner: str, response_id: str) -> TurnRecord | None: ...

    async def get_chain(self, owner: str, response_id: str) -> list[TurnRecord] | None: ...

    async def delete(self, owner: str, response_id: str) -> bool: ...

    async def begin(self, owner: str, response_id: str) -> None: ...

    async def end(self, owner: str, response_id: str) -> None: ...

    async def wait(self, owner: str, response_id: str, timeout: float) -> bool: ...

    async def remember(self, owner: str, notes: Mapping[str, bytes]) -> None: ...

    async def recall(self, owner: str, keys: Sequence[str]) -> dict[str, bytes]: ...

    async def get_items(self, owner: str, ids: Sequence[str]) -> dict[str, bytes]: ...

    async def create_conversation(
        self, owner: str, conversation: ConversationRecord, items: Sequence[NewItem]
    ) -> None: ...

    async def get_conversation(
        self, owner: str, conversation_id: str
    ) -> ConversationRecord | None: ...

    async def update_conversation(
        self, owner: str, conversation_id: str, metadata: bytes
    ) -> ConversationRecord | None: ...

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool: ...

    async def conversation_items(
        self, owner: str, conversation_id: str
    ) -> list[tuple[str, bytes]] | None: ...

    async def add_items(
        self, owner: str, conversation_id: str, items: Sequence[NewItem]
    ) -> bool: ...

    async def remove_item(self, owner: str, conversation_id: str, item_id: str) -> bool: ...

    async def lock_conversation(
        self, owner: str, conversation_id: str, token: str, lease: float
    ) -> bool: ...

    async def unlock_conversation(self, owner: str, conversation_id: str, token: str) -> None: ...

    async def start_background(
        self, owner: str, response_id: str, response: bytes, *, stream: bool, lease: float
    ) -> None: ...

    async def record_events(
        self,
        owner: str,
        response_id: str,
        events: Sequence[bytes],
        *,
        status: str,
        lease: float,
    ) -> bool: ...

    async def finish_background(
        self,
        owner: str,
        response_id: str,
        status: str,
        response: bytes,
        events: Sequence[bytes] = (),
    ) -> None: ...

    async def get_background(self, owner: str, response_id: str) -> BackgroundState | None: ...

    async def read_events(
        self, owner: str, response_id: str, after: int, timeout: float
    ) -> tuple[list[bytes], bool] | None: ...

    async def cancel_background(self, owner: str, response_id: str) -> BackgroundState | None: ...
