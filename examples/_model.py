"""A tiny stateless "model" shared by the framework examples.

It shouts back the last user message and says how many input items it was given, so
``[3 items] HOW ARE YOU?`` proves that the previous turn (a user message and an
assistant message) was replayed into ``input`` by the middleware. It knows nothing
about ``previous_response_id``: that is the whole point of the examples.

``response_for(request)`` gives the finished response object for a JSON reply,
``events_for(request)`` the Responses events for a streamed one, and ``sse_stream``
frames those events as server-sent events for a framework's streaming response.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["events_for", "response_for", "sse_stream"]

MODEL = "shouting-parrot-1"


def _text_of(content: Any) -> str:
    """The text of a message content: a string or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _reply_text(request: dict[str, Any]) -> str:
    items = request.get("input", [])
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    last_user = next(
        (item for item in reversed(items) if item.get("role") == "user"),
        {"content": ""},
    )
    return f"[{len(items)} items] {_text_of(last_user['content']).upper()}"


def _response(request: dict[str, Any], status: str, output: list[Any]) -> dict[str, Any]:
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": request.get("model") or MODEL,
        "output": output,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "metadata": request.get("metadata") or {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "usage": None,
    }


def _message(text: str) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def response_for(request: dict[str, Any]) -> dict[str, Any]:
    """The completed response object answering ``request``."""
    return _response(request, "completed", [_message(_reply_text(request))])


def events_for(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every event of a streamed answer to ``request``, one text delta per word."""
    final = response_for(request)
    message = final["output"][0]
    text = message["content"][0]["text"]
    started = {**final, "status": "in_progress", "output": []}
    where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    words = text.split(" ")
    deltas = [word + " " for word in words[:-1]] + words[-1:]
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**message, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            **where,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        *({"type": "response.output_text.delta", **where, "delta": d} for d in deltas),
        {"type": "response.output_text.done", **where, "text": text},
        {"type": "response.content_part.done", **where, "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": final},
    ]
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


async def sse_stream(request: dict[str, Any]) -> AsyncIterator[bytes]:
    """The events of ``events_for(request)`` as server-sent event frames."""
    for event in events_for(request):
        data = json.dumps(event, separators=(",", ":"))
        yield f"event: {event['type']}\ndata: {data}\n\n".encode()
