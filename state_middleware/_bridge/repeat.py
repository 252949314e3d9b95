"""The stream translator's fast path: chunks that repeat the last one's shape, unread.

Token streams repeat one chunk shape with only the text changing. Once the translator has
decoded a chunk that only carries text, :meth:`RepeatedChunks.learn` keeps that chunk's
frame as a template: the bytes before and after its text (``chunk_shape.text_hole``). A
later frame with the same bytes around one valid, non-empty JSON string is the same chunk
with that text, and the JSON string goes out as the delta as it is, in the delta frame the
translator already made for that text part. Other digits in the place of its ``created``
number (``chunk_shape.clock_hole``) are the same chunk written in another second: the
template takes them on.

The translator owns one :class:`RepeatedChunks` (its ``repeated``) and offers its bound
``repeat`` and ``repeat_frames`` as its own. They run once per streamed token, so nothing
is put around them, and the bridge calls them on ``repeated`` directly (an attribute and
a method cost less than a bound method kept on the translator). The translator and the
fast path share the stream's sequence numbers through one counter.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from .chunk_shape import clock_digits, clock_hole, text_hole

__all__ = ["RepeatedChunks"]

_decode_text = msgspec.json.Decoder(str).decode

#: the framings of a lone ``data:`` line a template may keep: ``(before, after)`` the data
_FRAMINGS = frozenset(
    {(b"data: ", b"\n\n"), (b"data:", b"\n\n"), (b"data: ", b"\r\n\r\n"), (b"data:", b"\r\n\r\n")}
)


class RepeatedChunks:
    """The last text-only chunk as a frame with a hole where its text was, and the delta
    frames for the frames that fill the hole with other text.

    ``sequence`` gives the stream's ``sequence_number`` values (the translator's
    counter). Nothing repeats until :meth:`learn`, nor once ``head`` is emptied.
    """

    def __init__(self, sequence: Iterator[int]) -> None:
        self._sequence = sequence
        #: the template's bytes before the text; empty: no template. The translator
        #: empties it to drop the template, on every chunk it reads itself (a store
        #: costs less there than a call).
        self.head = b""
        self._tail = b""
        self._end = b"\n\n"  # how its frames end
        self._pieces: list[str] = []  # the texts of the part the deltas add to
        self._delta_format = b""  # that part's delta frame, holes for the text and number
        # Where its ``created`` digits are (see ``chunk_shape.clock_hole``); size 0: none.
        self._clock_in_head = False
        self._clock_at = 0
        self._clock_size = 0

    def learn(
        self,
        data: bytes,
        frame: bytes,
        part_type: str,
        text: str,
        pieces: list[str],
        delta_format: bytes,
    ) -> None:
        """Keep the frame of a text-only chunk (payload ``data``, whole frame ``frame``
        or ``b""``; its one text delta ``text`` of ``part_type``) as the template;
        ``pieces`` and ``delta_format`` are the translator's for that text part."""
        self.head = b""
        hole = text_hole(data, part_type, text)
        if hole is None:
            return
        before, after = b"data: ", b"\n\n"
        at = frame.find(data) if frame else -1
        if at >= 0 and (frame[:at], frame[at + len(data) :]) in _FRAMINGS:
            before, after = frame[:at], frame[at + len(data) :]
        self.head, self._tail = before + hole[0], hole[1] + after
        self._end = after
        self._pieces = pieces
        self._delta_format = delta_format
        clock = clock_hole(*hole, part_type)
        self._clock_size = 0
        if clock is not None:
            self._clock_in_head, self._clock_at, self._clock_size = clock
            if self._clock_in_head:
                self._clock_at += len(before)

    def repeat(self, frame: bytes) -> bytes | None:
        """The delta frame for one whole ``data:`` frame (framed as the template's) when
        its payload is the last chunk with other text; ``None`` when it is anything else
        (then the translator must ``feed`` it)."""
        head = self.head
        if not head:
            return None
        if not frame.startswith(head) or not frame.endswith(self._tail):
            if not self._clock_size or not self._retime(frame):
                return None
            head = self.head
        tail = self._tail
        # Where head and tail overlap, this is empty, which is no JSON string.
        quoted = frame[len(head) : len(frame) - len(tail)]
        try:
            text = _decode_text(quoted)
        except msgspec.DecodeError:
            return None
        if not text:  # an empty text may let a field the template holds count
            return None
        self._pieces.append(text)
        return self._delta_format % (quoted, next(self._sequence))

    def repeat_frames(self, chunk: bytes) -> tuple[bytes, int]:
        """The delta frames for the whole frames at the start of ``chunk`` that each
        repeat the last chunk with other text (see :meth:`repeat`), and how many bytes
        of ``chunk`` they took; the rest, from the first frame that does not, is for
        the SSE decoder and the translator's ``feed``.

        Such a frame holds no line end but its last two (the template has none, and a
        JSON string no raw one), so it ends where the first line end after its start
        begins the template's.
        """
        if not self.head:
            return b"", 0
        size = len(self._end)
        line_end = self._end[0]
        out = b""
        used = 0
        while (end := chunk.find(line_end, used)) >= 0:
            end += size
            data = self.repeat(chunk[used:end])
            if data is None:
                break
            out += data
            used = end
        return out, used

    def _retime(self, frame: bytes) -> bool:
        """Whether ``frame`` fits the template with other ``created`` digits; if so the
        template takes them on."""
        head, tail = self.head, self._tail
        at, size = self._clock_at, self._clock_size
        start = len(frame) - len(tail)
        if start < len(head):
            return False
        part = head if self._clock_in_head else tail
        if not self._clock_in_head:
            at += start
        digits = frame[at : at + size]
        if not clock_digits(digits, size):
            return False
        at = self._clock_at
        part = part[:at] + digits + part[at + size :]
        if self._clock_in_head:
            head = part
        else:
            tail = part
        if not frame.startswith(head) or not frame.endswith(tail):
            return False
        self.head, self._tail = head, tail
        return True
