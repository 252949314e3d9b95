"""A finished Responses object -> the event stream a live turn would have sent for it.

Some chat servers ignore ``stream: true`` and answer with one whole ``chat.completion``.
A client that asked the bridge for a stream must still get one: the completion is
translated as usual (:func:`~.response.chat_completion_to_response`), then
replayed here as the events :mod:`.stream` sends for a live stream, in the same
order and shapes, each text in a single delta. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._sse import format_frame
from .stream_parts import content_part

__all__ = ["replay_events"]

_encode = msgspec.json.Encoder().encode

_PART_EVENTS = {  # part type -> (delta event, done event, the done event's text field)
    "output_text": ("response.output_text.delta", "response.output_text.done", "text"),
    "refusal": ("response.refusal.delta", "response.refusal.done", "refusal"),
    "reasoning_text": ("response.reasoning_text.delta", "response.reasoning_text.done", "text"),
}

_CALL_EVENTS = {  # call type -> (delta event, done event, the field holding the text)
    "function_call": (
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "arguments",
    ),
    "custom_tool_call": (
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "input",
    ),
}


class _Events:
    """Frames with ``sequence_number`` counting from 0."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def add(self, payload: dict[str, Any]) -> None:
        payload["sequence_number"] = len(self.frames)
        self.frames.append(format_frame(payload["type"], _encode(payload)))


def replay_events(base: Mapping[str, Any], response: Mapping[str, Any]) -> bytes:
    """The whole event stream, ``response.created`` to the terminal event, of a turn
    whose ``in_progress`` object is ``base`` and whose finished object is ``response``."""
    events = _Events()
    events.add({"type": "response.created", "response": base})
    events.add({"type": "response.in_progress", "response": base})
    for index, item in enumerate(response.get("output") or ()):
        _replay_item(events, index, item)
    kind = "response.incomplete" if response.get("status") == "incomplete" else "response.completed"
    events.add({"type": kind, "response": response})
    return b"".join(events.frames)


def _replay_item(events: _Events, index: int, item: Mapping[str, Any]) -> None:
    ids = {"item_id": item["id"], "output_index": index}
    kind = item["type"]
    if kind in _CALL_EVENTS:
        delta_event, done_event, field = _CALL_EVENTS[kind]
        text = item[field]
        events.add(_added(index, {**item, "status": "in_progress", field: ""}))
        if text:
            events.add({"type": delta_event, **ids, "delta": text})
        events.add({"type": done_event, **ids, field: text})
    else:
        opened = {**item, "content": []}
        if kind == "message":
            opened["status"] = "in_progress"
        else:  # reasoning: the live stream opens it bare, without encrypted_content
            opened = {"id": item["id"], "type": "reasoning", "summary": [], "content": []}
        events.add(_added(index, opened))
        for content_index, part in enumerate(item.get("content") or ()):
            _replay_part(events, {**ids, "content_index": content_index}, part)
    events.add({"type": "response.output_item.done", "output_index": index, "item": item})


def _added(index: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def _replay_part(events: _Events, ids: dict[str, Any], part: Mapping[str, Any]) -> None:
    part_type = part["type"]
    delta_event, done_event, field = _PART_EVENTS[part_type]
    text = part[field]
    logprobs: dict[str, Any] = {"logprobs": []} if part_type == "output_text" else {}
    added = content_part(part_type, "")
    events.add({"type": "response.content_part.added", **ids, "part": added})
    events.add({"type": delta_event, **ids, "delta": text, **logprobs})
    events.add({"type": done_event, **ids, field: text, **logprobs})
    events.add({"type": "response.content_part.done", **ids, "part": part})
