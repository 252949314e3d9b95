"""A pure, incremental server-sent-events framer that keeps the original bytes.

``SSEDecoder.feed(chunk)`` returns every frame completed by ``chunk``; each frame carries
its exact bytes (so an untouched frame is forwarded byte for byte), its ``event`` name
and its joined ``data``. Lines end in ``\\r\\n``, ``\\n`` or ``\\r`` only (never the other
characters ``str.splitlines`` knows), and a ``\\r`` at the end of a chunk waits for the
next one, since it may be the first half of ``\\r\\n``. No decoding to text happens
here: callers parse ``data`` as JSON bytes.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEDecoder", "SSEFrame", "format_frame", "replace_data"]


class SSEFrame(NamedTuple):
    """One event: ``raw`` is the frame as received, blank line included."""

    raw: bytes
    event: str | None
    data: bytes | None


class SSEDecoder:
    """Split a byte stream into SSE frames, carrying partial frames across chunks."""

    __slots__ = ("_scan", "pending")

    def __init__(self) -> None:
        self.pending = b""  # bytes received but not yet part of a complete frame
        self._scan = 0  # where the next line of the pending frame starts

    def feed(self, chunk: bytes) -> list[SSEFrame]:
        if (
            not self.pending
            and chunk.find(b"\n\n") == len(chunk) - 2 > 0
            and chunk[:1] != b"\n"
            and b"\r" not in chunk
        ):
            return [_parse(chunk)]  # the usual chunk: exactly one whole frame
        buffer = self.pending + chunk if self.pending else chunk
        if b"\r" in buffer:
            return self._feed_lines(buffer)
        # Fast path: plain "\n" framing, the form nearly every server sends.
        frames: list[SSEFrame] = []
        frame_start = 0
        search = self._scan
        while True:
            body = frame_start
            while body < len(buffer) and buffer[body] == 0x0A:
                body += 1  # stray blank lines travel with the next frame
            end = buffer.find(b"\n\n", max(search - 1, body))
            if end < 0:
                break
            frames.append(_parse(buffer[frame_start : end + 2]))
            frame_start = search = end + 2
        self.pending = buffer[frame_start:]
        self._scan = self.pending.rfind(b"\n") + 1
        return frames

    def _feed_lines(self, buffer: bytes) -> list[SSEFrame]:
        frames: list[SSEFrame] = []
        frame_start = 0
        content = False  # the pending frame has a non-blank line
        pos = self._scan
        size = len(buffer)
        if pos:
            content = bool(buffer[:pos].strip(b"\r\n"))
        while pos < size:
            nl = buffer.find(b"\n", pos)
            cr = buffer.find(b"\r", pos)
            if nl < 0 and cr < 0:
                break
            if cr >= 0 and (nl < 0 or cr < nl):
                if cr + 1 == size:
                    break  # may be half of "\r\n": wait for more bytes
                line_end = cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
                blank = cr == pos
            else:
                line_end = nl + 1
                blank = nl == pos
            if blank and content:
                frames.append(_parse(buffer[frame_start:line_end]))
                frame_start = line_end
                content = False
            elif not blank:
                content = True
            pos = line_end
        self.pending = buffer[frame_start:]
        self._scan = pos - frame_start
        return frames

    def frames(self, chunk: bytes, *, last: bool) -> list[SSEFrame]:
        """The frames one body message completes; with ``last``, the end of the stream
        too (see :meth:`flush`)."""
        frames = self.feed(chunk) if chunk else []
        return frames + self.flush() if last else frames

    def flush(self) -> list[SSEFrame]:
        """End of stream: a final frame without its blank line still counts."""
        rest, self.pending, self._scan = self.pending, b"", 0
        if not rest.strip(b"\r\n"):
            return []
        return [_parse(rest)]


def _lines(raw: bytes) -> list[bytes]:
    if b"\r" in raw:
        return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return raw.split(b"\n")


def _parse(raw: bytes) -> SSEFrame:
    if raw.startswith(b"data: ") and raw.find(b"\n") == len(raw) - 2 and b"\r" not in raw:
        return SSEFrame(raw, None, raw[6:-2])  # a lone "data: ...\n\n" line
    if raw.startswith(b"event: "):
        # Fast path for the usual "event: x\ndata: {...}\n\n".
        nl = raw.find(b"\n")
        end = len(raw) - 2
        if (
            raw.startswith(b"data: ", nl + 1)
            and raw.find(b"\n", nl + 1) == end
            and raw.endswith(b"\n\n")
            and b"\r" not in raw
        ):
            return SSEFrame(raw, raw[7:nl].decode("utf-8", "replace"), raw[nl + 7 : end])
    event: str | None = None
    data: list[bytes] = []
    for line in _lines(raw):
        if not line or line[:1] == b":":
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    return SSEFrame(raw, event, b"\n".join(data) if data else None)


def format_frame(event: str | None, data: bytes) -> bytes:
    """Encode one frame with an ``event:`` line (when named) and one ``data:`` line."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def replace_data(frame: SSEFrame, data: bytes) -> bytes:
    """The frame with its data replaced, other fields (``event``, ``id``...) kept."""
    kept = [
        line
        for line in _lines(frame.raw)
        if line and not (line == b"data" or line.startswith(b"data:"))
    ]
    kept.append(b"data: " + data)
    return b"\n".join(kept) + b"\n\n"
