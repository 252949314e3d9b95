"""The response object of a request before the app has answered: every field the
client set echoed, OpenAI's defaults for the others, in the field order of real
payloads. The chat bridge starts its translated replies from it; background turns
answer ``queued`` with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["response_skeleton"]


def response_skeleton(
    request_body: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    previous_response_id: str | None,
    store: bool,
) -> dict[str, Any]:
    """The ``in_progress`` response object for a request, before any output.

    Echoes the client's own parameters (not the expanded ones), with OpenAI's defaults
    for those it left out, in the field order of real payloads.
    """
    body = request_body
    reasoning = _object(body.get("reasoning"))
    text = _object(body.get("text"))
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": bool(body.get("background")),
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body.get("model"),
        "output": [],
        "parallel_tool_calls": _default(body.get("parallel_tool_calls"), True),
        "previous_response_id": previous_response_id,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "prompt_cache_retention": body.get("prompt_cache_retention"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": _default(body.get("service_tier"), "default"),
        "store": store,
        "temperature": _default(body.get("temperature"), 1.0),
        "text": {
            "format": _default(text.get("format"), {"type": "text"}),
            "verbosity": _default(text.get("verbosity"), "medium"),
        },
        "tool_choice": _default(body.get("tool_choice"), "auto"),
        "tools": _default(body.get("tools"), []),
        "top_logprobs": _default(body.get("top_logprobs"), 0),
        "top_p": _default(body.get("top_p"), 1.0),
        "truncation": _default(body.get("truncation"), "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": _default(body.get("metadata"), {}),
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value
