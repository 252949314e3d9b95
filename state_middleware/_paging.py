"""Cursor pagination shared by the list endpoints (``input_items``, conversation items).

Pure: query parsing, picking a page out of an ordered list of ids, and encoding the
OpenAI list object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import msgspec

from ._errors import ApiError

__all__ = ["ListParams", "list_body", "list_params", "page_positions"]

_encoder = msgspec.json.Encoder()


class ListParams(NamedTuple):
    limit: int
    order: str
    after: str | None


def list_params(query: bytes) -> ListParams:
    """``limit`` (1-100, default 20), ``order`` (``asc`` or ``desc``, default ``desc``)
    and ``after`` from a query string; other keys (``include``, ``include[]``) are
    ignored. Raises ``ApiError`` (400) for a bad ``limit`` or ``order``."""
    params = dict(parse_qsl(query.decode("latin-1")))
    raw_limit = params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise ApiError(
            400,
            f"Invalid 'limit': integer between 1 and 100 expected, got '{raw_limit}'.",
            param="limit",
            code="invalid_value",
        )
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(
            400,
            f"Invalid 'order': expected 'asc' or 'desc', got '{order}'.",
            param="order",
            code="invalid_value",
        )
    return ListParams(int(raw_limit), order, params.get("after"))


def page_positions(ids: Sequence[str], params: ListParams) -> tuple[list[int], bool] | None:
    """The positions in ``ids`` (oldest first) of one page, in the requested order, and
    whether more follow; ``None`` when ``after`` names no id in the list. ``after``
    stands for its *last* occurrence in the requested order, and the page holds what
    comes after it in that order: an id listed twice then skips what lies between its
    two places, but a client paging with ``after=<last_id>`` always gets further (with
    the first occurrence, ``[A, B, A, C]`` paged one by one would loop forever)."""
    ordered = list(range(len(ids)))
    if params.order == "desc":
        ordered.reverse()
    start = 0
    if params.after is not None:
        found = None
        for n, i in enumerate(ordered):
            if ids[i] == params.after:
                found = n
        if found is None:
            return None
        start = found + 1
    end = start + params.limit
    return ordered[start:end], end < len(ordered)


def list_body(data: Sequence[Any], ids: Sequence[str], has_more: bool) -> bytes:
    """The OpenAI list object for one page: ``data`` (objects, or ``msgspec.Raw`` JSON)
    and the matching ``ids``; ``first_id`` and ``last_id`` are null for an empty page."""
    return _encoder.encode(
        {
            "object": "list",
            "data": data,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
            "has_more": has_more,
        }
    )
