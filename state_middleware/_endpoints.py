"""The stored-response endpoints: GET and DELETE a response, list its input items."""

from __future__ import annotations

from typing import Any

import msgspec
from asgiref.typing import ASGISendCallable

from ._asgi import send_api_error, send_json
from ._errors import ApiError, response_not_found, store_failed
from ._ids import ID_PATTERN
from ._paging import list_body, list_params, page_positions
from ._record import OUTPUT_POSITION, TurnRecord, listed_item
from ._store import Store, StoreError

__all__ = ["delete_response", "list_input_items"]

_encoder = msgspec.json.Encoder()
_list_decoder = msgspec.json.Decoder(list[dict[str, Any]])


async def delete_response(
    send: ASGISendCallable, store: Store, owner: str, response_id: str
) -> None:
    try:
        deleted = ID_PATTERN.fullmatch(response_id) is not None and await store.delete(
            owner, response_id
        )
    except StoreError as exc:
        await send_api_error(send, store_failed(exc.code))
        return
    if not deleted:
        await send_api_error(send, response_not_found(response_id))
        return
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    await send_json(send, 200, _encoder.encode(body))


async def list_input_items(
    send: ASGISendCallable, store: Store, owner: str, response_id: str, query: bytes
) -> None:
    try:
        params = list_params(query)
        chain = (
            await store.get_chain(owner, response_id) if ID_PATTERN.fullmatch(response_id) else None
        )
        if chain is None:
            raise response_not_found(response_id)
        items = context_items(chain)
        ids = [item["id"] for item in items]
        paged = page_positions(ids, params)
        if paged is None:
            raise ApiError(
                400,
                f"Item with id '{params.after}' is not an input item of response '{response_id}'.",
                param="after",
            )
        positions, has_more = paged
    except StoreError as exc:
        await send_api_error(send, store_failed(exc.code))
        return
    except ApiError as exc:
        await send_api_error(send, exc)
        return
    page = [items[i] for i in positions]
    await send_json(send, 200, list_body(page, [ids[i] for i in positions], has_more))


def context_items(chain: list[TurnRecord]) -> list[dict[str, Any]]:
    """Every item the model saw for the last turn of ``chain``, oldest first, each with
    an id and message content in part form."""
    items: list[dict[str, Any]] = []
    last = len(chain) - 1
    for index, record in enumerate(chain):
        for position, item in enumerate(_list_decoder.decode(record.input_items)):
            items.append(listed_item(item, record.id, position))
        if index < last:
            for position, item in enumerate(_list_decoder.decode(record.output_items)):
                items.append(listed_item(item, record.id, OUTPUT_POSITION + position))
    return items
