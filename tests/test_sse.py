"""The SSE framer, fed every possible split of a stream."""

from __future__ import annotations

import itertools

import pytest

from state_middleware._sse import SSEDecoder, SSEFrame, format_frame, replace_data

STREAMS = {
    "lf": b'event: a\ndata: {"x":1}\n\nevent: b\ndata: 2\n\n',
    "crlf": b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
    "cr": b"event: a\rdata: 1\r\rdata: 2\r\r",
    "mixed": b'event: a\ndata: {"x":1}\n\n\nevent: b\r\ndata: 2\r\ndata: 3\r\n\r\n'
    b": comment\rdata: z\r\rdata: last",
    "unicode": 'data: {"t":"h\u00e9\u2028llo\u0085"}\n\n'.encode(),
}
EXPECTED = {
    "lf": [("a", b'{"x":1}'), ("b", b"2")],
    "crlf": [("a", b"1"), (None, b"2")],
    "cr": [("a", b"1"), (None, b"2")],
    "mixed": [("a", b'{"x":1}'), ("b", b"2\n3"), (None, b"z"), (None, b"last")],
    "unicode": [(None, '{"t":"h\u00e9\u2028llo\u0085"}'.encode())],
}


def decode_in_pieces(stream: bytes, cuts: list[int]) -> list[SSEFrame]:
    decoder = SSEDecoder()
    frames: list[SSEFrame] = []
    edges = [0, *cuts, len(stream)]
    for start, stop in itertools.pairwise(edges):
        frames += decoder.feed(stream[start:stop])
    return frames + decoder.flush()


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_two_way_and_three_way_split_gives_the_same_frames(name: str) -> None:
    stream = STREAMS[name]
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1, 3):
            frames = decode_in_pieces(stream, [first, second])
            assert [(f.event, f.data) for f in frames] == EXPECTED[name], (first, second)
            assert b"".join(f.raw for f in frames) == stream  # bytes kept exactly


def test_byte_by_byte_feeding_completes_each_frame_on_its_last_byte() -> None:
    stream = STREAMS["lf"]
    decoder = SSEDecoder()
    completed_at = [i for i in range(len(stream)) if decoder.feed(stream[i : i + 1])]
    assert completed_at == [stream.index(b"\n\n") + 1, len(stream) - 1]


def test_a_trailing_cr_waits_for_the_next_chunk() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\r\n\r") == []
    (frame,) = decoder.feed(b"\ndata: 2")
    assert frame.raw == b"data: 1\r\n\r\n"
    assert decoder.pending == b"data: 2"


def test_comment_only_frames_have_no_data() -> None:
    (frame,) = SSEDecoder().feed(b": keep-alive\n\n")
    assert frame.data is None


def test_replace_data_keeps_other_fields() -> None:
    (frame,) = SSEDecoder().feed(b"event: e\r\nid: 7\r\ndata: old\r\ndata: more\r\n\r\n")
    assert replace_data(frame, b"new") == b"event: e\nid: 7\ndata: new\n\n"
    assert format_frame("e", b"{}") == b"event: e\ndata: {}\n\n"
    assert format_frame(None, b"{}") == b"data: {}\n\n"
