"""The pieces the stream translator works with.

Typed msgspec views of the incoming Chat Completions chunks (only the fields the bridge
reads; unknown fields are ignored), :class:`StreamedItem`, the accumulator of one
outgoing Responses output item while its deltas stream, and the template of its delta
frames.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .reasoning import reasoning_item
from .response import tool_call_item

__all__ = [
    "ChatChoice",
    "ChatChunk",
    "ChatDelta",
    "FunctionDelta",
    "StreamedItem",
    "ToolCallDelta",
    "content_part",
    "decode_chunk",
    "delta_format",
]


class FunctionDelta(msgspec.Struct):
    """``tool_calls[].function`` of a delta: a name and/or an arguments fragment."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    """One ``delta.tool_calls[]`` fragment; ``index`` says which call it continues."""

    index: int | None = None
    id: str | None = None
    function: FunctionDelta | None = None


class ChatDelta(msgspec.Struct):
    """``choices[].delta``; the reasoning fields are non-standard and loosely typed."""

    content: str | None = None
    refusal: str | None = None
    reasoning_content: Any = None
    reasoning: Any = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChoice(msgspec.Struct):
    """One entry of ``choices``."""

    index: int = 0
    delta: ChatDelta | None = None
    finish_reason: str | None = None


class ChatChunk(msgspec.Struct):
    """A ``chat.completion.chunk``, or an error payload sent in its place."""

    choices: list[ChatChoice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


decode_chunk = msgspec.json.Decoder(ChatChunk).decode
_encode = msgspec.json.Encoder().encode

_DELTA_EVENTS = {
    "output_text": "response.output_text.delta",
    "refusal": "response.refusal.delta",
    "reasoning_text": "response.reasoning_text.delta",
}


def content_part(part_type: str, text: str) -> dict[str, Any]:
    """A content part of the given type holding ``text``."""
    if part_type == "refusal":
        return {"type": "refusal", "refusal": text}
    if part_type == "reasoning_text":
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def delta_format(state: StreamedItem, part_type: str) -> bytes:
    """The delta frame of the item's last part as a ``%`` format with two holes: the
    JSON string of the delta and the sequence number."""
    kind = _DELTA_EVENTS[part_type].encode()
    head = (
        b"event: "
        + kind
        + b'\ndata: {"type":"'
        + kind
        + b'","item_id":'
        + _encode(state.item_id)
        + b',"output_index":'
        + str(state.output_index).encode()
        + b',"content_index":'
        + str(len(state.parts) - 1).encode()
    )
    logprobs = b',"logprobs":[]' if part_type == "output_text" else b""
    return head.replace(b"%", b"%%") + b',"delta":%s' + logprobs + b',"sequence_number":%d}\n\n'


class StreamedItem:
    """An output item being streamed: its id, position and accumulated text pieces."""

    __slots__ = ("call_id", "custom", "item_id", "kind", "name", "output_index", "parts")

    def __init__(self, kind: str, item_id: str, output_index: int) -> None:
        self.kind = kind  # "reasoning", "message" or "call"
        self.item_id = item_id
        self.output_index = output_index
        self.parts: list[tuple[str, list[str]]] = []  # (part type, text pieces)
        self.name = ""
        self.call_id = ""
        self.custom = False

    def text(self, part: int = -1) -> str:
        return "".join(self.parts[part][1]) if self.parts else ""

    def ids(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "output_index": self.output_index}

    def final(self, status: str) -> dict[str, Any]:
        """The finished output item (also what a failed response reports for it)."""
        if self.kind == "reasoning":
            return reasoning_item(self.text(), item_id=self.item_id)
        if self.kind == "message":
            content = [content_part(kind, "".join(pieces)) for kind, pieces in self.parts]
            return {
                "id": self.item_id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": content,
            }
        return tool_call_item(
            self.call_id,
            self.name,
            self.text(0),
            custom=self.custom,
            status=status,
            item_id=self.item_id,
        )
