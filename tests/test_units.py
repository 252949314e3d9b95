"""Small pieces: request parsing and rewriting, records, the accumulator, ids, the tee."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from state_middleware import TurnRecord
from state_middleware._accumulator import Outcome, TurnAccumulator
from state_middleware._errors import ApiError
from state_middleware._ids import derived_from, derived_item_id, new_response_id
from state_middleware._record import (
    chain_input,
    decode_record,
    encode_record,
    join_arrays,
    response_with_output,
)
from state_middleware._request import parse_turn_request, upstream_body
from state_middleware._tee import ReplyTee


def turn(rid: str, parent: str | None, inp: list[object], out: list[object]) -> TurnRecord:
    return TurnRecord(
        rid,
        parent,
        1,
        msgspec.json.encode(inp),
        msgspec.json.encode(out),
        b'{"id":"%s"}' % rid.encode(),
    )


def test_a_string_input_is_one_user_message() -> None:
    parsed = parse_turn_request(b'{"input":"hi"}')
    assert json.loads(parsed.input_items) == [{"role": "user", "content": "hi"}]
    assert parsed.store is True
    assert parsed.stream is False
    assert parse_turn_request(b'{"model":"m"}').input_items == b"[]"


def test_upstream_body_splices_history_before_the_new_input() -> None:
    chain = [turn("r1", None, [{"a": 1}], [{"b": 2}]), turn("r2", "r1", [], [{"c": 3}])]
    parsed = parse_turn_request(
        b'{"model":"m","input":"new","previous_response_id":"r2","x":{"y":[1]}}'
    )
    body = json.loads(upstream_body(parsed, chain_input(chain)))
    assert body == {
        "model": "m",
        "input": [{"a": 1}, {"b": 2}, {"c": 3}, {"role": "user", "content": "new"}],
        "x": {"y": [1]},
    }


def test_a_null_previous_id_is_dropped_and_other_bodies_are_untouched() -> None:
    assert (
        json.loads(upstream_body(parse_turn_request(b'{"previous_response_id":null}'), None)) == {}
    )
    raw = b'{ "input" : "x" }'
    assert upstream_body(parse_turn_request(raw), None) is raw


def test_wrong_types_name_their_param() -> None:
    with pytest.raises(ApiError) as caught:
        parse_turn_request(b'{"store":1}')
    assert caught.value.param == "store"
    assert caught.value.code == "invalid_type"
    assert "store" in caught.value.message


def test_arrays_join_without_decoding() -> None:
    assert join_arrays([b"[]", b"[1,2]", b"[]", b"[3]"]) == b"[1,2,3]"
    assert chain_input([], b"[]") == b"[]"


def test_records_round_trip_and_restore_output() -> None:
    record = turn("r", "p", [{"a": 1}], [{"b": 2}])
    assert decode_record(encode_record(record)) == record
    assert json.loads(response_with_output(record)) == {"id": "r", "output": [{"b": 2}]}


def test_ids_are_random_and_derived_ids_stable() -> None:
    assert len({new_response_id() for _ in range(1000)}) == 1000
    assert derived_item_id("resp_a", 3, "message") == derived_item_id("resp_a", 3, "message")
    assert derived_item_id("resp_a", 3, "message").startswith("msg_")
    assert derived_item_id("resp_a", 4, "message") != derived_item_id("resp_a", 3, "message")


def test_accumulator_rebuilds_output_from_done_items_when_terminal_lacks_it() -> None:
    acc = TurnAccumulator(response_id="resp_x", parent_id="resp_p", store=True, input_items=b"[]")
    item = {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "n", "arguments": "{}"}
    assert acc.event(
        json.dumps({"type": "response.output_item.done", "output_index": 0, "item": item}).encode()
    ) == (None, Outcome.PASS)
    data, outcome = acc.event(
        b'{"type":"response.completed","response":{"id":"up","status":"completed"}}'
    )
    assert outcome is Outcome.DONE
    assert data is not None
    assert json.loads(data)["response"]["id"] == "resp_x"
    assert json.loads(data)["response"]["previous_response_id"] == "resp_p"
    assert json.loads(acc.record().output_items) == [item]


@pytest.mark.parametrize(
    ("payload", "outcome"),
    [
        (b'{"type":"response.output_text.delta","delta":"x"}', Outcome.PASS),
        (b'{"type":"error","error":{"message":"m"}}', Outcome.ERROR),
        (b'{"type":"response.failed","response":{"status":"failed"}}', Outcome.FAILED),
        (b'{"type":"response.incomplete","response":{"status":"incomplete"}}', Outcome.DONE),
        (b"not json", Outcome.PASS),
        (b"[DONE]", Outcome.PASS),
    ],
)
def test_accumulator_classifies_events(payload: bytes, outcome: Outcome) -> None:
    acc = TurnAccumulator(response_id="resp_x", parent_id=None, store=True, input_items=b"[]")
    assert acc.event(payload)[1] is outcome


def test_pretty_printed_replies_are_stored_compact_and_stamped() -> None:
    acc = TurnAccumulator(response_id="resp_x", parent_id=None, store=False, input_items=b"[]")
    reply = {
        "id": "up",
        "object": "response",
        "status": "completed",
        "created_at": 5,
        "output": [{"type": "message", "role": "assistant", "content": "a: b, c"}],
    }
    stamped = acc.json_body(json.dumps(reply, indent=2).encode())
    assert stamped is not None
    body, storable = stamped
    assert storable
    assert json.loads(body) == {
        **reply,
        "id": "resp_x",
        "previous_response_id": None,
        "store": False,
    }
    record = acc.record()
    assert record.output_items == msgspec.json.encode(reply["output"])
    assert record.created_at == 5
    assert (
        json.loads(join_arrays([record.output_items, record.output_items])) == reply["output"] * 2
    )


def test_non_response_json_is_left_alone() -> None:
    acc = TurnAccumulator(response_id="resp_x", parent_id=None, store=True, input_items=b"[]")
    assert acc.json_body(b'{"object":"list","data":[]}') is None
    assert acc.json_body(b"[1]") is None
    assert acc.json_body(b"nope") is None


def test_a_minimal_terminal_event_still_stores_a_well_formed_response() -> None:
    acc = TurnAccumulator(response_id="resp_x", parent_id=None, store=True, input_items=b"[]")
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    done = {"type": "response.output_item.done", "output_index": 0, "item": item}
    acc.event(json.dumps(done).encode())
    _, outcome = acc.event(b'{"type":"response.completed","response":{"id":"up"}}')
    assert outcome is Outcome.DONE
    stored = json.loads(response_with_output(acc.record()))
    assert stored["object"] == "response"
    assert stored["status"] == "completed"
    assert stored["id"] == "resp_x"
    assert stored["output"] == [item]
    assert isinstance(stored["created_at"], int)


@pytest.mark.anyio
async def test_the_tee_hands_out_the_server_send_only_between_whole_frames_of_a_stream() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    def tee() -> ReplyTee:
        turn = TurnAccumulator(response_id="resp_x", parent_id=None, store=True, input_items=b"[]")
        return ReplyTee(
            send=send, turn=turn, commit=nothing, max_body_bytes=1 << 20, wants_stream=True
        )

    async def nothing() -> None:
        return None

    def start(content_type: bytes) -> dict[str, Any]:
        return {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type)],
        }

    stream = tee()
    assert stream.direct_send() is None  # nothing started yet
    await stream(start(b"text/event-stream"))
    assert stream.direct_send() is send
    half = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta"'
    await stream({"type": "http.response.body", "body": half, "more_body": True})
    assert stream.direct_send() is None  # half a frame is pending
    await stream({"type": "http.response.body", "body": b',"delta":"x"}\n\n', "more_body": True})
    assert stream.direct_send() is send
    assert b"".join(m.get("body", b"") for m in sent) == half + b',"delta":"x"}\n\n'

    whole = tee()
    await whole(start(b"application/json"))
    assert whole.direct_send() is None  # a JSON reply is held and stamped, never sent past


def test_a_derived_item_id_says_which_response_holds_the_item() -> None:
    response_id = new_response_id()
    derived = derived_item_id(response_id, 3, "function_call")
    assert derived.startswith("fc_")
    assert derived_from(derived) == response_id
    assert derived_item_id(response_id, 3, "function_call") == derived  # stable
    assert derived_from("msg_6ab4e119be788196b3f7778c071ad6fd") is None  # an OpenAI id
    assert derived_from("fc_a_b_1") is None
