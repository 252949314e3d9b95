"""``RedisStore``'s items found by id (``get_items``): the pointer keys, spread over a
cluster's slots, and the tree fields they point at.

A pointer key ``{key_prefix}item:{O}:{item id}`` holds ``@`` and a response id (the item
is in that turn's record) or ``^`` and a conversation id (in that conversation's ``i:``
field): see ``redis_conversations.py``. ``get_items`` is two pipelines: the pointer keys,
then one script per tree they name (``READ_FIELDS``), so a constant number of round trips
whatever the number of ids. A derived id with no pointer key is looked for where its id
says (a client may send an id of that form as its own, so its pointer comes first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._ids import derived_from
from .._record import decode_record, record_items
from .redis_client import RedisClient
from .redis_conversation_scripts import READ_FIELDS

__all__ = ["IN_CONVERSATION", "IN_TURN", "ItemParts", "Turns", "pairs"]

IN_TURN = b"@"  # a value holding this and a response id: the item is in that turn
IN_CONVERSATION = b"^"  # a pointer holding this and a conversation id: in its i: field


class ItemParts(RedisClient):
    """Items found by id (``RedisStore`` composes this, through its conversations)."""

    async def get_items(self, owner: str, ids: Sequence[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        base = self._item_base(owner)
        with self._errors():
            client = await self._ready_client()
            async with client.pipeline(transaction=False) as pipe:
                for item_id in wanted:
                    pipe.get(base + item_id)
                stored: list[bytes | None] = await pipe.execute()
            pointers = {
                item_id: pointer
                for item_id, value in zip(wanted, stored, strict=True)
                if (pointer := pointer_of(item_id, value)) is not None
            }
            fields = await self._read_fields(client, owner, pointers)
        turns = Turns(fields)
        found: dict[str, bytes] = {}
        for item_id, pointer in pointers.items():
            value = pointer if pointer.startswith(IN_TURN) else fields.get("i:" + item_id)
            item = turns.item(item_id, value)
            if item is not None:
                found[item_id] = item
        return found

    async def _read_fields(
        self, client: Any, owner: str, pointers: Mapping[str, bytes]
    ) -> dict[str, bytes]:
        """The tree fields the pointers name (and the turns their ``i:`` fields name),
        one script per tree, all in one pipeline."""
        wanted: dict[str, dict[str, None]] = {}
        for item_id, pointer in pointers.items():
            holder = pointer[1:].decode()
            field = "r:" + holder if pointer.startswith(IN_TURN) else "i:" + item_id
            wanted.setdefault(self._tree_key(owner, holder), {})[field] = None
        if not wanted:
            return {}
        async with client.pipeline(transaction=False) as pipe:
            for tree, fields in wanted.items():
                pipe.eval(READ_FIELDS, 1, tree, *fields)
            replies: list[list[bytes | None]] = await pipe.execute()
        return {field: value for reply in replies for field, value in pairs(reply).items()}


class Turns:
    """The records read from a tree (``r:{response id}`` fields), whose items are cut
    out when first asked for."""

    def __init__(self, fields: Mapping[str, bytes]) -> None:
        self._fields = fields
        self._items: dict[bytes, dict[str, bytes]] = {}

    def item(self, item_id: str, value: bytes | None) -> bytes | None:
        """What an item's value stands for: its JSON, or for ``@`` and a response id the
        item of that id in that turn's record; None when it (or the turn) is gone."""
        if value is None or not value.startswith(IN_TURN):
            return value
        items = self._items.get(value)
        if items is None:
            record = self._fields.get("r:" + value[1:].decode())
            items = {} if record is None else dict(record_items(decode_record(record)))
            self._items[value] = items
        return items.get(item_id)


def pointer_of(item_id: str, stored: bytes | None) -> bytes | None:
    """Where ``get_items`` looks for an item: its pointer key's value, else what a
    derived id says; None for nowhere (or a value of another form)."""
    if stored is not None and stored[:1] in (IN_TURN, IN_CONVERSATION):
        return stored
    response_id = derived_from(item_id) if stored is None else None
    return None if response_id is None else IN_TURN + response_id.encode()


def pairs(flat: Iterable[bytes | None]) -> dict[str, bytes]:
    """Field and value pairs of a script's flat reply, the fields that have a value."""
    values = iter(flat)
    return {
        field.decode(): value
        for field, value in zip(values, values, strict=True)
        if field is not None and value is not None
    }
