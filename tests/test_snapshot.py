"""Folding recorded stream events into the response object so far (``_snapshot``)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from state_middleware._bridge.stream import ChatStreamTranslator
from state_middleware._skeleton import response_skeleton
from state_middleware._snapshot import ResponseSnapshot
from state_middleware._sse import SSEDecoder
from state_middleware.testing._responses_script import (
    Reply,
    final_response,
    input_items,
    output_items,
    response_object,
    stream_events,
    usage,
)

PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files."}


def encoded(events: list[dict[str, Any]]) -> list[bytes]:
    return [msgspec.json.encode(event) for event in events]


def queued(started: dict[str, Any]) -> bytes:
    """The object a background turn starts from, before any event."""
    return msgspec.json.encode({**started, "status": "queued", "background": True})


def scripted(reply: Reply, text: str = "hello there") -> tuple[bytes, list[bytes]]:
    """The queued object and every event payload of one scripted upstream stream."""
    body = {"model": "m", "input": text, "stream": True, "background": True}
    items = input_items(body["input"])
    started = response_object(body, "resp_1", "m")
    output = output_items(reply, items)
    final = final_response(started, reply, output, usage(items, output))
    return queued(started), encoded(stream_events(started, final, output))


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
    return json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}).encode()


def call(index: int, arguments: str, name: str = "") -> bytes:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if name:
        fragment.update(id=f"call_{index}", type="function")
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


def bridged(chunks: list[bytes], *, done: bool = True, **request: Any) -> tuple[bytes, list[bytes]]:
    """The queued object and every event payload the chat bridge makes of ``chunks``."""
    base = response_skeleton(
        {"model": "m", "input": "hi", "stream": True, "background": True, **request},
        response_id="resp_b",
        created_at=1_750_000_000,
        previous_response_id=None,
        store=True,
    )
    translator = ChatStreamTranslator(base=base)
    out = translator.start()
    for data in [*chunks, b"[DONE]"] if done else chunks:
        out += translator.feed(data)
    out += translator.finish()
    payloads = [frame.data for frame in SSEDecoder().feed(out) if frame.data is not None]
    return queued(base), payloads


def snapshot(base: bytes, payloads: list[bytes]) -> ResponseSnapshot:
    folded = ResponseSnapshot(base)
    folded.feed_all(payloads)
    return folded


def terminal_response(payloads: list[bytes]) -> Any:
    return msgspec.json.decode(payloads[-1])["response"]


def types(payloads: list[bytes]) -> list[str]:
    return [msgspec.json.decode(payload)["type"] for payload in payloads]


def first(payloads: list[bytes], kind: str) -> int:
    """The position of the first event of type ``kind``."""
    return types(payloads).index(kind)


TEXT = [chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"})]
STREAMS = {
    "scripted text": scripted(Reply(text="one two three four")),
    "scripted calls": scripted(Reply(text="let me look", calls=["lookup", "fetch"])),
    "scripted incomplete": scripted(Reply(deltas=5, incomplete=True)),
    "scripted failed": scripted(Reply(failed=True)),
    "bridged text": bridged([*TEXT, chunk(finish_reason="stop")]),
    "bridged reasoning": bridged(
        [
            chunk({"reasoning_content": "Let me "}),
            chunk({"reasoning_content": "think."}),
            *TEXT,
            chunk(finish_reason="stop"),
        ]
    ),
    "bridged parallel calls": bridged(
        [
            call(0, '{"ci', name="weather"),
            call(1, '{"q":', name="search"),
            call(0, 'ty":"Paris"}'),
            call(1, '"news"}'),
            chunk(finish_reason="tool_calls"),
        ]
    ),
    "bridged custom tool": bridged(
        [call(0, '{"input":"*** Begin', name="apply_patch"), call(0, ' Patch"}')],
        tools=[PATCH_TOOL],
    ),
    "bridged refusal": bridged(
        [chunk({"refusal": "I can"}), chunk({"refusal": "not."}), chunk(finish_reason="stop")]
    ),
    "bridged length": bridged([*TEXT, chunk(finish_reason="length")]),
    "bridged cut": bridged(TEXT, done=False),
}


@pytest.mark.parametrize("name", STREAMS)
def test_all_events_fold_into_the_terminal_response(name: str) -> None:
    base, payloads = STREAMS[name]
    folded = snapshot(base, payloads)
    assert folded.finished
    assert folded.response() == terminal_response(payloads)
    assert msgspec.json.decode(folded.response_json()) == terminal_response(payloads)


def test_the_base_is_the_object_before_any_event() -> None:
    base, _ = STREAMS["scripted text"]
    folded = ResponseSnapshot(base)
    assert folded.response() == msgspec.json.decode(base)
    assert folded.status == "queued"
    assert not folded.finished


def test_a_prefix_before_any_output_has_the_created_status_and_no_output() -> None:
    base, payloads = STREAMS["scripted text"]
    added = first(payloads, "response.output_item.added")
    folded = snapshot(base, payloads[:added])
    response = folded.response()
    assert response["status"] == "in_progress"
    assert response["output"] == []
    assert response == msgspec.json.decode(payloads[0])["response"]


def test_a_prefix_mid_text_shows_the_partial_text_in_an_open_message() -> None:
    base, payloads = STREAMS["scripted text"]
    deltas = first(payloads, "response.output_text.delta")
    folded = snapshot(base, payloads[: deltas + 2])
    [message] = folded.response()["output"]
    assert message["status"] == "in_progress"
    assert message["content"] == [{"type": "output_text", "text": "one two ", "annotations": []}]
    assert folded.status == "in_progress"


def test_a_prefix_mid_arguments_shows_the_partial_arguments_and_finished_items() -> None:
    base, payloads = STREAMS["bridged parallel calls"]
    folded = snapshot(base, payloads[: first(payloads, "response.function_call_arguments.done")])
    weather, search = folded.response()["output"]
    assert (weather["name"], weather["status"]) == ("weather", "in_progress")
    assert weather["arguments"] == '{"city":"Paris"}'
    assert search["arguments"] == '{"q":"news"}'

    base, payloads = STREAMS["scripted calls"]
    message_done = first(payloads, "response.output_item.done")
    folded = snapshot(base, payloads[: message_done + 3])  # the call's added and one delta
    message, lookup = folded.response()["output"]
    assert message == terminal_response(payloads)["output"][0]
    final_arguments = terminal_response(payloads)["output"][1]["arguments"]
    assert lookup["status"] == "in_progress"
    assert lookup["arguments"] == final_arguments[: len(final_arguments) // 2]


def test_reasoning_and_refusal_prefixes_show_their_text_so_far() -> None:
    base, payloads = STREAMS["bridged reasoning"]
    folded = snapshot(base, payloads[: first(payloads, "response.reasoning_text.done")])
    [thought] = folded.response()["output"]
    assert thought["content"] == [{"type": "reasoning_text", "text": "Let me think."}]

    base, payloads = STREAMS["bridged refusal"]
    folded = snapshot(base, payloads[: first(payloads, "response.refusal.done")])
    [message] = folded.response()["output"]
    assert message["status"] == "in_progress"
    assert message["content"] == [{"type": "refusal", "refusal": "I cannot."}]


def test_a_custom_tool_call_input_is_streamed_into_input() -> None:
    base, payloads = STREAMS["bridged custom tool"]
    folded = snapshot(base, payloads[: first(payloads, "response.custom_tool_call_input.done")])
    [patch] = folded.response()["output"]
    assert (patch["type"], patch["input"]) == ("custom_tool_call", "*** Begin Patch")


def test_a_cancelled_prefix_keeps_the_partial_output_in_progress() -> None:
    base, payloads = STREAMS["scripted text"]
    folded = snapshot(base, payloads[: first(payloads, "response.output_text.delta") + 3])
    cancelled = folded.response(status="cancelled")
    created = msgspec.json.decode(payloads[0])["response"]
    assert cancelled == {**created, "status": "cancelled", "output": cancelled["output"]}
    assert cancelled["usage"] is None
    assert cancelled["completed_at"] is None
    [message] = cancelled["output"]
    assert message["type"] == "message"
    assert message["status"] == "in_progress"
    assert message["role"] == "assistant"
    assert message["content"] == [
        {"type": "output_text", "text": "one two three ", "annotations": []}
    ]
    assert folded.status == "in_progress"  # producing another status changes nothing
    assert msgspec.json.decode(folded.response_json(status="cancelled")) == cancelled


def test_unknown_events_and_garbage_are_ignored() -> None:
    base, payloads = STREAMS["scripted calls"]
    noise = [
        b"not json",
        b"[DONE]",
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"no": "type"}',
        b'{"type": "response.future_event", "output_index": 0, "delta": "x"}',
        b'{"type": "response.output_text.delta", "output_index": 0, "content_index": 0,'
        b' "delta": 5}',
        b'{"type": "response.output_text.delta", "output_index": 7, "content_index": 0,'
        b' "delta": "never added"}',
        b'{"type": "response.output_item.added", "output_index": 9, "item": "not an item"}',
        b'{"type": "response.content_part.added", "output_index": 0, "content_index": 3}',
        b'{"type": "response.in_progress", "response": "not an object"}',
        b'{"type": "error", "error": {"code": 500, "message": "odd"}}',
    ]
    noisy = [piece for payload in payloads for piece in (payload, *noise)]
    for end in (first(payloads, "response.output_text.delta") + 2, len(payloads)):
        clean = snapshot(base, payloads[:end]).response()
        assert snapshot(base, noisy[: end * (len(noise) + 1)]).response() == clean


def test_events_after_the_terminal_one_are_ignored() -> None:
    base, payloads = STREAMS["scripted text"]
    folded = snapshot(base, payloads)
    folded.feed_all(payloads[:3])
    folded.feed(b'{"type": "response.in_progress", "response": {"status": "in_progress"}}')
    assert folded.response() == terminal_response(payloads)
    assert folded.status == "completed"


def test_a_terminal_response_without_output_keeps_the_accumulated_output() -> None:
    base, payloads = STREAMS["scripted text"]
    final = terminal_response(payloads)
    emptied = {"type": "response.completed", "response": {**final, "output": []}}
    folded = snapshot(base, [*payloads[:-1], msgspec.json.encode(emptied)])
    assert folded.response() == final


def test_a_response_event_with_output_replaces_the_accumulated_output() -> None:
    base, payloads = STREAMS["scripted calls"]
    final = terminal_response(payloads)
    event = {"type": "response.in_progress", "response": {**final, "status": "in_progress"}}
    folded = snapshot(base, [*payloads[:5], msgspec.json.encode(event)])
    assert folded.response()["output"] == final["output"]
    assert not folded.finished


def test_reasoning_summary_parts_stream_into_summary() -> None:
    base, payloads = STREAMS["scripted text"]
    where = {"item_id": "rs_1", "output_index": 0}
    delta = {"type": "response.reasoning_summary_text.delta", **where}
    item = {"id": "rs_1", "type": "reasoning", "summary": []}
    summary = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {
            "type": "response.reasoning_summary_part.added",
            **where,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": ""},
        },
        {**delta, "summary_index": 0, "delta": "A"},
        {**delta, "summary_index": 0, "delta": "b"},
        {**delta, "summary_index": 1, "delta": "C"},
    ]
    folded = snapshot(base, [*payloads[:2], *encoded(summary)])
    [thought] = folded.response()["output"]
    assert thought["summary"] == [
        {"type": "summary_text", "text": "Ab"},
        {"type": "summary_text", "text": "C"},
    ]
    done = {"type": "response.reasoning_summary_text.done", **where, "summary_index": 1}
    folded.feed(msgspec.json.encode({**done, "text": "Cd"}))
    assert folded.response()["output"][0]["summary"][1] == {"type": "summary_text", "text": "Cd"}


def test_deltas_without_their_part_open_one_and_annotations_are_added() -> None:
    base, payloads = STREAMS["scripted text"]
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    item = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant"}
    annotation = {"type": "url_citation", "url": "https://example.com", "title": "E"}
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {"type": "response.output_text.delta", **where, "delta": "See "},
        {"type": "response.output_text.delta", **where, "delta": "this"},
        {"type": "response.output_text.annotation.added", **where, "annotation": annotation},
    ]
    folded = snapshot(base, [*payloads[:2], *encoded(events)])
    [message] = folded.response()["output"]
    assert message["content"] == [
        {"type": "output_text", "text": "See this", "annotations": [annotation]}
    ]


def test_each_call_returns_a_fresh_object_and_text_keeps_growing() -> None:
    base, payloads = STREAMS["scripted text"]
    deltas = first(payloads, "response.output_text.delta")
    folded = snapshot(base, payloads[: deltas + 1])
    before = folded.response()
    before["output"][0]["content"][0]["text"] = "changed"
    assert folded.response()["output"][0]["content"][0]["text"] == "one "
    folded.feed(payloads[deltas + 1])
    assert folded.response()["output"][0]["content"][0]["text"] == "one two "


def test_a_base_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        ResponseSnapshot(b"[]")
    with pytest.raises(msgspec.DecodeError):
        ResponseSnapshot(b"{")


def texts(response: Any) -> list[str]:
    """Every streamed string of the output, in order."""
    found = []
    for item in response["output"]:
        for part in [*item.get("content", ()), *item.get("summary", ())]:
            found.append(part.get("text", part.get("refusal")))
        found.extend(item[key] for key in ("arguments", "input") if key in item)
    return found


@pytest.mark.parametrize("name", STREAMS)
def test_every_prefix_folds_and_its_text_is_a_prefix_of_the_final_text(name: str) -> None:
    base, payloads = STREAMS[name]
    final = texts(terminal_response(payloads))
    for end in range(len(payloads) + 1):
        folded = snapshot(base, payloads[:end])
        partial = texts(folded.response())
        assert len(partial) <= len(final)
        for got, want in zip(partial, final, strict=False):
            assert want.startswith(got), (end, got, want)
        assert folded.finished == (end == len(payloads))
