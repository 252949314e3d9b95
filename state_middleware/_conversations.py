"""The Conversations API: ``{prefix}/conversations`` and its items, answered from the
store.

Each request gets a small responder that owns its caller, its body and its reply; the
checks of what a request may carry live in :mod:`._conversation_input`, paging in
:mod:`._paging`. Every error is rendered in one place, as OpenAI's error object.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from ._asgi import ClientGone, read_request_body, send_api_error, send_json
from ._conversation_input import (
    CONVERSATION_NOT_FOUND,
    NO_ITEM_FOUND,
    SentItem,
    checked_metadata,
    items_to_add,
    lookup_ids,
    sent_items,
)
from ._errors import ApiError, missing_parameter, store_failed
from ._ids import ID_PATTERN, new_conversation_id
from ._paging import list_body, list_params, page_positions
from ._record import ConversationRecord
from ._request import decode_object
from ._settings import Settings
from ._store import StoreError

__all__ = ["serve_conversations"]

_encoder = msgspec.json.Encoder()

Handler = Callable[..., Awaitable[None]]


async def serve_conversations(
    settings: Settings,
    scope: Any,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    rest: str,
) -> bool:
    """Serve a Conversations API route (``rest`` is the path after
    ``{prefix}/conversations``); ``False`` when the route or method is not one of them."""
    if rest and not rest.startswith("/"):
        return False
    parts = rest[1:].split("/") if rest else []
    if not all(parts):
        return False
    handler: Handler
    args: tuple[str, ...]
    match parts, scope["method"]:
        case [], "POST":
            handler, args = _Conversations.create, ()
        case [conversation], "GET":
            handler, args = _Conversations.retrieve, (conversation,)
        case [conversation], "POST":
            handler, args = _Conversations.update, (conversation,)
        case [conversation], "DELETE":
            handler, args = _Conversations.delete, (conversation,)
        case [conversation, "items"], "GET":
            handler, args = _Conversations.list_items, (conversation,)
        case [conversation, "items"], "POST":
            handler, args = _Conversations.add_items, (conversation,)
        case [conversation, "items", item], "GET":
            handler, args = _Conversations.get_item, (conversation, item)
        case [conversation, "items", item], "DELETE":
            handler, args = _Conversations.delete_item, (conversation, item)
        case _:
            return False
    responder = _Conversations(settings, scope, receive, send)
    await responder.run(handler(responder, *args))
    return True


class _Conversations:
    """One request to the Conversations API."""

    def __init__(
        self, settings: Settings, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        self.settings = settings
        self.store = settings.store
        self.owner = settings.identity(scope) or ""
        self.scope = scope
        self.receive = receive
        self.send = send

    async def run(self, work: Awaitable[None]) -> None:
        try:
            await work
        except ClientGone:
            return
        except ApiError as exc:
            await send_api_error(self.send, exc)
        except StoreError as exc:
            await send_api_error(self.send, store_failed(exc.code))

    # -- conversations ------------------------------------------------------------------
    async def create(self) -> None:
        body = await self._body(empty_is_object=True)
        metadata = checked_metadata(body.get("metadata"))
        sent = sent_items(body.get("items"), required=False)
        added, _ = items_to_add(sent, await self._stored(sent))
        record = ConversationRecord(new_conversation_id(), int(time.time()), metadata)
        await self.store.create_conversation(self.owner, record, added)
        await self._reply(_conversation_body(record))

    async def retrieve(self, conversation_id: str) -> None:
        await self._reply(_conversation_body(await self._conversation(conversation_id)))

    async def update(self, conversation_id: str) -> None:
        body = await self._body()
        if "metadata" not in body:
            raise missing_parameter("metadata")
        metadata = checked_metadata(body["metadata"])
        record = None
        if _is_conversation_id(conversation_id):
            record = await self.store.update_conversation(self.owner, conversation_id, metadata)
        if record is None:
            raise _not_found(conversation_id)
        await self._reply(_conversation_body(record))

    async def delete(self, conversation_id: str) -> None:
        deleted = _is_conversation_id(conversation_id) and await self.store.delete_conversation(
            self.owner, conversation_id
        )
        if not deleted:
            raise _not_found(conversation_id)
        body = {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
        await self._reply(_encoder.encode(body))

    # -- items --------------------------------------------------------------------------
    async def list_items(self, conversation_id: str) -> None:
        params = list_params(self.scope.get("query_string", b""))
        items = await self._items(conversation_id)
        ids = [item_id for item_id, _ in items]
        paged = page_positions(ids, params)
        if paged is None:
            raise ApiError(404, NO_ITEM_FOUND.format(params.after), param="after")
        positions, has_more = paged
        data = [msgspec.Raw(items[i][1]) for i in positions]
        await self._reply(list_body(data, [ids[i] for i in positions], has_more))

    async def add_items(self, conversation_id: str) -> None:
        body = await self._body()
        sent = sent_items(body.get("items"), required=True)
        present = {item_id for item_id, _ in await self._items(conversation_id)}
        added, shown = items_to_add(sent, await self._stored(sent), present)
        if not await self.store.add_items(self.owner, conversation_id, added):
            raise _not_found(conversation_id)  # deleted meanwhile
        data = [msgspec.Raw(value) for value in shown]
        await self._reply(list_body(data, [item_id for item_id, _ in added], False))

    async def get_item(self, conversation_id: str, item_id: str) -> None:
        items = await self._items(conversation_id)
        value = next((value for found, value in items if found == item_id), None)
        if value is None:
            raise ApiError(404, NO_ITEM_FOUND.format(item_id))
        await self._reply(value)

    async def delete_item(self, conversation_id: str, item_id: str) -> None:
        record = await self._conversation(conversation_id)
        if not await self.store.remove_item(self.owner, conversation_id, item_id):
            raise ApiError(404, NO_ITEM_FOUND.format(item_id))
        await self._reply(_conversation_body(record))

    # -- helpers --------------------------------------------------------------------------
    async def _body(self, *, empty_is_object: bool = False) -> dict[str, Any]:
        raw = await read_request_body(self.scope, self.receive, self.settings.max_body_bytes)
        if empty_is_object and not raw.strip():
            return {}
        return decode_object(raw)

    async def _conversation(self, conversation_id: str) -> ConversationRecord:
        record = None
        if _is_conversation_id(conversation_id):
            record = await self.store.get_conversation(self.owner, conversation_id)
        if record is None:
            raise _not_found(conversation_id)
        return record

    async def _items(self, conversation_id: str) -> list[tuple[str, bytes]]:
        items = None
        if _is_conversation_id(conversation_id):
            items = await self.store.conversation_items(self.owner, conversation_id)
        if items is None:
            raise _not_found(conversation_id)
        return items

    async def _stored(self, sent: list[SentItem]) -> dict[str, bytes]:
        ids = lookup_ids(sent)
        return await self.store.get_items(self.owner, ids) if ids else {}

    async def _reply(self, body: bytes) -> None:
        await send_json(self.send, 200, body)


def _is_conversation_id(conversation_id: str) -> bool:
    """Ids this middleware issues look like ``conv_<hex>``; anything else is simply not
    found (no store call)."""
    return conversation_id.startswith("conv_") and ID_PATTERN.fullmatch(conversation_id) is not None


def _not_found(conversation_id: str) -> ApiError:
    return ApiError(404, CONVERSATION_NOT_FOUND.format(conversation_id))


def _conversation_body(record: ConversationRecord) -> bytes:
    return _encoder.encode(
        {
            "id": record.id,
            "object": "conversation",
            "created_at": record.created_at,
            "metadata": msgspec.Raw(record.metadata),
        }
    )
