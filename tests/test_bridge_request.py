"""Responses request -> Chat Completions request: every mapping rule of the bridge."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from state_middleware._bridge.reasoning import encode_reasoning
from state_middleware._bridge.request import build_chat_request, custom_tool_parameters
from state_middleware._errors import ApiError

CODEX_PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF',
    },
}


def chat(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    return build_chat_request({"model": "m", **body}, **options)


def messages(input_value: Any, **options: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = chat({"input": input_value}, **options)["messages"]
    return result


def rejected(body: dict[str, Any], **options: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        chat(body, **options)
    assert caught.value.status == 400
    return caught.value


def call(call_id: str, name: str = "f", arguments: str = "{}") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output(call_id: str, value: Any = "ok") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": value}


def reasoning(text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def assistant(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


# -- top-level fields ------------------------------------------------------------------


def test_string_input_becomes_one_user_message() -> None:
    assert chat({"input": "hi"}) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_instructions_become_a_leading_system_message() -> None:
    body = chat({"instructions": "be brief", "input": "hi"})
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_system_role_is_configurable_for_instructions_and_developer_messages() -> None:
    body = chat(
        {"instructions": "A", "input": [{"role": "developer", "content": "B"}]},
        system_role="developer",
    )
    assert [m["role"] for m in body["messages"]] == ["developer", "developer"]


def test_developer_and_system_messages_take_the_system_role() -> None:
    result = messages(
        [
            {"role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
            {"role": "system", "content": "sys"},
        ]
    )
    assert result == [{"role": "system", "content": "dev"}, {"role": "system", "content": "sys"}]


def test_sampling_and_identity_fields_are_copied() -> None:
    body = {
        "input": "hi",
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"k": "v"},
        "user": "u",
        "safety_identifier": "s",
        "prompt_cache_key": "p",
        "seed": 7,
        "stop": ["\n"],
    }
    result = chat(body)
    for key in ("temperature", "top_p", "metadata", "user", "safety_identifier"):
        assert result[key] == body[key]
    assert result["prompt_cache_key"] == "p"
    assert result["seed"] == 7
    assert result["stop"] == ["\n"]


def test_store_and_responses_only_fields_are_never_forwarded() -> None:
    result = chat(
        {
            "input": "hi",
            "store": True,
            "include": ["reasoning.encrypted_content"],
            "truncation": "auto",
            "client_metadata": {"session_id": "x"},
            "service_tier": "auto",
            "prompt_cache_retention": "24h",
            "background": False,
            "stream_options": {"include_obfuscation": False},
            "max_tool_calls": 3,
            "top_logprobs": 2,
            "text": {"verbosity": "low"},
            "reasoning": {"summary": "auto"},
        }
    )
    assert result == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_unknown_fields_are_forwarded_for_server_extensions() -> None:
    result = chat({"input": "hi", "top_k": 20, "chat_template_kwargs": {"enable_thinking": True}})
    assert result["top_k"] == 20
    assert result["chat_template_kwargs"] == {"enable_thinking": True}


def test_stream_asks_for_usage() -> None:
    result = chat({"input": "hi", "stream": True})
    assert result["stream"] is True
    assert result["stream_options"] == {"include_usage": True}
    assert "stream" not in chat({"input": "hi", "stream": False})


def test_max_output_tokens_maps_to_max_completion_tokens_by_default() -> None:
    assert chat({"input": "hi", "max_output_tokens": 64})["max_completion_tokens"] == 64
    legacy = chat({"input": "hi", "max_output_tokens": 64}, max_tokens_field="max_tokens")
    assert legacy["max_tokens"] == 64
    assert "max_completion_tokens" not in legacy


def test_invalid_options_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="max_tokens_field"):
        chat({"input": "hi"}, max_tokens_field="tokens")
    with pytest.raises(ValueError, match="unsupported_tools"):
        chat({"input": "hi"}, unsupported_tools="ignore")


def test_reasoning_effort_maps_to_reasoning_effort() -> None:
    result = chat({"input": "hi", "reasoning": {"effort": "high", "summary": "auto"}})
    assert result["reasoning_effort"] == "high"
    assert "reasoning" not in result


def test_json_schema_format_is_nested_under_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
    result = chat({"input": "hi", "text": {"format": fmt, "verbosity": "low"}})
    assert result["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }


def test_json_object_and_text_formats() -> None:
    json_object = chat({"input": "hi", "text": {"format": {"type": "json_object"}}})
    assert json_object["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat({"input": "hi", "text": {"format": {"type": "text"}}})


def test_unknown_text_format_is_refused() -> None:
    error = rejected({"input": "hi", "text": {"format": {"type": "grammar"}}})
    assert error.param == "text.format"


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt", {"id": "pmpt_1"})],
)
def test_features_the_bridge_cannot_honour_are_refused(field: str, value: Any) -> None:
    error = rejected({"input": "hi", field: value})
    assert error.param == field
    assert error.type == "invalid_request_error"


def test_the_callers_body_is_not_changed() -> None:
    body = {
        "model": "m",
        "instructions": "x",
        "input": [reasoning("r"), call("c1"), output("c1")],
        "tools": [CODEX_PATCH_TOOL],
        "text": {"format": {"type": "json_object"}},
    }
    before = copy.deepcopy(body)
    build_chat_request(body)
    assert body == before


# -- tools -----------------------------------------------------------------------------


def test_flat_function_tools_are_nested() -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {"type": "object", "properties": {}},
        "strict": True,
    }
    result = chat({"input": "hi", "tools": [tool]})
    assert result["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather.",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        }
    ]


def test_null_tool_fields_are_left_out() -> None:
    tool = {
        "type": "function",
        "name": "f",
        "description": None,
        "parameters": None,
        "strict": None,
    }
    assert chat({"input": "hi", "tools": [tool]})["tools"][0]["function"] == {"name": "f"}


def test_custom_tools_are_offered_as_a_one_string_argument_function() -> None:
    function = chat({"input": "hi", "tools": [CODEX_PATCH_TOOL]})["tools"][0]["function"]
    assert function["name"] == "apply_patch"
    assert function["parameters"] == custom_tool_parameters()
    assert function["parameters"] == {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
    }
    assert "Use the `apply_patch` tool to edit files." in function["description"]
    assert "lark grammar" in function["description"]
    assert CODEX_PATCH_TOOL["format"]["definition"] in function["description"]


def test_custom_tool_without_grammar() -> None:
    tool = {"type": "custom", "name": "note", "format": {"type": "text"}}
    function = chat({"input": "hi", "tools": [tool]})["tools"][0]["function"]
    assert "`input`" in function["description"]
    assert "grammar" not in function["description"]


@pytest.mark.parametrize(
    "kind",
    ["web_search", "file_search", "code_interpreter", "image_generation", "mcp", "tool_search"],
)
def test_hosted_tools_are_refused_by_default(kind: str) -> None:
    error = rejected({"input": "hi", "tools": [{"type": kind}]})
    assert error.param == "tools"
    assert repr(kind) in error.message


def test_hosted_tools_are_dropped_when_asked() -> None:
    tools = [
        {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
        CODEX_PATCH_TOOL,
        {"type": "tool_search", "execution": "client"},
        {"type": "web_search"},
    ]
    result = chat({"input": "hi", "tools": tools}, unsupported_tools="drop")
    assert [t["function"]["name"] for t in result["tools"]] == ["exec_command", "apply_patch"]


def test_without_servable_tools_tool_choice_and_parallel_tool_calls_are_left_out() -> None:
    body = {
        "input": "hi",
        "tools": [{"type": "web_search"}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    result = chat(body, unsupported_tools="drop")
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & result.keys()
    error = rejected({**body, "tool_choice": "required"}, unsupported_tools="drop")
    assert error.param == "tool_choice"


def test_tool_choice_strings_pass_and_named_choices_are_nested() -> None:
    tools = [{"type": "function", "name": "f"}, CODEX_PATCH_TOOL]
    for choice in ("none", "auto", "required"):
        assert chat({"input": "x", "tools": tools, "tool_choice": choice})["tool_choice"] == choice
    named = {"type": "function", "function": {"name": "f"}}
    choice_f = {"type": "function", "name": "f"}
    assert chat({"input": "x", "tools": tools, "tool_choice": choice_f})["tool_choice"] == named
    choice_c = {"type": "custom", "name": "apply_patch"}
    custom = chat({"input": "x", "tools": tools, "tool_choice": choice_c})["tool_choice"]
    assert custom == {"type": "function", "function": {"name": "apply_patch"}}


def test_allowed_tools_choice_is_nested() -> None:
    tools = [{"type": "function", "name": "f"}, {"type": "function", "name": "g"}]
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "g"}],
    }
    result = chat({"input": "x", "tools": tools, "tool_choice": choice})
    assert result["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "g"}}],
        },
    }


def test_tool_choice_forcing_a_hosted_tool_is_refused() -> None:
    tools = [{"type": "function", "name": "f"}, {"type": "web_search"}]
    error = rejected(
        {"input": "x", "tools": tools, "tool_choice": {"type": "web_search"}},
        unsupported_tools="drop",
    )
    assert error.param == "tool_choice"


def test_parallel_tool_calls_pass_with_tools() -> None:
    body = {
        "input": "x",
        "tools": [{"type": "function", "name": "f"}],
        "parallel_tool_calls": False,
    }
    assert chat(body)["parallel_tool_calls"] is False


# -- messages --------------------------------------------------------------------------


def test_easy_messages_without_type() -> None:
    result = messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert result == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_content_parts_map_to_chat_parts() -> None:
    content = [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://x/y.png", "detail": "high"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,AAA", "filename": "a.pdf"},
        {"type": "input_file", "file_id": "file-1"},
    ]
    result = messages([{"type": "message", "role": "user", "content": content}])
    assert result[0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,AAA", "filename": "a.pdf"},
        },
        {"type": "file", "file": {"file_id": "file-1"}},
    ]


def test_a_single_text_part_becomes_a_plain_string() -> None:
    content = [{"type": "input_text", "text": "only"}]
    assert messages([{"role": "user", "content": content}])[0]["content"] == "only"


def test_several_text_parts_stay_parts() -> None:
    content = [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
    assert messages([{"role": "user", "content": content}])[0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]


def test_unsupported_content_is_refused() -> None:
    image_by_id = [{"type": "input_image", "file_id": "file-1"}]
    assert rejected({"input": [{"role": "user", "content": image_by_id}]}).param == "input"
    image_in_system = [{"type": "input_image", "image_url": "https://x"}]
    assert rejected({"input": [{"role": "system", "content": image_in_system}]}).param == "input"
    assert rejected({"input": [{"role": "critic", "content": "x"}]}).param == "input"


def test_assistant_output_messages_become_string_content() -> None:
    item = assistant("Hello")
    item["content"].append({"type": "output_text", "text": " world", "annotations": []})
    assert messages([item]) == [{"role": "assistant", "content": "Hello world"}]


def test_assistant_refusal_parts_become_the_refusal_field() -> None:
    item = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "refusal", "refusal": "No."}],
    }
    assert messages([item]) == [{"role": "assistant", "content": None, "refusal": "No."}]


def test_consecutive_function_calls_become_one_assistant_message() -> None:
    result = messages(
        [
            {"role": "user", "content": "go"},
            call("c1", "f", '{"a":1}'),
            call("c2", "g", '{"b":2}'),
            output("c1", "one"),
            output("c2", "two"),
        ]
    )
    assert result[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"b":2}'}},
        ],
    }
    assert result[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


def test_calls_right_after_an_assistant_message_join_it() -> None:
    result = messages([assistant("Let me look."), call("c1"), output("c1")])
    assert result[0]["content"] == "Let me look."
    assert [c["id"] for c in result[0]["tool_calls"]] == ["c1"]
    assert len(result) == 2


def test_tool_output_text_parts_are_joined() -> None:
    parts = [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
    result = messages([call("c1"), output("c1", parts)])
    assert result[1] == {"role": "tool", "tool_call_id": "c1", "content": "a\nb"}


def test_image_parts_in_a_tool_output_are_refused() -> None:
    parts = [{"type": "input_image", "image_url": "data:image/png;base64,AAA"}]
    error = rejected({"input": [call("c1"), output("c1", parts)]})
    assert error.param == "input"
    assert "text only" in error.message


def test_custom_tool_calls_replay_as_function_calls_with_an_input_argument() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
    ctc = {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": patch}
    out = {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"}
    result = messages([{"role": "user", "content": "patch"}, ctc, out])
    tool_call = result[1]["tool_calls"][0]
    assert tool_call["function"]["name"] == "apply_patch"
    assert json.loads(tool_call["function"]["arguments"]) == {"input": patch}
    assert result[2] == {"role": "tool", "tool_call_id": "c1", "content": "Done!"}


def test_hosted_tool_items_are_refused_or_dropped() -> None:
    item = {"type": "web_search_call", "id": "ws_1", "status": "completed"}
    body = {"input": [{"role": "user", "content": "q"}, item]}
    assert rejected(body).param == "input"
    assert chat(body, unsupported_tools="drop")["messages"] == [{"role": "user", "content": "q"}]


def test_unknown_item_types_are_refused_even_when_dropping() -> None:
    body = {"input": [{"type": "item_reference", "id": "msg_1"}]}
    assert rejected(body, unsupported_tools="drop").param == "input"


def test_missing_required_fields_name_the_item() -> None:
    error = rejected({"input": [{"type": "function_call", "call_id": "c1"}, output("c1")]})
    assert error.message == "Missing required parameter: 'input[0].name'."
    assert error.code == "missing_required_parameter"


def test_codex_style_request_translates() -> None:
    body = {
        "model": "gpt-5.5",
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium"},
        "text": {"verbosity": "low"},
        "prompt_cache_key": "thread-1",
        "client_metadata": {"session_id": "s"},
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "parameters": {"type": "object"},
                "strict": False,
            },
            CODEX_PATCH_TOOL,
            {"type": "tool_search", "execution": "client"},
            {"type": "web_search"},
        ],
        "input": [
            {
                "type": "message",
                "role": "developer",
                "id": "msg_a",
                "content": [{"type": "input_text", "text": "sys"}],
            },
            {
                "type": "message",
                "role": "user",
                "id": "msg_b",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        ],
    }
    result = build_chat_request(body, unsupported_tools="drop")
    assert result["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]
    assert result["reasoning_effort"] == "medium"
    assert result["stream_options"] == {"include_usage": True}
    assert result["tool_choice"] == "auto"
    assert "store" not in result
    assert "client_metadata" not in result


# -- reasoning replay ------------------------------------------------------------------


def test_reasoning_goes_onto_the_next_assistant_message() -> None:
    result = messages([{"role": "user", "content": "q"}, reasoning("hmm"), assistant("A")])
    assert result[1] == {"role": "assistant", "content": "A", "reasoning_content": "hmm"}


def test_reasoning_goes_onto_a_tool_call_message_under_the_configured_field() -> None:
    result = messages([reasoning("plan"), call("c1"), output("c1")], reasoning_field="reasoning")
    assert result[0]["reasoning"] == "plan"
    assert result[0]["content"] is None


def test_reasoning_is_restored_from_our_encrypted_content() -> None:
    item = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [],
        "content": None,
        "encrypted_content": encode_reasoning("secretly plain"),
    }
    result = messages([item, call("c1"), output("c1")])
    assert result[0]["reasoning_content"] == "secretly plain"


def test_reasoning_falls_back_to_the_summary() -> None:
    item = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [
            {"type": "summary_text", "text": "first"},
            {"type": "summary_text", "text": "second"},
        ],
        "encrypted_content": "gAAAA-opaque-openai-blob",
    }
    result = messages([item, assistant("A")])
    assert result[0]["reasoning_content"] == "first\n\nsecond"


def test_reasoning_without_any_text_adds_nothing() -> None:
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"}
    assert messages([item, assistant("A")]) == [{"role": "assistant", "content": "A"}]


def test_a_user_message_discards_pending_reasoning() -> None:
    result = messages([reasoning("stale"), {"role": "user", "content": "q"}, assistant("A")])
    assert result[1] == {"role": "assistant", "content": "A"}


def test_recovered_reasoning_fills_tool_call_messages_without_reasoning() -> None:
    result = messages(
        [call("c1"), output("c1"), reasoning("own"), call("c2"), output("c2")],
        recovered_reasoning={"c1": "recovered", "c2": "not used"},
    )
    assert result[0]["reasoning_content"] == "recovered"
    assert result[2]["reasoning_content"] == "own"


# -- tool pairing ----------------------------------------------------------------------


def test_an_output_without_its_call_is_refused() -> None:
    error = rejected({"input": [{"role": "user", "content": "q"}, output("call_X")]})
    assert error.message == "No tool call found for function call output with call_id call_X."
    assert error.param == "input"
    assert error.code is None


def test_an_output_before_its_call_is_refused() -> None:
    error = rejected({"input": [output("c1"), call("c1")]})
    assert error.message == "No tool call found for function call output with call_id c1."


def test_a_call_without_an_output_is_refused() -> None:
    error = rejected({"input": [{"role": "user", "content": "q"}, call("call_Y")]})
    assert error.message == "No tool output found for function call call_Y."
    assert error.param == "input"


def test_custom_calls_are_paired_too() -> None:
    ctc = {"type": "custom_tool_call", "call_id": "c9", "name": "apply_patch", "input": "x"}
    assert rejected({"input": [ctc]}).message == "No tool output found for function call c9."
    orphan = {"type": "custom_tool_call_output", "call_id": "c8", "output": "x"}
    error = rejected({"input": [orphan]})
    assert error.message == "No tool call found for function call output with call_id c8."


def test_pairing_reports_orphan_outputs_before_unanswered_calls() -> None:
    error = rejected({"input": [call("c1"), output("c2"), output("c3")]})
    assert error.message == "No tool call found for function call output with call_id c2."
