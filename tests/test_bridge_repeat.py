"""The stream translator's fast path for chunks that repeat the last one's shape.

``ChatStreamTranslator.repeat`` must give exactly what ``feed`` gives for a frame it
accepts, and refuse (``None``) every frame it cannot prove is the same chunk with other
text, so the caller falls back to ``feed``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from state_middleware._bridge.stream import ChatStreamTranslator
from tests.test_bridge_stream import base, chunk, events, normalized, terminal, usage_chunk


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
        payload = {**chunk({"content": f"t{i}"}), "created": i}
        assert translator.repeat(frame(compact(payload))) is None
        translator.feed(compact(payload))
    assert translator._learning == 0


@pytest.mark.parametrize("raw", [b"", b'"abc"', b'\n"abc"', b'data: "abc"\n\n', frame(chunk())])
def test_nothing_repeats_before_a_text_chunk_was_decoded(raw: bytes) -> None:
    translator = ChatStreamTranslator(base=base())
    assert translator.repeat(raw) is None
    translator.feed(compact(chunk({"role": "assistant", "content": ""})))
    assert translator.repeat(raw) is None
