"""The conversations a ``RedisStore`` process has read, kept decoded in a bounded cache.

A conversation changes in two ways: items are appended to it (``add_items``, a turn put
into it, by any process), or it changes otherwise (an item removed, created again,
deleted, its tree gone). Every change of the second kind takes the conversation's mark
out of its tree, and a whole read puts a fresh one there (``redis_conversations.py``).
So a process holding a conversation read under the mark still there asks Redis only for
the items listed after the ones it holds: the Redis work of loading a conversation does
not grow with it.

What a process holds is what a whole read would give. Redis names an item by its id, so
when an id is listed again with another item (added again, named anew by a turn), every
position of that id shows the latest one, here too.

The cache is bounded by the bytes of the ids and items it holds, plus ``PER_ITEM`` for
each item's Python objects (least recently used first out). ``RedisStore`` gives it as
many bytes as its record cache (``cache_bytes``): a second cache of that size, not a
share of the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cachetools import LRUCache

__all__ = ["PER_ITEM", "ConversationCache", "HeldConversation"]

PER_ITEM = 128  # about what an item's tuple, str and bytes objects and dict slot take

Item = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class HeldConversation:
    """A conversation as read under ``mark`` (its mark in its tree at that time):
    ``items`` its ``(id, item JSON)``, oldest first, and ``latest`` the item of each id.
    Never changed once made: a process may read it while it makes the next one."""

    mark: bytes
    items: tuple[Item, ...]
    latest: Mapping[str, bytes]
    size: int

    @classmethod
    def read(cls, mark: bytes, items: Sequence[Item]) -> HeldConversation:
        """A conversation read whole."""
        held = tuple(items)
        return cls(mark, held, dict(held), _size(held))

    @property
    def last(self) -> str:
        """The id of its newest item ('' if it has none)."""
        return self.items[-1][0] if self.items else ""

    def extended(self, tail: Sequence[Item]) -> HeldConversation:
        """This conversation with ``tail`` appended (read under the same mark)."""
        if not tail:
            return self
        before = self.latest
        latest = {**before, **dict(tail)}
        items = self.items + tuple(tail)
        if any(before.get(item_id, item) != item for item_id, item in tail):
            # an id listed again with another item: it is the item of every position
            items = tuple((item_id, latest[item_id]) for item_id, _ in items)
            return HeldConversation(self.mark, items, latest, _size(items))
        return HeldConversation(self.mark, items, latest, self.size + _size(tail))


class ConversationCache:
    """``HeldConversation`` by ``(owner digest, conversation id)``, at most
    ``max_bytes`` of them (0: keep none)."""

    def __init__(self, max_bytes: int) -> None:
        self._held: LRUCache[tuple[str, str], HeldConversation] | None = (
            LRUCache(max_bytes, getsizeof=_held_size) if max_bytes > 0 else None
        )

    def get(self, digest: str, conversation_id: str) -> HeldConversation | None:
        return None if self._held is None else self._held.get((digest, conversation_id))

    def keep(self, digest: str, conversation_id: str, held: HeldConversation) -> None:
        """Hold ``held`` (what was held of the conversation before goes, even when
        ``held`` is too big to keep)."""
        if self._held is None:
            return
        key = (digest, conversation_id)
        self._held.pop(key, None)
        if held.size <= self._held.maxsize:
            self._held[key] = held

    def forget(self, digest: str, conversation_id: str) -> None:
        if self._held is not None:
            self._held.pop((digest, conversation_id), None)


def _size(items: Sequence[Item]) -> int:
    return sum(len(item_id) + len(item) + PER_ITEM for item_id, item in items)


def _held_size(held: HeldConversation) -> int:
    return held.size
