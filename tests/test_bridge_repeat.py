"""The stream translator's fast path for chunks that repeat the last one's shape.

``ChatStreamTranslator.repeat`` must give exactly what ``feed`` gives for a frame it
accepts, and refuse (``None``) every frame it cannot prove is the same chunk with other
text, so the caller falls back to ``feed``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest

from state_middleware._bridge.stream import ChatStreamTranslator
from state_middleware._bridge.turn import ChatReplyTranslator
from state_middleware._sse import SSEDecoder
from state_middleware.testing._chat_app import CHUNKS_PER_SECOND, ScriptedChatApp
from tests.test_bridge_stream import (
    base,
    chunk,
    events,
    normalized,
    terminal,
    translate,
    types,
    usage_chunk,
)


def frame(payload: dict[str, Any] | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"data: " + data + b"\n\n"


def run(frames: list[bytes], *, fast: bool) -> tuple[bytes, int]:
    """Translate whole ``data:`` frames as the bridge does (``repeat`` first when
    ``fast``); returns the output and how many frames ``repeat`` took."""
    translator = ChatStreamTranslator(base=base())
    out, taken = translator.start(), 0
    for raw in frames:
        repeated = translator.repeat(raw) if fast else None
        if repeated is not None:
            taken += 1
            out += repeated
        else:
            out += translator.feed(raw[6:-2])
    return out + translator.finish(), taken


def compact(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def ollama_chunk(text: str) -> dict[str, Any]:
    """Ollama's shape: the role on every chunk, a fingerprint, no logprobs."""
    choice = {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
    return {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1,
            "model": "qwen3", "system_fingerprint": "fp_ollama", "choices": [choice]}  # fmt: skip


def llama_cpp_chunk(text: str) -> dict[str, Any]:
    """llama.cpp's shape: keys sorted, ``choices`` first."""
    choice = {"finish_reason": None, "index": 0, "delta": {"content": text}}
    return {"choices": [choice], "created": 1, "id": "chatcmpl-x", "model": "gguf",
            "system_fingerprint": "b1", "object": "chat.completion.chunk"}  # fmt: skip


def transformers_chunk(text: str, created: int) -> dict[str, Any]:
    """``transformers serve``'s shape: the SDK's field order, no ``None`` fields, and the
    second each chunk was written in."""
    return {"id": "req_0", "choices": [{"delta": {"content": text}, "index": 0}],
            "created": created, "model": "Qwen/Qwen2.5-0.5B-Instruct@main",
            "object": "chat.completion.chunk", "system_fingerprint": ""}  # fmt: skip


OPEN_CALL = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
TEXTS = ["Hel", "lo", ", wörld", ' "quoted"', " back\\slash", "\n", " 😀", "\u2028", " end"]

STREAMS = {
    "openai": [frame(chunk({"role": "assistant", "content": ""}))]
    + [frame(compact(chunk({"content": t}))) for t in TEXTS],
    "spaced json": [frame(chunk({"content": t})) for t in TEXTS],
    "ascii escapes": [frame(json.dumps(chunk({"content": t})).encode()) for t in TEXTS],
    "ollama": [frame(compact(ollama_chunk(t))) for t in TEXTS],
    "llama.cpp": [frame(compact(llama_cpp_chunk(t))) for t in TEXTS],
    "thinking": [frame(compact(chunk({"reasoning_content": t}))) for t in TEXTS]
    + [frame(compact(chunk({"content": t, "reasoning_content": None}))) for t in TEXTS],
    "thinking, reasoning field": [frame(compact(chunk({"reasoning": t}))) for t in TEXTS]
    + [frame(compact(chunk({"content": t}))) for t in TEXTS],
    "transformers, a new second every other chunk": [
        frame(compact(transformers_chunk(t, 1_750_000_000 + i // 2))) for i, t in enumerate(TEXTS)
    ],
    "created after the text, spaced json": [
        frame({**chunk({"content": t}), "created": 1_750_000_000 + i}) for i, t in enumerate(TEXTS)
    ],
    "text around a tool call": [frame(compact(chunk({"content": t}))) for t in TEXTS[:3]]
    + [
        frame(compact(chunk({"tool_calls": [OPEN_CALL]}))),
        frame(compact(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))),
    ]
    + [frame(compact(chunk({"content": t}))) for t in TEXTS[3:]],
}
ENDING = [frame(compact(chunk(finish_reason="stop"))), frame(usage_chunk()), b"data: [DONE]\n\n"]


@pytest.mark.parametrize("name", list(STREAMS))
def test_repeat_gives_what_feed_gives(name: str) -> None:
    frames = STREAMS[name] + ENDING
    slow, _ = run(frames, fast=False)
    quick, taken = run(frames, fast=True)
    assert taken > 0
    assert normalized(events(quick)) == normalized(events(slow))
    final = terminal(events(quick))
    texts = [part["text"] for item in final["output"] for part in item.get("content") or ()]
    assert "".join(texts).endswith(TEXTS[-1])


def test_a_text_only_stream_takes_the_fast_path_after_one_chunk() -> None:
    frames = [frame(compact(chunk({"content": f" w{i}"}))) for i in range(500)]
    out, taken = run([*frames, *ENDING], fast=True)
    assert taken == 499
    decoded = events(out)
    deltas = [e["delta"] for e in decoded if e["type"] == "response.output_text.delta"]
    assert deltas == [f" w{i}" for i in range(500)]
    assert terminal(decoded)["output"][0]["content"][0]["text"] == "".join(deltas)


def learned() -> ChatStreamTranslator:
    translator = ChatStreamTranslator(base=base())
    translator.feed(compact(chunk({"content": "first"})))
    assert translator.repeat(frame(compact(chunk({"content": "next"})))) is not None
    return translator


def variant(text_json: str, **changes: Any) -> bytes:
    """A frame of the learned shape with ``text_json`` spliced in as the text's bytes."""
    payload = chunk({"content": "\x01"})
    payload.update(changes)
    return frame(compact(payload).replace(b'"\\u0001"', text_json.encode()))


@pytest.mark.parametrize(
    "raw",
    [
        variant('"a","refusal":"b"'),  # more than one string in the hole
        variant('"a"}, "x": {"y": "z"'),
        variant('"unterminated'),
        variant('"raw\ncontrol"'),
        variant('"bad \\q escape"'),
        variant('""'),  # empty: another field of the shape might count instead
        variant("42"),
        variant("null"),
        variant('"x"', usage={"total_tokens": 1}),  # same hole, other bytes around it
        variant('"x"', model="other"),
        frame(compact(chunk({"content": "x"}, finish_reason="stop"))),
        frame(compact(chunk({"content": "x"})))[:-1],  # no blank line
        b"data: " + frame(compact(chunk({"content": "x"}))),
        frame(compact(chunk({"content": "x"}))).replace(b"data: ", b"data:"),
    ],
)
def test_repeat_refuses_what_it_cannot_prove(raw: bytes) -> None:
    assert learned().repeat(raw) is None


def test_nothing_is_learned_from_an_ambiguous_chunk() -> None:
    translator = ChatStreamTranslator(base=base())
    translator.feed(compact(chunk({"content": "m"})))  # "m" is the model's name too
    assert translator.repeat(frame(compact(chunk({"content": "n"})))) is None
    translator.feed(compact(chunk({"content": "n2"})))
    assert translator.repeat(frame(compact(chunk({"content": "n3"})))) is not None


def test_nothing_is_learned_when_the_text_sits_in_an_ignored_field() -> None:
    translator = ChatStreamTranslator(base=base())
    # The text's own bytes differ (an escape) but the same words sit in an unknown field.
    payload = compact({**chunk({"content": "zz"}), "note": "é"}).replace(b'"zz"', b'"z\\u007a"')
    payload = payload.replace(b'"\xc3\xa9"', b'"zz"')
    translator.feed(payload)
    assert translator.repeat(frame(payload.replace(b'"note":"zz"', b'"note":"other"'))) is None


def test_nothing_repeats_after_the_stream_ends() -> None:
    translator = learned()
    translator.feed(compact(chunk(finish_reason="stop")))
    assert translator.repeat(frame(compact(chunk({"content": "late"})))) is None
    translator.feed(b"[DONE]")
    assert translator.terminal_emitted
    assert translator.repeat(frame(compact(chunk({"content": "late"})))) is None


def test_a_shape_that_changes_every_chunk_stops_being_learned() -> None:
    translator = ChatStreamTranslator(base=base())
    for i in range(100):
        payload = {**chunk({"content": f"t{i}"}), "system_fingerprint": f"fp{i}"}
        assert translator.repeat(frame(compact(payload))) is None
        translator.feed(compact(payload))
    assert translator._learning == 0


@pytest.mark.parametrize("raw", [b"", b'"abc"', b'\n"abc"', b'data: "abc"\n\n', frame(chunk())])
def test_nothing_repeats_before_a_text_chunk_was_decoded(raw: bytes) -> None:
    translator = ChatStreamTranslator(base=base())
    assert translator.repeat(raw) is None
    translator.feed(compact(chunk({"role": "assistant", "content": ""})))
    assert translator.repeat(raw) is None


def test_a_new_created_second_is_taken_without_decoding() -> None:
    frames = [frame(compact(transformers_chunk(f" w{i}", 1_750_000_000 + i))) for i in range(50)]
    translator = ChatStreamTranslator(base=base())
    translator.feed(frames[0][6:-2])
    assert all(translator.repeat(raw) is not None for raw in frames[1:])
    assert translator.decoded == 1


@pytest.mark.parametrize("created", [b"175000000", b"17500000000", b"0750000000", b"1750-00000"])
def test_created_is_only_taken_with_as_many_digits_and_no_leading_zero(created: bytes) -> None:
    translator = ChatStreamTranslator(base=base())
    translator.feed(compact(transformers_chunk("first", 1_750_000_000)))
    raw = frame(compact(transformers_chunk("next", 1_750_000_000)))
    assert translator.repeat(raw.replace(b"1750000000", created)) is None
    assert translator.repeat(raw) is not None


def test_a_created_that_is_not_one_number_makes_no_clock_hole() -> None:
    translator = ChatStreamTranslator(base=base())
    payload = {**transformers_chunk("first", 1), "extra": {"created": 2}}
    translator.feed(compact(payload))
    assert translator.repeat(frame(compact({**payload, "created": 3}))) is None
    assert translator.repeat(frame(compact(payload).replace(b"first", b"again"))) is not None


# -- the bridge on a recorded real-world stream --------------------------------------------


async def recorded(*, frames_per_write: int, deltas: int = 120, text: str = "") -> list[bytes]:
    """The body messages of a ``transformers``-style stream of ``ScriptedChatApp``."""
    app = ScriptedChatApp(chunk_style="transformers", frames_per_write=frames_per_write)
    body = {"model": "m", "messages": [{"role": "user", "content": text or f"DELTAS:{deltas}"}]}
    body.update(stream=True, stream_options={"include_usage": True})
    body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    request = [{"type": "http.request", "body": msgspec.json.encode(body), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        return request.pop()

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    return [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]


async def bridged(writes: Iterable[bytes], *, direct: bool = True) -> ChatReplyTranslator:
    """Hand ``writes`` to a ``ChatReplyTranslator`` as one chat app's streamed reply;
    the translator's ``out`` is what it delivered."""
    out: list[bytes] = []

    async def deliver(message: Any) -> None:
        if message["type"] == "http.response.body":
            out.append(message["body"])

    translator = ChatReplyTranslator(
        base(), deliver, 1 << 30, direct=lambda: deliver if direct else None, wants_stream=True
    )
    start = {"type": "http.response.start", "status": 200}
    await translator.send({**start, "headers": [(b"content-type", b"text/event-stream")]})
    for body in writes:
        await translator.send({"type": "http.response.body", "body": body, "more_body": True})
    await translator.send({"type": "http.response.body", "body": b"", "more_body": False})
    translator.out = out  # type: ignore[attr-defined]
    return translator


def delivered(translator: ChatReplyTranslator) -> bytes:
    return b"".join(translator.out)  # type: ignore[attr-defined]


def batched(stream: bytes, size: int) -> list[bytes]:
    """``stream``'s frames, ``size`` to a write."""
    frames = [f + b"\n\n" for f in stream.split(b"\n\n")[:-1]]
    return [b"".join(frames[i : i + size]) for i in range(0, len(frames), size)]


@pytest.mark.anyio
async def test_the_recorded_stream_is_batched_without_done_and_with_usage_on_the_finish() -> None:
    writes = await recorded(frames_per_write=8)
    frames = b"".join(writes).split(b"\n\n")[:-1]
    payloads = [json.loads(f.removeprefix(b"data: ")) for f in frames]
    assert len(writes[0].split(b"\n\n")) == 9
    assert b"[DONE]" not in b"".join(writes)
    assert payloads[-1]["usage"]["total_tokens"] > 0
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in payloads[-2]
    assert len({p["created"] for p in payloads}) == len(payloads) // CHUNKS_PER_SECOND + 1


@pytest.mark.anyio
@pytest.mark.parametrize("size", [1, 2, 3, 8, 50, 1000])
@pytest.mark.parametrize("direct", [True, False])
async def test_batched_frames_give_the_slow_path_events_and_skip_decoding(
    size: int, direct: bool
) -> None:
    stream = b"".join(await recorded(frames_per_write=1))
    translator = await bridged(batched(stream, size), direct=direct)
    assert normalized(events(delivered(translator))) == normalized(events(translate(stream)))
    assert translator.stream is not None
    # The role chunk, the first text chunk and the finish chunk; all other deltas hit.
    assert translator.stream.decoded == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    "framing",
    [(b"data: ", b"\n\n"), (b"data:", b"\n\n"), (b"data: ", b"\r\n\r\n"), (b"data:", b"\r\n\r\n")],
)
async def test_other_framings_of_the_data_line_are_learned(framing: tuple[bytes, bytes]) -> None:
    before, after = framing
    stream = b"".join(await recorded(frames_per_write=1))
    stream = stream.replace(b"data: ", before).replace(b"\n\n", after)
    writes = [f + after for f in stream.split(after)[:-1]]
    for size in (1, 4):
        grouped = [b"".join(writes[i : i + size]) for i in range(0, len(writes), size)]
        translator = await bridged(grouped)
        assert normalized(events(delivered(translator))) == normalized(events(translate(stream)))
        assert translator.stream is not None
        assert translator.stream.decoded == 3


@pytest.mark.anyio
async def test_every_split_of_the_stream_into_writes_gives_the_slow_path_events() -> None:
    text = 'Hi, wörld 😀 "q" DELTAS:30 CALL:f'
    stream = b"".join(await recorded(frames_per_write=1, text=text))
    expected = events(translate(stream))
    assert types(expected).count("function_call_arguments.delta") == 2
    cuts = [(cut,) for cut in range(1, len(stream))]
    cuts += [tuple(range(step, len(stream), step)) for step in (7, 64, 333)]
    for splits in cuts:
        bounds = [0, *splits, len(stream)]
        translator = await bridged(stream[a:b] for a, b in itertools.pairwise(bounds))
        # ``events`` checked the framing once; JSON is enough to compare the rest.
        out = [json.loads(frame.data or b"") for frame in SSEDecoder().feed(delivered(translator))]
        assert normalized(out) == normalized(expected), splits
