"""Chat Completions results -> Responses objects: output items, usage.

The ``in_progress`` response object of a request is the core's
:func:`~.._skeleton.response_skeleton` (the client's parameters with OpenAI's defaults).
:func:`chat_completion_to_response` fills it from a whole ``chat.completion``; the
streaming translator uses the same helpers, so both paths give identical objects.

Mapping rules for one Chat choice (only ``choices[0]`` is used):

* ``message.reasoning_content`` or ``message.reasoning`` -> a ``reasoning`` item first
  (see :mod:`.reasoning`).
* ``content`` -> a ``message`` item (``msg_`` id) with one ``output_text`` part
  (``annotations``: the Chat ``url_citation`` annotations flattened; ``logprobs: []``);
  ``refusal`` -> a ``refusal`` part of the same message.
* Each ``tool_calls[]`` entry -> a ``function_call`` item (``fc_`` id, ``call_id`` = the
  Chat tool call id), or, when the name is a ``custom`` tool of the request, a
  ``custom_tool_call`` item (``ctc_`` id) whose ``input`` is the ``input`` argument.
* ``finish_reason`` ``length`` -> ``status: "incomplete"``, reason ``max_output_tokens``;
  ``content_filter`` -> reason ``content_filter`` (the items are then ``incomplete``
  too); anything else -> ``completed`` with ``completed_at`` set.
* ``usage``: ``prompt_tokens`` -> ``input_tokens``, ``completion_tokens`` ->
  ``output_tokens``, ``prompt_tokens_details.cached_tokens`` / ``cache_write_tokens`` ->
  ``input_tokens_details.cached_tokens`` / ``cache_write_tokens`` (0 when absent),
  ``completion_tokens_details.reasoning_tokens`` -> ``output_tokens_details.reasoning_tokens``.

The response ``model`` stays the requested model (servers report arbitrary names).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from .._errors import ApiError
from .reasoning import new_item_id, reasoning_item

__all__ = [
    "chat_completion_to_response",
    "custom_tool_input",
    "custom_tool_names",
    "failed_response",
    "finished_response",
    "incomplete_reason",
    "map_usage",
    "output_items",
    "tool_call_item",
]

_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
_decoder = msgspec.json.Decoder()


def custom_tool_names(tools: Any) -> frozenset[str]:
    """Names of the ``custom`` tools in a Responses ``tools`` list."""
    if not isinstance(tools, list):
        return frozenset()
    return frozenset(
        tool["name"]
        for tool in tools
        if isinstance(tool, dict)
        and tool.get("type") == "custom"
        and isinstance(tool.get("name"), str)
    )


def custom_tool_input(arguments: str) -> str:
    """The freeform input of a custom tool called through its one-argument function.

    ``{"input": "..."}`` gives the string; a bare JSON string is accepted too; anything
    else (a model that ignored the schema) is passed on as the raw arguments text.
    """
    try:
        decoded = _decoder.decode(arguments)
    except msgspec.DecodeError:
        return arguments
    if isinstance(decoded, dict) and isinstance(decoded.get("input"), str):
        return str(decoded["input"])
    return decoded if isinstance(decoded, str) else arguments


def tool_call_item(
    call_id: str,
    name: str,
    arguments: str,
    *,
    custom: bool,
    status: str,
    item_id: str | None = None,
) -> dict[str, Any]:
    """A finished ``function_call`` or ``custom_tool_call`` output item."""
    if custom:
        return {
            "type": "custom_tool_call",
            "id": item_id or new_item_id("ctc"),
            "call_id": call_id,
            "name": name,
            "input": custom_tool_input(arguments),
            "status": status,
        }
    return {
        "type": "function_call",
        "id": item_id or new_item_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def map_usage(usage: Any) -> dict[str, Any] | None:
    """Chat ``usage`` -> Responses ``usage`` (``None`` when the upstream sent none)."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    input_tokens = _int(usage.get("prompt_tokens"))
    output_tokens = _int(usage.get("completion_tokens"))
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": _int(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _int(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": _int(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": _int(usage.get("total_tokens")) or input_tokens + output_tokens,
    }


def incomplete_reason(finish_reason: Any) -> str | None:
    """``incomplete_details.reason`` for a Chat ``finish_reason`` (``None``: completed)."""
    return _INCOMPLETE_REASONS.get(finish_reason) if isinstance(finish_reason, str) else None


def finished_response(
    base: Mapping[str, Any],
    *,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    reason: str | None,
    now: int | None = None,
) -> dict[str, Any]:
    """The terminal response: ``completed``, or ``incomplete`` when ``reason`` is set."""
    response = dict(base)
    response["status"] = "incomplete" if reason else "completed"
    response["completed_at"] = None if reason else (int(time.time()) if now is None else now)
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["output"] = output
    response["usage"] = usage
    return response


def failed_response(
    base: Mapping[str, Any],
    *,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    code: str,
    message: str,
) -> dict[str, Any]:
    """The terminal response of a stream that failed: ``status: "failed"`` + ``error``."""
    response = dict(base)
    response["status"] = "failed"
    response["error"] = {"code": code, "message": message}
    response["output"] = output
    response["usage"] = usage
    return response


def _chat_reasoning(message: Mapping[str, Any]) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _annotations(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for annotation in message.get("annotations") or []:
        if isinstance(annotation, dict) and annotation.get("type") == "url_citation":
            citation = annotation.get("url_citation") or {}
            found.append({"type": "url_citation", **citation})
    return found


def _message_item(message: Mapping[str, Any], status: str) -> dict[str, Any] | None:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    refusal = message.get("refusal")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        annotations = _annotations(message)
        parts.append(
            {"type": "output_text", "text": content, "annotations": annotations, "logprobs": []}
        )
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if not parts:
        return None
    item_id = new_item_id("msg")
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def output_items(
    message: Mapping[str, Any], *, custom_names: frozenset[str], status: str
) -> list[dict[str, Any]]:
    """The Responses output items of one Chat assistant message, in output order.

    ``status`` is that of the items the answer ended in: the tool calls if any, else the
    message (text before tool calls was finished before they began, as in a stream).
    """
    items: list[dict[str, Any]] = []
    thought = _chat_reasoning(message)
    if thought:
        items.append(reasoning_item(thought))
    calls = [call for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    text_item = _message_item(message, "completed" if calls else status)
    if text_item is not None:
        items.append(text_item)
    for call in calls:
        function = call.get("function") or {}
        name = function.get("name") or ""
        call_id = call.get("id") or new_item_id("call")
        arguments = function.get("arguments") or ""
        custom = name in custom_names
        items.append(tool_call_item(call_id, name, arguments, custom=custom, status=status))
    return items


def chat_completion_to_response(
    chat: Mapping[str, Any], *, base: Mapping[str, Any], now: int | None = None
) -> dict[str, Any]:
    """A whole ``chat.completion`` -> the finished Responses object built on ``base``.

    ``base`` is :func:`response_skeleton` of the client's request; its ``tools`` tell
    which tool calls are custom. Raises :class:`ApiError` (502) when the upstream
    answer has no choice to translate.
    """
    choices = chat.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ApiError(502, "The upstream chat completion has no choices.", code="server_error")
    choice = choices[0]
    message = choice.get("message")
    reason = incomplete_reason(choice.get("finish_reason"))
    output = output_items(
        message if isinstance(message, dict) else {},
        custom_names=custom_tool_names(base.get("tools")),
        status="incomplete" if reason else "completed",
    )
    usage = map_usage(chat.get("usage"))
    return finished_response(base, output=output, usage=usage, reason=reason, now=now)
