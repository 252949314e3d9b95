"""A whole chat completion replayed as a Responses event stream (for servers that ignore
``stream: true``) must be the stream a live chat stream of the same answer gives."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from state_middleware._bridge.replay import replay_events
from state_middleware._bridge.response import chat_completion_to_response
from state_middleware._bridge.stream import ChatStreamTranslator
from state_middleware._skeleton import response_skeleton

USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files."}
LOOKUP_TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
_ITEM_ID = re.compile(r"^(msg|rs|fc|ctc)_[0-9a-f]{48}$")


def base(**request: Any) -> dict[str, Any]:
    body = {"model": "m", "input": "hi", "stream": True, "tools": [LOOKUP_TOOL, PATCH_TOOL]}
    return response_skeleton(
        {**body, **request},
        response_id="resp_1",
        created_at=1,
        previous_response_id=None,
        store=True,
    )


def call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    return {"index": index, "id": call_id, "type": "function", "function": function}


def live(start: dict[str, Any], deltas: list[dict[str, Any]], finish: str) -> bytes:
    """What the stream translator sends for a chat stream with these deltas, one chunk
    each, then the finish reason, the usage chunk and ``[DONE]``."""
    translator = ChatStreamTranslator(base=start)

    def chunk(choices: list[Any], usage: Any = None) -> bytes:
        return msgspec.json.encode(
            {"object": "chat.completion.chunk", "choices": choices, "usage": usage}
        )

    out = b"".join(
        translator.feed(chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
        for delta in deltas
    )
    out += translator.feed(chunk([{"index": 0, "delta": {}, "finish_reason": finish}]))
    out += translator.feed(chunk([], USAGE))
    return out + translator.feed(b"[DONE]")


def replayed(start: dict[str, Any], message: dict[str, Any], finish: str) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    completion = {"object": "chat.completion", "choices": [choice], "usage": USAGE}
    return replay_events(start, chat_completion_to_response(completion, base=start))


def events(raw: bytes) -> list[tuple[str, Any]]:
    """(event line, data) of every frame; item ids renamed in order of appearance and
    ``completed_at`` blanked, the two things two translations of one answer may differ in."""
    names: dict[str, str] = {}

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: None if key == "completed_at" else rename(item) for key, item in value.items()
            }
        if isinstance(value, list):
            return [rename(item) for item in value]
        if isinstance(value, str) and _ITEM_ID.match(value):
            return names.setdefault(value, f"item{len(names)}")
        return value

    found = []
    for frame in raw.split(b"\n\n"):
        if frame:
            event, data = frame.split(b"\n")
            assert event.startswith(b"event: ")
            assert data.startswith(b"data: ")
            found.append((event[7:].decode(), rename(json.loads(data[6:]))))
    return found


PATCH_ARGUMENTS = json.dumps({"input": "*** Begin Patch\n*** End Patch"})

CASES = {
    "text": ({"content": "Hello there"}, [{"role": "assistant", "content": "Hello there"}]),
    "thinking then text": (
        {"reasoning_content": "hmm, let me see", "content": "Yes."},
        [{"reasoning_content": "hmm, let me see"}, {"content": "Yes."}],
    ),
    "thinking as reasoning": (
        {"reasoning": "a thought", "content": "An answer."},
        [{"reasoning": "a thought"}, {"content": "An answer."}],
    ),
    "refusal": ({"refusal": "I can't help with that."}, [{"refusal": "I can't help with that."}]),
    "text then a function call": (
        {
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"input":"x"}'},
                }
            ],
        },
        [
            {"content": "Let me look."},
            {"tool_calls": [call(0, "call_1", "lookup", '{"input":"x"}')]},
        ],
    ),
    "a custom tool call": (
        {
            "tool_calls": [
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": PATCH_ARGUMENTS},
                }
            ]
        },
        [{"tool_calls": [call(0, "call_2", "apply_patch", PATCH_ARGUMENTS)]}],
    ),
}


@pytest.mark.parametrize("finish", ["stop", "length"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_replayed_completion_is_the_live_stream_of_the_same_answer(
    case: str, finish: str
) -> None:
    message, deltas = CASES[case]
    start = base()
    expected = events(live(start, deltas, finish))
    got = events(replayed(start, message, finish))
    assert got == expected
    assert [data["sequence_number"] for _, data in got] == list(range(len(got)))
    assert all(event == data["type"] for event, data in got)
    terminal = "response.incomplete" if finish == "length" else "response.completed"
    assert got[-1][0] == terminal


def test_parallel_calls_are_replayed_one_item_after_the_other() -> None:
    start = base()
    calls = [
        {"id": f"call_{n}", "type": "function", "function": {"name": "lookup", "arguments": a}}
        for n, a in enumerate(['{"input":"a"}', '{"input":"b"}'])
    ]
    got = events(replayed(start, {"tool_calls": calls}, "tool_calls"))
    assert [(event, data.get("output_index")) for event, data in got] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.function_call_arguments.delta", 0),
        ("response.function_call_arguments.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.completed", None),
    ]
    added = [data["item"] for event, data in got if event == "response.output_item.added"]
    assert [(item["status"], item["arguments"]) for item in added] == [("in_progress", "")] * 2
    final = got[-1][1]["response"]
    assert [item["call_id"] for item in final["output"]] == ["call_0", "call_1"]
    assert [item["arguments"] for item in final["output"]] == ['{"input":"a"}', '{"input":"b"}']


def test_the_replay_keeps_what_only_a_whole_completion_has() -> None:
    """Annotations are not in chat stream chunks; a replayed completion keeps them on the
    finished part, and the stream starts from the client's in-progress object."""
    start = base()
    citation = {"url": "https://example.com", "title": "Example", "start_index": 0, "end_index": 5}
    message = {
        "content": "Hello",
        "annotations": [{"type": "url_citation", "url_citation": citation}],
    }
    got = events(replayed(start, message, "stop"))
    created = got[0][1]["response"]
    assert (created["id"], created["status"], created["output"]) == ("resp_1", "in_progress", [])
    (part_done,) = [data for event, data in got if event == "response.content_part.done"]
    assert part_done["part"]["annotations"] == [{"type": "url_citation", **citation}]
    (part_added,) = [data for event, data in got if event == "response.content_part.added"]
    assert part_added["part"]["annotations"] == []
    assert got[-1][1]["response"]["output"][0]["content"][0]["annotations"] == [
        {"type": "url_citation", **citation}
    ]
