"""A Responses create request -> the equivalent Chat Completions request.

:func:`build_chat_request` is pure and loop-free. It receives the request the core has
already expanded (full ``input`` list, no ``previous_response_id``) and returns a new
dict; the caller's dict is never changed. Field by field:

* ``model``, ``temperature``, ``top_p``, ``metadata``, ``user``, ``safety_identifier``,
  ``prompt_cache_key``, ``seed``, ``stop``: copied when not null; ``parallel_tool_calls``
  copied when there are tools.
* ``instructions`` + ``input`` -> ``messages`` (see :mod:`.messages`).
* ``tools``: flat ``function`` tools -> the nested ``{"type": "function", "function":
  {name, description, parameters, strict}}``; ``custom`` tools (Codex's ``apply_patch``)
  -> a function taking one string argument ``input``, whose description carries the
  tool's description and grammar (the response side turns calls of it back into
  ``custom_tool_call`` items). ``tool_choice`` follows: ``{"type": "function"|"custom",
  "name"}`` -> ``{"type": "function", "function": {"name"}}``, ``allowed_tools`` ->
  ``{"type": "allowed_tools", "allowed_tools": {mode, tools}}``. With no tool left,
  ``tool_choice`` and ``parallel_tool_calls`` are left out (servers refuse them alone).
* ``text.format`` json_schema / json_object -> ``response_format`` (nested json_schema).
* ``max_output_tokens`` -> ``max_tokens_field``: ``max_completion_tokens`` by default
  (the current OpenAI name; ``max_tokens`` is deprecated and refused by o-series models),
  or ``max_tokens`` for servers that only know the old name.
* ``reasoning.effort`` -> ``reasoning_effort``.
* ``stream: true`` -> ``stream: true`` + ``stream_options: {"include_usage": true}`` so
  that usage reaches ``response.completed``.
* Dropped because they are harmless without a Responses server: ``store`` (it means
  something else in Chat), ``include``, ``truncation``, ``client_metadata``,
  ``service_tier``, ``prompt_cache_retention``, ``stream_options``, ``background: false``,
  ``background_options``, ``max_tool_calls``, ``top_logprobs``, ``context_management``,
  ``prompt_cache_options``, ``moderation``, ``text.verbosity``, ``reasoning.summary``.
* Refused with a 400 naming the ``param``: ``prompt`` (stored prompt templates), other
  ``text.format`` types, malformed fields. (``background`` is the middleware's: the
  bridge never sees it.)
* Any other field is forwarded unchanged, so server extensions (``top_k``,
  ``chat_template_kwargs``, ...) keep working.

Hosted tools (every tool type except ``function`` and ``custom``: ``web_search``,
``file_search``, ``mcp``, ``tool_search``, ...) have no Chat equivalent. With
``unsupported_tools="reject"`` (the default) they are a 400 with ``param: "tools"``,
never a silent drop. ``unsupported_tools="drop"`` removes them (and any hosted-tool
items in the history) instead: Codex CLI sends ``web_search`` and ``tool_search`` in
every request, so serving Codex through the bridge needs ``"drop"``. A ``tool_choice``
that forces a hosted tool is always a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import ApiError
from .messages import build_messages

__all__ = [
    "MAX_TOKENS_FIELDS",
    "UNSUPPORTED_TOOL_POLICIES",
    "build_chat_request",
    "custom_tool_parameters",
]

MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")
UNSUPPORTED_TOOL_POLICIES = ("reject", "drop")

_COPIED = (
    "temperature",
    "top_p",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "seed",
    "stop",
)
_DROPPED = frozenset(
    {
        "store",
        "include",
        "truncation",
        "client_metadata",
        "service_tier",
        "prompt_cache_retention",
        "stream_options",
        "background_options",
        "max_tool_calls",
        "top_logprobs",
        "context_management",
        "prompt_cache_options",
        "moderation",
        "previous_response_id",
    }
)
_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "stream",
        "background",
        "conversation",
        "prompt",
        *_COPIED,
    }
)
_TOOL_KINDS = frozenset({"function", "custom"})


def custom_tool_parameters() -> dict[str, Any]:
    """The JSON schema a custom tool is offered with: one required string ``input``."""
    return {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
    }


def _invalid(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param)


def _unsupported_tool(kind: object) -> ApiError:
    return _invalid(
        f"Tool type {kind!r} is not supported by the Chat Completions bridge; "
        "only function and custom tools can be served.",
        "tools",
    )


def _custom_description(tool: Mapping[str, Any]) -> str:
    parts: list[str] = []
    if isinstance(tool.get("description"), str) and tool["description"]:
        parts.append(tool["description"])
    parts.append("Pass the tool's whole freeform input as the string argument `input`.")
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and fmt.get("definition"):
        syntax = fmt.get("syntax") or "formal"
        parts.append(f"The input must follow this {syntax} grammar:\n{fmt['definition']}")
    return "\n\n".join(parts)


def _chat_tool(tool: Mapping[str, Any], index: int) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"Missing required parameter: 'tools[{index}].name'.", "tools")
    if tool["type"] == "custom":
        function = {
            "name": name,
            "description": _custom_description(tool),
            "parameters": custom_tool_parameters(),
        }
        return {"type": "function", "function": function}
    function = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _map_tools(tools: Any, drop_unsupported: bool) -> list[dict[str, Any]]:
    """Responses tools -> Chat tools (function and custom only)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array.", "tools")
    mapped: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind in _TOOL_KINDS:
            mapped.append(_chat_tool(tool, index))
        elif not (drop_unsupported and isinstance(kind, str)):
            raise _unsupported_tool(kind)
    return mapped


def _named_choice(choice: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(choice.get("name"), str):
        raise _invalid("Missing required parameter: 'tool_choice.name'.", "tool_choice")
    return {"type": "function", "function": {"name": choice["name"]}}


def _allowed_tools(choice: Mapping[str, Any], drop_unsupported: bool) -> dict[str, Any]:
    refs = choice.get("tools")
    if not isinstance(refs, list):
        raise _invalid("Missing required parameter: 'tool_choice.tools'.", "tool_choice")
    tools: list[dict[str, Any]] = []
    for ref in refs:
        kind = ref.get("type") if isinstance(ref, dict) else None
        if kind in _TOOL_KINDS:
            tools.append(_named_choice(ref))
        elif not (drop_unsupported and isinstance(kind, str)):
            raise _invalid(f"Tool type {kind!r} cannot be allowed by the bridge.", "tool_choice")
    allowed = {"mode": choice.get("mode", "auto"), "tools": tools}
    return {"type": "allowed_tools", "allowed_tools": allowed}


def _map_tool_choice(choice: Any, drop_unsupported: bool) -> Any:
    """Responses ``tool_choice`` -> Chat ``tool_choice``."""
    if isinstance(choice, str):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in _TOOL_KINDS:
        return _named_choice(choice)
    if kind == "allowed_tools":
        return _allowed_tools(choice, drop_unsupported)
    raise _invalid(
        f"tool_choice {kind!r} cannot be honoured by the Chat Completions bridge.", "tool_choice"
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` -> ``response_format`` (``None`` for plain text)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _invalid("'text' must be an object.", "text")
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt, dict):
        schema = {k: v for k, v in fmt.items() if k != "type" and v is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise _invalid(f"text.format type {kind!r} is not supported by the bridge.", "text.format")


def _reasoning_effort(reasoning: Any) -> Any:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise _invalid("'reasoning' must be an object.", "reasoning")
    return reasoning.get("effort")


def _refuse_unservable(body: Mapping[str, Any]) -> None:
    if body.get("prompt") is not None:
        raise _invalid("Stored prompts are not supported by the bridge.", "prompt")


def _check_options(max_tokens_field: str, unsupported_tools: str) -> None:
    if max_tokens_field not in MAX_TOKENS_FIELDS:
        raise ValueError(f"max_tokens_field must be one of {MAX_TOKENS_FIELDS}")
    if unsupported_tools not in UNSUPPORTED_TOOL_POLICIES:
        raise ValueError(f"unsupported_tools must be one of {UNSUPPORTED_TOOL_POLICIES}")


def _add_tools(chat: dict[str, Any], body: Mapping[str, Any], drop: bool) -> None:
    tools = _map_tools(body.get("tools"), drop)
    choice = body.get("tool_choice")
    if tools:
        chat["tools"] = tools
        if choice is not None:
            chat["tool_choice"] = _map_tool_choice(choice, drop)
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif choice not in (None, "none", "auto"):
        raise _invalid("tool_choice needs a tool the bridge can serve.", "tool_choice")


def build_chat_request(
    body: dict[str, Any],
    *,
    system_role: str = "system",
    reasoning_field: str = "reasoning_content",
    max_tokens_field: str = "max_completion_tokens",
    unsupported_tools: str = "reject",
    recovered_reasoning: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Chat Completions request for an expanded Responses request.

    Raises :class:`ApiError` (400, with ``param``) for anything the bridge cannot
    honour, and ``ValueError`` for an invalid ``max_tokens_field`` or
    ``unsupported_tools``. ``recovered_reasoning`` maps call ids to reasoning text the
    core found in stored turns, for tool calls whose reasoning item the client dropped.
    """
    _check_options(max_tokens_field, unsupported_tools)
    _refuse_unservable(body)
    drop = unsupported_tools == "drop"
    chat: dict[str, Any] = {}
    if "model" in body:
        chat["model"] = body["model"]
    chat["messages"] = build_messages(
        body.get("instructions"),
        body.get("input"),
        system_role=system_role,
        reasoning_field=reasoning_field,
        recovered_reasoning=recovered_reasoning,
        drop_hosted_items=drop,
    )
    _add_tools(chat, body, drop)
    for key in _COPIED:
        if body.get(key) is not None:
            chat[key] = body[key]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = _reasoning_effort(body.get("reasoning"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    if body.get("max_output_tokens") is not None:
        chat[max_tokens_field] = body["max_output_tokens"]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for key, value in body.items():
        if key not in _HANDLED and key not in _DROPPED:
            chat[key] = value
    return chat
