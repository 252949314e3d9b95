"""Chat completion -> Responses object, the response skeleton, reasoning and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response

from state_middleware._bridge.errors import chat_error_to_response_error
from state_middleware._bridge.reasoning import (
    REASONING_PREFIX,
    decode_reasoning,
    encode_reasoning,
    new_item_id,
    reasoning_by_call_id,
    reasoning_item,
    reasoning_text,
)
from state_middleware._bridge.request import build_chat_request
from state_middleware._bridge.response import (
    chat_completion_to_response,
    custom_tool_input,
    map_usage,
)
from state_middleware._errors import ApiError
from state_middleware._skeleton import response_skeleton

PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files."}


def skeleton(**request: Any) -> dict[str, Any]:
    return response_skeleton(
        {"model": "m", "input": "hi", **request},
        response_id="resp_1",
        created_at=1_750_000_000,
        previous_response_id=None,
        store=True,
    )


def completion(
    message: dict[str, Any], finish_reason: str = "stop", **extra: Any
) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", **message},
        "finish_reason": finish_reason,
    }
    return {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], **extra}


def translate(chat: dict[str, Any], **request: Any) -> dict[str, Any]:
    """Translate, and check the result against the openai SDK's ``Response`` model."""
    response = chat_completion_to_response(chat, base=skeleton(**request), now=1_750_000_001)
    Response.model_validate(response)
    return response


# -- skeleton --------------------------------------------------------------------------


def test_skeleton_echoes_the_request_with_openai_defaults() -> None:
    base = skeleton()
    assert base["id"] == "resp_1"
    assert base["object"] == "response"
    assert base["status"] == "in_progress"
    assert base["output"] == []
    assert base["usage"] is None
    assert base["store"] is True
    assert base["tools"] == []
    assert base["tool_choice"] == "auto"
    assert base["parallel_tool_calls"] is True
    assert base["temperature"] == 1.0
    assert base["top_p"] == 1.0
    assert base["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    assert base["reasoning"] == {"effort": None, "summary": None}
    assert base["metadata"] == {}
    assert base["truncation"] == "disabled"
    assert base["previous_response_id"] is None


def test_skeleton_echoes_given_parameters() -> None:
    base = response_skeleton(
        {
            "model": "m2",
            "instructions": "be nice",
            "tools": [PATCH_TOOL],
            "tool_choice": "required",
            "temperature": 0.3,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
            "metadata": {"a": "b"},
            "max_output_tokens": 99,
            "store": False,
        },
        response_id="resp_2",
        created_at=5,
        previous_response_id="resp_1",
        store=False,
    )
    assert base["model"] == "m2"
    assert base["instructions"] == "be nice"
    assert base["tools"] == [PATCH_TOOL]
    assert base["tool_choice"] == "required"
    assert base["temperature"] == 0.3
    assert base["reasoning"] == {"effort": "low", "summary": "auto"}
    assert base["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert base["metadata"] == {"a": "b"}
    assert base["max_output_tokens"] == 99
    assert base["previous_response_id"] == "resp_1"
    assert base["store"] is False


# -- output items ----------------------------------------------------------------------


def test_text_completion_becomes_a_completed_message() -> None:
    response = translate(completion({"content": "Hi"}))
    assert response["status"] == "completed"
    assert response["completed_at"] == 1_750_000_001
    assert response["error"] is None
    assert response["incomplete_details"] is None
    [item] = response["output"]
    assert item["type"] == "message"
    assert item["id"].startswith("msg_")
    assert item["status"] == "completed"
    assert item["role"] == "assistant"
    assert item["content"] == [
        {"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []}
    ]


def test_the_skeleton_fields_survive() -> None:
    response = translate(completion({"content": "Hi"}), instructions="x", metadata={"k": "v"})
    assert response["id"] == "resp_1"
    assert response["instructions"] == "x"
    assert response["metadata"] == {"k": "v"}
    assert response["model"] == "m"


def test_tool_calls_become_function_call_items_after_the_message() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    response = translate(completion({"content": "Let me see.", "tool_calls": calls}, "tool_calls"))
    assert response["status"] == "completed"
    message, first, second = response["output"]
    assert message["type"] == "message"
    assert first["type"] == "function_call"
    assert first["id"].startswith("fc_")
    assert first["call_id"] == "call_a"
    assert first["name"] == "f"
    assert first["arguments"] == '{"x":1}'
    assert first["status"] == "completed"
    assert second["call_id"] == "call_b"


def test_custom_tool_calls_come_back_as_custom_tool_call_items() -> None:
    patch = "*** Begin Patch\n*** End Patch\n"
    arguments = json.dumps({"input": patch})
    calls = [
        {
            "id": "call_p",
            "type": "function",
            "function": {"name": "apply_patch", "arguments": arguments},
        }
    ]
    response = translate(
        completion({"content": None, "tool_calls": calls}, "tool_calls"), tools=[PATCH_TOOL]
    )
    [item] = response["output"]
    assert item == {
        "type": "custom_tool_call",
        "id": item["id"],
        "call_id": "call_p",
        "name": "apply_patch",
        "input": patch,
        "status": "completed",
    }
    assert item["id"].startswith("ctc_")


def test_custom_tool_input_tolerates_models_that_ignore_the_schema() -> None:
    assert custom_tool_input('{"input": "x"}') == "x"
    assert custom_tool_input('"bare"') == "bare"
    assert custom_tool_input("not json") == "not json"
    assert custom_tool_input('{"other": 1}') == '{"other": 1}'


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_the_first_output_item(field: str) -> None:
    response = translate(completion({"content": "A", field: "deep thought"}))
    thought, message = response["output"]
    assert thought["type"] == "reasoning"
    assert thought["id"].startswith("rs_")
    assert thought["summary"] == []
    assert thought["content"] == [{"type": "reasoning_text", "text": "deep thought"}]
    assert decode_reasoning(thought["encrypted_content"]) == "deep thought"
    assert message["type"] == "message"


@pytest.mark.parametrize(
    ("finish_reason", "reason"),
    [("length", "max_output_tokens"), ("content_filter", "content_filter")],
)
def test_length_and_content_filter_make_the_response_incomplete(
    finish_reason: str, reason: str
) -> None:
    response = translate(completion({"content": "cut"}, finish_reason))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert response["completed_at"] is None
    assert response["output"][0]["status"] == "incomplete"


def test_a_cut_answer_leaves_text_before_its_tool_calls_completed() -> None:
    calls = [
        {"id": f"call_{n}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for n in range(2)
    ]
    response = translate(completion({"content": "first", "tool_calls": calls}, "length"))
    statuses = [(item["type"], item["status"]) for item in response["output"]]
    assert statuses == [
        ("message", "completed"),
        ("function_call", "incomplete"),
        ("function_call", "incomplete"),
    ]


def test_refusal_becomes_a_refusal_part() -> None:
    response = translate(completion({"content": None, "refusal": "I can't."}))
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]


def test_url_citations_are_flattened() -> None:
    citation = {"start_index": 0, "end_index": 2, "title": "T", "url": "https://x"}
    message = {"content": "Hi", "annotations": [{"type": "url_citation", "url_citation": citation}]}
    part = translate(completion(message))["output"][0]["content"][0]
    assert part["annotations"] == [{"type": "url_citation", **citation}]


def test_empty_content_gives_no_message_item() -> None:
    assert translate(completion({"content": ""}))["output"] == []


def test_usage_is_mapped_with_token_details() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert translate(completion({"content": "x"}, usage=usage))["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }


def test_usage_without_details_or_total() -> None:
    assert map_usage({"prompt_tokens": 3, "completion_tokens": 4}) == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }
    assert map_usage(None) is None


def test_a_completion_without_choices_is_a_502() -> None:
    with pytest.raises(ApiError) as caught:
        translate({"choices": []})
    assert caught.value.status == 502
    assert caught.value.type == "server_error"


# -- reasoning helpers -----------------------------------------------------------------


def test_ids_carry_the_prefix_and_enough_randomness() -> None:
    ids = {new_item_id("msg") for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("msg_") and len(i) == 4 + 48 for i in ids)


def test_encrypted_content_round_trips_and_is_versioned() -> None:
    text = "ünïcode thoughts\nover lines"
    encoded = encode_reasoning(text)
    assert encoded.startswith(REASONING_PREFIX)
    assert decode_reasoning(encoded) == text
    assert decode_reasoning("gAAAAB-openai-blob") is None
    assert decode_reasoning(REASONING_PREFIX + "!!not base64!!") is None
    assert decode_reasoning(None) is None


def test_reasoning_text_prefers_content_then_encrypted_then_summary() -> None:
    item = reasoning_item("from content")
    assert reasoning_text(item) == "from content"
    assert reasoning_text({**item, "content": None}) == "from content"
    summary_only = {"summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": "x"}
    assert reasoning_text(summary_only) == "s"
    assert reasoning_text({"summary": []}) is None


def test_reasoning_by_call_id_indexes_calls_after_reasoning() -> None:
    items = [
        reasoning_item("r1"),
        {"type": "message", "role": "assistant", "content": []},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "p", "input": "x"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
        reasoning_item("r2"),
        reasoning_item("r3"),
        {"type": "function_call", "call_id": "c4", "name": "f", "arguments": "{}"},
    ]
    assert reasoning_by_call_id(items) == {"c1": "r1", "c2": "r1", "c4": "r2\nr3"}


def test_a_turn_replays_with_its_reasoning() -> None:
    calls = [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    response = translate(
        completion({"content": None, "reasoning_content": "why", "tool_calls": calls})
    )
    history = [
        {"role": "user", "content": "q"},
        *response["output"],
        {"type": "function_call_output", "call_id": "call_a", "output": "42"},
    ]
    messages = build_chat_request({"model": "m", "input": history})["messages"]
    assert messages[1]["reasoning_content"] == "why"
    assert messages[1]["tool_calls"][0]["id"] == "call_a"
    assert reasoning_by_call_id(response["output"]) == {"call_a": "why"}


# -- upstream errors -------------------------------------------------------------------


def test_upstream_openai_errors_keep_their_fields() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "bad model",
                "type": "invalid_request_error",
                "param": "model",
                "code": "x",
            }
        }
    ).encode()
    assert json.loads(chat_error_to_response_error(400, body)) == {
        "error": {
            "message": "bad model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "x",
        }
    }


@pytest.mark.parametrize(
    ("status", "body", "message", "error_type"),
    [
        (500, b"Internal Server Error", "Internal Server Error", "server_error"),
        (502, b"", "Upstream returned HTTP 502.", "server_error"),
        (422, b'{"detail": "messages missing"}', "messages missing", "invalid_request_error"),
        (429, b'{"error": "slow down"}', "slow down", "rate_limit_error"),
        (401, b'{"message": "no key"}', "no key", "authentication_error"),
        (400, b"[1, 2]", "Upstream returned HTTP 400.", "invalid_request_error"),
    ],
)
def test_upstream_errors_of_any_shape_become_openai_errors(
    status: int, body: bytes, message: str, error_type: str
) -> None:
    error = json.loads(chat_error_to_response_error(status, body))["error"]
    assert error == {"message": message, "type": error_type, "param": None, "code": None}


def test_bridge_error_body_has_all_four_keys() -> None:
    error = ApiError(400, "nope", param="tools")
    assert json.loads(error.body()) == {
        "error": {
            "message": "nope",
            "type": "invalid_request_error",
            "param": "tools",
            "code": None,
        }
    }
    assert str(error) == "nope"
