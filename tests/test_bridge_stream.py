"""Chat Completions stream -> Responses stream, through the SSE decoder, at every split."""

from __future__ import annotations

import itertools
import json
import typing
from typing import Any

import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from state_middleware._bridge.reasoning import decode_reasoning
from state_middleware._bridge.stream import STREAM_CUT_MESSAGE, ChatStreamTranslator
from state_middleware._skeleton import response_skeleton
from state_middleware._sse import SSEDecoder


def _sdk_event_models() -> dict[str, type[pydantic.BaseModel]]:
    """The openai SDK's model class for each Responses stream event type."""
    union = typing.get_args(ResponseStreamEvent)[0]
    return {
        typing.get_args(model.model_fields["type"].annotation)[0]: model
        for model in typing.get_args(union)
    }


SDK_EVENT_MODELS = _sdk_event_models()
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files."}
USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}


def base(**request: Any) -> dict[str, Any]:
    return response_skeleton(
        {"model": "m", "input": "hi", "stream": True, **request},
        response_id="resp_s",
        created_at=1_750_000_000,
        previous_response_id=None,
        store=True,
    )


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [choice],
    }


def usage_chunk() -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}


def tool_fragment(index: int, arguments: str, call_id: str = "", name: str = "") -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        fragment.update(id=call_id, type="function")
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


def sse(chunks: list[dict[str, Any]], *, done: bool = True, newline: bytes = b"\n") -> bytes:
    """A Chat event stream as an upstream sends it."""
    frames = [b"data: " + json.dumps(c).encode() + newline * 2 for c in chunks]
    if done:
        frames.append(b"data: [DONE]" + newline * 2)
    return b"".join(frames)


def translate(stream: bytes, *, splits: tuple[int, ...] = (), **request: Any) -> bytes:
    """Run ``stream`` (cut at ``splits``) through the decoder and a translator."""
    translator = ChatStreamTranslator(base=base(**request))
    decoder = SSEDecoder()
    out = translator.start()
    bounds = [0, *splits, len(stream)]
    for start, end in itertools.pairwise(bounds):
        for frame in decoder.feed(stream[start:end]):
            if frame.data is not None:
                out += translator.feed(frame.data)
    for frame in decoder.flush():
        if frame.data is not None:
            out += translator.feed(frame.data)
    out += translator.finish()
    assert translator.terminal_emitted
    return out


def events(out: bytes) -> list[dict[str, Any]]:
    """Decode Responses frames, checking the framing and the SDK's event models."""
    decoded = []
    for frame in SSEDecoder().feed(out):
        assert frame.data is not None
        event = json.loads(frame.data)
        assert frame.event == event["type"]
        assert frame.raw == b"event: " + event["type"].encode() + b"\ndata: " + frame.data + b"\n\n"
        SDK_EVENT_MODELS[event["type"]].model_validate(event)
        decoded.append(event)
    assert [e["sequence_number"] for e in decoded] == list(range(len(decoded)))
    return decoded


def types(decoded: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in decoded]


def normalized(decoded: list[dict[str, Any]]) -> Any:
    """Events with random ids and clock values blanked, for comparing runs."""

    def blank(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: "*" if k in ("id", "item_id", "completed_at") else blank(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [blank(v) for v in value]
        return value

    return blank(decoded)


def terminal(decoded: list[dict[str, Any]]) -> dict[str, Any]:
    response: dict[str, Any] = decoded[-1]["response"]
    return response


TEXT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo, "}),
    chunk({"content": "wörld"}),
    chunk(finish_reason="stop"),
    usage_chunk(),
]


def test_text_stream_has_the_full_openai_event_sequence() -> None:
    decoded = events(translate(sse(TEXT_STREAM)))
    assert types(decoded) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert decoded[0]["response"]["status"] == "in_progress"
    assert decoded[0]["response"]["id"] == terminal(decoded)["id"] == "resp_s"
    added = decoded[2]["item"]
    assert added["status"] == "in_progress"
    assert added["content"] == []
    assert decoded[3]["part"] == {
        "type": "output_text",
        "text": "",
        "annotations": [],
        "logprobs": [],
    }
    deltas = [e["delta"] for e in decoded if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "Hello, wörld"
    assert decoded[7]["text"] == "Hello, wörld"
    done_item = decoded[9]["item"]
    assert done_item["id"] == added["id"]
    assert done_item["status"] == "completed"
    response = terminal(decoded)
    assert response["status"] == "completed"
    assert response["output"] == [done_item]
    assert response["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 18,
    }


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_streams_split_at_every_byte_boundary_translate_identically(newline: bytes) -> None:
    calls = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "hm"}),
        chunk({"content": "é✓"}),
        tool_fragment(0, "", "call_a", "f"),
        tool_fragment(0, '{"q":'),
        tool_fragment(0, "1}"),
        chunk(finish_reason="tool_calls"),
        usage_chunk(),
    ]
    stream = sse(calls, newline=newline)
    expected = normalized(events(translate(stream)))
    for split in range(len(stream) + 1):
        assert normalized(_frames(translate(stream, splits=(split,)))) == expected, split
    one_byte_at_a_time = tuple(range(1, len(stream)))
    assert normalized(events(translate(stream, splits=one_byte_at_a_time))) == expected


def test_deltas_are_emitted_as_each_chunk_arrives() -> None:
    translator = ChatStreamTranslator(base=base())
    translator.start()
    first = translator.feed(json.dumps(chunk({"content": "a"})).encode())
    assert b'"delta":"a"' in first
    second = translator.feed(json.dumps(chunk({"content": "b"})).encode())
    assert [e["type"] for e in _frames(second)] == ["response.output_text.delta"]
    assert translator.feed(json.dumps(chunk(finish_reason="stop")).encode())
    assert not translator.terminal_emitted  # usage may still come
    assert b"response.completed" in translator.feed(b"[DONE]")
    assert translator.terminal_emitted


def _frames(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(f.data or b"") for f in SSEDecoder().feed(out)]


def test_usage_after_the_finish_reason_reaches_the_terminal_event() -> None:
    decoded = events(translate(sse(TEXT_STREAM)))
    assert terminal(decoded)["usage"]["input_tokens"] == 11
    no_usage = events(translate(sse(TEXT_STREAM[:-1])))
    assert terminal(no_usage)["usage"] is None


def test_a_body_that_ends_after_the_finish_reason_without_done_completes() -> None:
    decoded = events(translate(sse(TEXT_STREAM, done=False)))
    assert decoded[-1]["type"] == "response.completed"
    assert terminal(decoded)["usage"]["total_tokens"] == 18


def test_parallel_interleaved_tool_calls_become_distinct_items() -> None:
    stream = sse(
        [
            chunk({"role": "assistant", "content": None}),
            tool_fragment(0, "", "call_a", "get_weather"),
            tool_fragment(1, "", "call_b", "get_time"),
            tool_fragment(0, '{"city":'),
            tool_fragment(1, '{"tz":'),
            tool_fragment(0, '"Paris"}'),
            tool_fragment(1, '"UTC"}'),
            chunk(finish_reason="tool_calls"),
        ]
    )
    decoded = events(translate(stream))
    added = [e for e in decoded if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["call_id"]) for e in added] == [
        (0, "call_a"),
        (1, "call_b"),
    ]
    assert all(e["item"]["id"].startswith("fc_") for e in added)
    by_item: dict[str, str] = {}
    for event in decoded:
        if event["type"] == "response.function_call_arguments.delta":
            by_item[event["item_id"]] = by_item.get(event["item_id"], "") + event["delta"]
    assert by_item == {
        added[0]["item"]["id"]: '{"city":"Paris"}',
        added[1]["item"]["id"]: '{"tz":"UTC"}',
    }
    output = terminal(decoded)["output"]
    assert [(i["type"], i["name"], i["arguments"], i["status"]) for i in output] == [
        ("function_call", "get_weather", '{"city":"Paris"}', "completed"),
        ("function_call", "get_time", '{"tz":"UTC"}', "completed"),
    ]
    dones = [e for e in decoded if e["type"] == "response.function_call_arguments.done"]
    assert [e["arguments"] for e in dones] == ['{"city":"Paris"}', '{"tz":"UTC"}']


def test_text_then_tool_call_closes_the_message_first() -> None:
    stream = sse(
        [
            chunk({"content": "Let me check."}),
            tool_fragment(0, "{}", "call_a", "f"),
            chunk(finish_reason="tool_calls"),
        ]
    )
    decoded = events(translate(stream))
    assert types(decoded)[2:] == [
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]


def test_tool_calls_sent_whole_without_an_index() -> None:
    whole = {"id": "call_z", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    other = {"id": "call_y", "type": "function", "function": {"name": "g", "arguments": "[]"}}
    decoded = events(
        translate(sse([chunk({"tool_calls": [whole, other]}), chunk(finish_reason="tool_calls")]))
    )
    output = terminal(decoded)["output"]
    assert [(i["call_id"], i["arguments"]) for i in output] == [("call_z", "{}"), ("call_y", "[]")]


def test_reasoning_streams_as_a_reasoning_item_before_the_message() -> None:
    stream = sse(
        [
            chunk({"role": "assistant", "reasoning_content": "Let me "}),
            chunk({"reasoning_content": "think."}),
            chunk({"content": "Answer"}),
            chunk(finish_reason="stop"),
        ]
    )
    decoded = events(translate(stream))
    assert types(decoded)[2:11] == [
        "output_item.added",
        "content_part.added",
        "reasoning_text.delta",
        "reasoning_text.delta",
        "reasoning_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "content_part.added",
    ]
    assert decoded[3]["part"] == {"type": "reasoning_text", "text": ""}
    assert decoded[6]["text"] == "Let me think."
    assert decoded[7]["part"] == {"type": "reasoning_text", "text": "Let me think."}
    thought, message = terminal(decoded)["output"]
    assert thought["id"].startswith("rs_")
    assert thought["content"] == [{"type": "reasoning_text", "text": "Let me think."}]
    assert decode_reasoning(thought["encrypted_content"]) == "Let me think."
    assert message["content"][0]["text"] == "Answer"
    assert decoded[9]["output_index"] == 1


def test_the_reasoning_field_name_may_be_reasoning() -> None:
    stream = sse([chunk({"reasoning": "vllm style"}), chunk(finish_reason="stop")])
    [thought] = terminal(events(translate(stream)))["output"]
    assert thought["content"][0]["text"] == "vllm style"


def test_custom_tool_calls_stream_as_custom_tool_call_items() -> None:
    arguments = json.dumps({"input": "*** Begin Patch\n*** End Patch\n"})
    stream = sse(
        [
            tool_fragment(0, "", "call_p", "apply_patch"),
            tool_fragment(0, arguments[:10]),
            tool_fragment(0, arguments[10:]),
            chunk(finish_reason="tool_calls"),
        ]
    )
    decoded = events(translate(stream, tools=[PATCH_TOOL]))
    assert types(decoded)[2:] == [
        "output_item.added",
        "custom_tool_call_input.delta",
        "custom_tool_call_input.done",
        "output_item.done",
        "completed",
    ]
    item = decoded[-2]["item"]
    assert item["type"] == "custom_tool_call"
    assert item["id"].startswith("ctc_")
    assert item["call_id"] == "call_p"
    assert item["input"] == "*** Begin Patch\n*** End Patch\n"
    assert decoded[4]["input"] == item["input"]


def test_refusal_streams_as_a_refusal_part() -> None:
    stream = sse(
        [chunk({"refusal": "I can"}), chunk({"refusal": "not."}), chunk(finish_reason="stop")]
    )
    decoded = events(translate(stream))
    assert "refusal.delta" in types(decoded)
    assert terminal(decoded)["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I cannot."}
    ]


@pytest.mark.parametrize(
    ("finish_reason", "reason"),
    [("length", "max_output_tokens"), ("content_filter", "content_filter")],
)
def test_length_and_content_filter_end_incomplete(finish_reason: str, reason: str) -> None:
    stream = sse([chunk({"content": "trunc"}), chunk(finish_reason=finish_reason), usage_chunk()])
    decoded = events(translate(stream))
    assert decoded[-1]["type"] == "response.incomplete"
    response = terminal(decoded)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert response["output"][0]["status"] == "incomplete"
    assert response["usage"]["output_tokens"] == 7


def test_a_stream_cut_before_the_finish_reason_fails() -> None:
    stream = sse([chunk({"content": "partial"})], done=False)
    decoded = events(translate(stream))
    assert types(decoded)[-2:] == ["error", "failed"]
    error_event = decoded[-2]
    assert error_event["error"] == {
        "type": "server_error",
        "code": "server_error",
        "message": STREAM_CUT_MESSAGE,
        "param": None,
    }
    response = terminal(decoded)
    assert response["status"] == "failed"
    assert response["error"] == {"code": "server_error", "message": STREAM_CUT_MESSAGE}
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "partial"


def test_an_error_payload_mid_stream_fails_with_the_upstream_message() -> None:
    error = {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}
    translator = ChatStreamTranslator(base=base())
    out = translator.start() + translator.feed(json.dumps(chunk({"content": "a"})).encode())
    out += translator.feed(json.dumps(error).encode())
    assert translator.terminal_emitted
    assert translator.feed(json.dumps(chunk({"content": "late"})).encode()) == b""
    assert translator.feed(b"[DONE]") == b""
    assert translator.finish() == b""
    decoded = events(out)
    assert decoded[-2]["error"]["message"] == "overloaded"
    assert decoded[-2]["error"]["code"] == "overloaded"
    assert terminal(decoded)["error"] == {"code": "server_error", "message": "overloaded"}


def test_a_schema_error_code_from_upstream_is_kept_on_the_failed_response() -> None:
    error = {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}
    stream = b"data: " + json.dumps(error).encode() + b"\n\n"
    decoded = events(translate(stream))
    assert terminal(decoded)["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}


def test_an_undecodable_chunk_fails_the_stream() -> None:
    decoded = events(translate(b"data: {not json\n\n"))
    assert types(decoded) == ["created", "in_progress", "error", "failed"]


def test_start_is_emitted_once() -> None:
    translator = ChatStreamTranslator(base=base())
    assert translator.start().count(b"event: ") == 2
    assert translator.start() == b""


def test_feed_without_start_still_begins_with_created() -> None:
    translator = ChatStreamTranslator(base=base())
    out = translator.feed(json.dumps(chunk({"content": "x"})).encode())
    assert _frames(out)[0]["type"] == "response.created"


def test_other_choices_are_ignored() -> None:
    other = chunk({"content": "second choice"})
    other["choices"][0]["index"] = 1
    stream = sse([chunk({"content": "first"}), other, chunk(finish_reason="stop")])
    [message] = terminal(events(translate(stream)))["output"]
    assert message["content"][0]["text"] == "first"


def test_many_deltas_each_become_one_delta_event() -> None:
    payloads = [json.dumps(chunk({"content": f" w{i}"})).encode() for i in range(2000)]
    translator = ChatStreamTranslator(base=base())
    out = [translator.start()]
    out += [translator.feed(p) for p in payloads]
    tail = translator.feed(json.dumps(chunk(finish_reason="stop")).encode()) + translator.feed(
        b"[DONE]"
    )
    decoded = events(b"".join(out) + tail)
    deltas = [e["delta"] for e in decoded if e["type"] == "response.output_text.delta"]
    assert len(deltas) == 2000
    assert terminal(decoded)["output"][0]["content"][0]["text"] == "".join(deltas)
