"""The chat bridge as the turn pipeline's upstream: Responses turns answered by an app
that speaks only Chat Completions (``POST {prefix}/chat/completions``)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from asgiref.typing import ASGISendCallable

from .._record import TurnRecord
from .._skeleton import response_skeleton
from .._store import StoreError
from .._tee import ReplyTee
from .._upstream import TurnContext
from .reasoning import reasoning_by_call_id
from .turn import BridgeOptions, ChatReplyTranslator, call_ids, chat_request_body, expanded_input

__all__ = ["ChatUpstream"]

logger = logging.getLogger("state_middleware")

_items_decoder = msgspec.json.Decoder(list[dict[str, Any]])


class ChatUpstream:
    """Translates each turn to a chat completion request and the reply back; keeps
    the reasoning of tool calls by call id (store notes), for clients that resend the
    history without their reasoning items."""

    name = "chat"

    def __init__(self, options: BridgeOptions, prefix: str) -> None:
        self.options = options
        self.route: str | None = prefix + "/chat/completions"

    async def request_body(self, turn: TurnContext) -> bytes:
        items = expanded_input(turn.request, turn.history)
        ids = call_ids(items)
        notes = await turn.store.recall(turn.owner, ids) if ids else {}
        recovered = {key: value.decode() for key, value in notes.items()}
        return chat_request_body(turn.request, items, self.options, recovered)

    def reply_send(self, turn: TurnContext, tee: ReplyTee) -> ASGISendCallable:
        request = turn.request
        base = response_skeleton(
            request.body,
            response_id=turn.response_id,
            created_at=turn.created_at,
            previous_response_id=request.previous_response_id,
            store=request.store,
        )
        translator = ChatReplyTranslator(
            base,
            tee,
            turn.max_body_bytes,
            direct=tee.direct_send,
            wants_stream=request.stream,
        )
        return translator.send

    async def stored(self, turn: TurnContext, record: TurnRecord) -> None:
        found = reasoning_by_call_id(_items_decoder.decode(record.output_items))
        if not found:
            return
        try:
            await turn.store.remember(
                turn.owner, {key: text.encode() for key, text in found.items()}
            )
        except StoreError as exc:  # the turn is stored; only the index is missing
            logger.warning("reasoning of response %s was not indexed: %s", record.id, exc)
