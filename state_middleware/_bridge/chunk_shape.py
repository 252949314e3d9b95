"""Where a text-only Chat chunk keeps its text, so later chunks of its shape skip decoding.

Token streams repeat one chunk shape with only the text changing. ``single_text`` says
whether a decoded chunk is just one text delta; ``text_hole`` finds that text in the
chunk's bytes and proves, with a probe, that another string in the same place changes
nothing but the text. ``ChatStreamTranslator.repeat`` then matches later frames against
the bytes around the hole.
"""

from __future__ import annotations

import msgspec

from .stream_parts import ChatChunk, decode_chunk

__all__ = ["single_text", "text_hole"]

_encode = msgspec.json.Encoder().encode
_PROBE_TEXT = "\x00"
_PROBE = _encode(_PROBE_TEXT)


def single_text(chunk: ChatChunk) -> tuple[str, str] | None:
    """``(part type, text)`` when all the translator makes of the chunk is one text
    delta: one unfinished choice 0 whose delta has either content or reasoning text,
    nothing else that counts, and no usage or error."""
    if chunk.error is not None or chunk.usage is not None or not chunk.choices:
        return None
    if len(chunk.choices) != 1:
        return None
    choice = chunk.choices[0]
    delta = choice.delta
    if choice.index != 0 or choice.finish_reason is not None or delta is None:
        return None
    if delta.refusal or delta.tool_calls:
        return None
    thought = delta.reasoning_content or delta.reasoning
    if isinstance(thought, str) and thought:
        return None if delta.content else ("reasoning_text", thought)
    return ("output_text", delta.content) if delta.content else None


def text_hole(data: bytes, part_type: str, text: str) -> tuple[bytes, bytes] | None:
    """The bytes of ``data`` (a chunk whose ``single_text`` is ``(part_type, text)``)
    before and after the JSON string of its text, or ``None`` when the text is not
    written there exactly once or another string there would change more than the text.
    """
    if b"\n" in data or b"\r" in data or text == _PROBE_TEXT:
        return None
    quoted = _encode(text)
    at = data.find(quoted)
    if at < 0 or data.find(quoted, at + 1) >= 0:
        return None  # written another way, or not only there
    head, tail = data[:at], data[at + len(quoted) :]
    try:
        probe = single_text(decode_chunk(head + _PROBE + tail))
    except msgspec.DecodeError:
        return None
    return (head, tail) if probe == (part_type, _PROBE_TEXT) else None
