"""Where a text-only Chat chunk keeps its text, so later chunks of its shape skip decoding.

Token streams repeat one chunk shape with only the text changing. ``single_text`` says
whether a decoded chunk is just one text delta; ``text_hole`` finds that text in the
chunk's bytes and proves, with a probe, that another string in the same place changes
nothing but the text. ``repeat.RepeatedChunks`` then matches later frames against the
bytes around the hole.

Many servers (``transformers serve``, llama.cpp) also stamp every chunk with the second
it was written in, so ``created`` changes while the shape does not: ``clock_hole`` finds
its digits around the text hole, for ``RepeatedChunks`` to take any other number of as
many digits there.
"""

from __future__ import annotations

import msgspec

from .stream_parts import ChatChunk, decode_chunk

__all__ = ["clock_digits", "clock_hole", "single_text", "text_hole"]

_encode = msgspec.json.Encoder().encode
_PROBE_TEXT = "\x00"
_PROBE = _encode(_PROBE_TEXT)
_CREATED = b'"created":'


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


def clock_digits(digits: bytes, size: int) -> bool:
    """Whether ``digits`` may stand where a ``clock_hole`` of ``size`` digits was: as many
    ASCII digits, and no leading zero (which JSON forbids) unless there is only one."""
    return len(digits) == size and digits.isdigit() and (size == 1 or digits[:1] != b"0")


def clock_hole(head: bytes, tail: bytes, part_type: str) -> tuple[bool, int, int] | None:
    """Where the digits of the chunk's ``created`` are, around the text hole ``head`` and
    ``tail`` of ``text_hole``: ``(in the head, offset in that part, digit count)``, or
    ``None`` when there is no such number, or more than one, or a probe shows that
    other digits there would change the chunk.

    In valid JSON ``"created":`` can only be a key (a quote inside a string is escaped),
    and no field the translator reads is called that; the probe still proves it.
    """
    if head.count(_CREATED) + tail.count(_CREATED) != 1:
        return None
    in_head = _CREATED in head
    part = head if in_head else tail
    at = part.find(_CREATED) + len(_CREATED)
    while part[at : at + 1] == b" ":
        at += 1
    end = at
    while part[end : end + 1].isdigit():
        end += 1
    size = end - at
    if not clock_digits(part[at:end], size):
        return None
    other = b"1" * size if part[at:end] != b"1" * size else b"2" * size
    moved = part[:at] + other + part[end:]
    probe_head, probe_tail = (moved, tail) if in_head else (head, moved)
    try:
        probe = single_text(decode_chunk(probe_head + _PROBE + probe_tail))
    except msgspec.DecodeError:
        return None
    return (in_head, at, size) if probe == (part_type, _PROBE_TEXT) else None
