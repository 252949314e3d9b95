"""Pure pieces of the Conversations API: checking items and metadata, and paging."""

from __future__ import annotations

import json

import pytest

from state_middleware._conversation_input import (
    SentItem,
    checked_metadata,
    items_to_add,
    lookup_ids,
    sent_items,
)
from state_middleware._errors import ApiError
from state_middleware._paging import ListParams, list_body, page_positions


def test_items_are_normalised_and_references_kept_apart() -> None:
    sent = sent_items(
        [
            {"role": "user", "content": "hi"},
            {"type": "item_reference", "id": "msg_a"},
            {"id": "fc_b"},
            {"type": "function_call", "id": "fc_c", "call_id": "c", "name": "f", "arguments": ""},
        ],
        required=True,
    )
    assert sent[0] == SentItem(
        None,
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
            "status": "completed",
        },
    )
    assert sent[1:3] == [SentItem("msg_a", None), SentItem("fc_b", None)]
    assert sent[3].id == "fc_c"
    assert lookup_ids([*sent, SentItem("msg_a", None)]) == ["msg_a", "fc_b", "fc_c"]


def test_new_items_get_ids_of_their_type() -> None:
    sent = sent_items(
        [
            {"role": "assistant", "content": "a"},
            {"type": "function_call_output", "call_id": "c", "output": "o"},
        ],
        required=False,
    )
    added, shown = items_to_add(sent, {})
    assert [item_id.split("_")[0] for item_id, _ in added] == ["msg", "fco"]
    assert [value for _, value in added] == shown
    assert [json.loads(value)["id"] for value in shown] == [item_id for item_id, _ in added]


def test_a_stored_id_reattaches_the_stored_item_and_ignores_the_content_sent() -> None:
    stored = {"msg_a": b'{"id":"msg_a","type":"message","role":"user","content":[]}'}
    sent = sent_items(
        [{"type": "message", "id": "msg_a", "role": "user", "content": "new"}], required=True
    )
    added, shown = items_to_add(sent, stored)
    assert added == [("msg_a", None)]
    assert shown == [stored["msg_a"]]


def test_an_id_named_twice_in_one_request_is_added_twice() -> None:
    sent = sent_items(
        [{"type": "message", "id": "msg_n", "role": "user", "content": "x"}, {"id": "msg_n"}],
        required=True,
    )
    added, shown = items_to_add(sent, {})
    assert [item_id for item_id, _ in added] == ["msg_n", "msg_n"]
    assert added[0][1] == added[1][1] == shown[0] == shown[1]  # the store need not know it yet


def test_an_id_already_in_the_conversation_or_unknown_is_refused() -> None:
    with pytest.raises(ApiError) as present:
        items_to_add([SentItem("msg_a", None)], {"msg_a": b"{}"}, {"msg_a"})
    assert (present.value.status, present.value.code) == (400, "item_already_in_conversation")
    with pytest.raises(ApiError) as unknown:
        items_to_add([SentItem("msg_z", None)], {})
    assert (unknown.value.status, unknown.value.param, unknown.value.code) == (404, "items", None)


def test_metadata_is_kept_as_canonical_json() -> None:
    assert checked_metadata(None) == b"{}"
    assert checked_metadata({"a": "b", "c": ""}) == b'{"a":"b","c":""}'


IDS = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("params", "page", "more"),
    [
        (ListParams(2, "asc", None), ["a", "b"], True),
        (ListParams(2, "desc", None), ["e", "d"], True),
        (ListParams(2, "asc", "c"), ["d", "e"], False),
        (ListParams(2, "desc", "c"), ["b", "a"], False),
        (ListParams(20, "desc", "a"), [], False),
    ],
)
def test_a_page_follows_after_in_the_requested_order(
    params: ListParams, page: list[str], more: bool
) -> None:
    found = page_positions(IDS, params)
    assert found is not None
    assert ([IDS[i] for i in found[0]], found[1]) == (page, more)


def test_an_after_that_is_not_listed_has_no_page() -> None:
    assert page_positions(IDS, ListParams(20, "asc", "z")) is None


def test_an_empty_page_has_null_first_and_last_ids() -> None:
    assert json.loads(list_body([], [], False)) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_paging_by_last_id_ends_even_when_an_id_is_listed_twice() -> None:
    ids = ["A", "B", "A", "C"]
    for order in ("asc", "desc"):
        after, seen = None, []
        for _ in range(len(ids) + 1):
            page = page_positions(ids, ListParams(1, order, after))
            assert page is not None
            positions, more = page
            seen += [ids[i] for i in positions]
            if not more:
                break
            after = ids[positions[-1]]
        else:
            raise AssertionError(f"paging {order} never ended: {seen}")
