"""The records a ``RedisStore`` process has seen, kept decoded in a bounded cache.

A stored turn's record never changes, so once a process holds it, loading a chain
through it asks Redis only whether the chain is still there (its head stored, not
deleted, its tree alive) and for the records the process has not seen: the Redis work
of a turn does not grow with its chain. The cache is bounded by the encoded size of
what it holds (least recently used first out); ``known`` remembers, per tree, the ids
it added last, which a chain load names so Redis stops walking where the process
already holds the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from cachetools import LRUCache

from .._record import TurnRecord

__all__ = ["RecordCache"]

_KNOWN_PER_TREE = 16  # the newest ids of a tree a chain load names
_TREES = 16_384  # trees whose newest ids are remembered


def _size(entry: tuple[TurnRecord, int]) -> int:
    return entry[1]


class RecordCache:
    """Decoded records by ``(owner digest, response id)``, at most ``max_bytes`` of
    their encoded size (0: keep none)."""

    def __init__(self, max_bytes: int) -> None:
        self._records: LRUCache[tuple[str, str], tuple[TurnRecord, int]] | None = (
            LRUCache(max_bytes, getsizeof=_size) if max_bytes > 0 else None
        )
        self._newest: LRUCache[str, deque[str]] = LRUCache(_TREES)

    def get(self, digest: str, response_id: str) -> TurnRecord | None:
        if self._records is None:
            return None
        entry = self._records.get((digest, response_id))
        return None if entry is None else entry[0]

    def add(self, digest: str, tree: str, record: TurnRecord, size: int) -> None:
        """Keep ``record`` (``size``: its encoded length) of the tree keyed ``tree``."""
        if self._records is None or size > self._records.maxsize:
            return
        self._records[(digest, record.id)] = (record, size)
        newest = self._newest.get(tree)
        if newest is None:
            newest = self._newest[tree] = deque(maxlen=_KNOWN_PER_TREE)
        newest.append(record.id)

    def known(self, digest: str, tree: str) -> list[str]:
        """Ids of the tree keyed ``tree`` whose records are still held, newest first."""
        newest = self._newest.get(tree)
        if newest is None or self._records is None:
            return []
        return [rid for rid in reversed(newest) if (digest, rid) in self._records]

    def walk(self, digest: str, response_id: str | None) -> Iterator[TurnRecord]:
        """The held records from ``response_id`` up its parents, until one is not held."""
        while response_id is not None:
            record = self.get(digest, response_id)
            if record is None:
                return
            yield record
            response_id = record.parent_id
