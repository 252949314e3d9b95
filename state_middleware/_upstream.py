"""How a turn talks to the wrapped app: the seam between the turn pipeline and the
protocol the app speaks.

The pipeline (:mod:`._turn`) loads the context and stores the result; an
:class:`Upstream` decides what the app is sent and how its reply becomes Responses
events. :class:`ResponsesUpstream` is the app that speaks Responses itself; the chat
bridge (``_bridge``) supplies another. The core never imports the bridge: the
middleware hands the pipeline whichever upstream its options name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from asgiref.typing import ASGISendCallable

from ._record import TurnRecord
from ._request import TurnRequest, upstream_body
from ._store import Store
from ._tee import ReplyTee

__all__ = ["ResponsesUpstream", "TurnContext", "Upstream"]


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What an upstream may know of the turn it serves."""

    request: TurnRequest
    #: the stored items this turn continues (a chain or a conversation) as one JSON
    #: array, oldest first; ``None`` for a turn that continues nothing
    history: bytes | None
    owner: str
    response_id: str
    created_at: int
    store: Store
    max_body_bytes: int


class Upstream(Protocol):
    """One way of calling the app for a turn."""

    #: the API the app speaks (``responses``, ``chat``): a label of the turn metrics
    name: str
    #: the route path the app is called on; ``None`` keeps the request's own path
    route: str | None

    async def request_body(self, turn: TurnContext) -> bytes:
        """The body the app receives. Raises ``ApiError`` for a request it cannot
        send, ``StoreError`` when it needed the store and the store failed."""
        ...

    def reply_send(self, turn: TurnContext, tee: ReplyTee) -> ASGISendCallable:
        """The ``send`` the app gets: whatever turns its reply into a Responses reply
        and hands that to ``tee``."""
        ...

    async def stored(self, turn: TurnContext, record: TurnRecord) -> None:
        """Called once the turn is stored (failures here are the upstream's to log)."""
        ...


class ResponsesUpstream:
    """An app that speaks the Responses API: it gets the history as ``input`` and
    its reply is teed as it is."""

    name = "responses"
    route: str | None = None

    async def request_body(self, turn: TurnContext) -> bytes:
        return upstream_body(turn.request, turn.history)

    def reply_send(self, turn: TurnContext, tee: ReplyTee) -> ASGISendCallable:
        return tee

    async def stored(self, turn: TurnContext, record: TurnRecord) -> None:
        return None
