"""What the scripted Chat Completions upstream answers: the reply the messages and their
magic tokens ask for (a ``_Plan``), and the completion, or the stream's chunks and frames,
that carry it, written the OpenAI way or the ``transformers serve`` way.

No IO; ``_chat_app`` does the ASGI side, and its docstring says what is answered when.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._common import error_body

SCRIPTED_FAILURE_MESSAGE = "scripted failure"
MID_STREAM_ERROR_MESSAGE = "scripted mid-stream failure"
THINKING_MISSING_MESSAGE = (
    "thinking is enabled but reasoning_content is missing in assistant tool call message "
    "at index {}"
)
PATCH_TEMPLATE = "*** Begin Patch\n*** Add File: {}\n+hello\n*** End Patch\n"
CREATED = 1_700_000_000
#: how many chunks a ``transformers``-style stream writes before its ``created`` moves on
CHUNKS_PER_SECOND = 25
CHUNK_STYLES = ("openai", "transformers")

_CALL = re.compile(r"\bCALL:([\w-]+(?:,[\w-]+)*)", re.ASCII)
_SHELL = re.compile(r"\bSHELL:[ \t]*([^\r\n]+)")
_PATCH = re.compile(r"\bPATCH:(\S+)")
_FAIL = re.compile(r"\bFAIL:([45]\d\d)\b")
_CUT = re.compile(r"\bCUT:(\d+)\b")
_DELTAS = re.compile(r"\bDELTAS:(\d+)\b")
_encode = msgspec.json.Encoder().encode


class RequestError(Exception):
    """A request answered with a JSON error body."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.body = error_body(message, error_type)


@dataclass
class _Plan:
    """What one reply holds and how it is delivered."""

    pieces: list[str] = field(default_factory=list)  # content chunks; joined = the text
    reasoning: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments JSON)
    finish_reason: str = "stop"
    cut_after: int | None = None
    mid_error: bool = False


def _text(content: Any) -> str:
    """A message content as text: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _words(text: str) -> list[str]:
    """One piece per word with its whitespace, so the pieces join back to ``text``."""
    return re.findall(r"\s*\S+\s*", text) or [text]


def _tool_names(body: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _calls(text: str, offered: set[str]) -> list[tuple[str, str]]:
    """The tool calls the magic tokens in ``text`` ask for."""
    wanted: list[tuple[str, dict[str, str]]] = []
    if call := _CALL.search(text):
        wanted += [(name, {"input": text}) for name in call.group(1).split(",")]
    if shell := _SHELL.search(text):
        wanted.append(("exec_command", {"cmd": shell.group(1).strip()}))
    if patch := _PATCH.search(text):
        wanted.append(("apply_patch", {"input": PATCH_TEMPLATE.format(patch.group(1))}))
    for name, _ in wanted:
        if name not in offered:
            raise RequestError(400, f"Tool '{name}' is not among the request tools.")
    return [(name, _encode(arguments).decode()) for name, arguments in wanted]


def check_thinking(messages: list[dict[str, Any]], reasoning_field: str) -> None:
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or not message.get("tool_calls"):
            continue
        reasoning = message.get(reasoning_field)
        if not isinstance(reasoning, str) or not reasoning:
            raise RequestError(400, THINKING_MISSING_MESSAGE.format(index))


def _plan(body: Mapping[str, Any], messages: list[dict[str, Any]], thinking: bool) -> _Plan:
    user_text = _last_user_text(messages)
    plan = _Plan(reasoning=f"thinking about: {user_text}" if thinking else None)
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        plan.pieces = _words(f"tool said: {_text(last.get('content'))}")
        return plan
    if fail := _FAIL.search(user_text):
        status = int(fail.group(1))
        raise RequestError(
            status,
            SCRIPTED_FAILURE_MESSAGE,
            "server_error" if status >= 500 else "invalid_request_error",
        )
    plan.calls = _calls(user_text, _tool_names(body))
    text = f"[{len(messages)} messages] {user_text}"
    if deltas := _DELTAS.search(user_text):
        plan.pieces = [text] + [f" {i}" for i in range(1, max(1, int(deltas.group(1))))]
    elif not plan.calls:
        plan.pieces = _words(text)
    if cut := _CUT.search(user_text):
        plan.cut_after = int(cut.group(1))
    plan.mid_error = "MIDERROR" in user_text
    if "LENGTH" in user_text:
        plan.finish_reason = "length"
    elif plan.calls:
        plan.finish_reason = "tool_calls"
    return plan


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


def _usage(messages: list[dict[str, Any]], plan: _Plan) -> dict[str, Any]:
    prompt = sum(_tokens(_text(m.get("content"))) for m in messages)
    reasoning = _tokens(plan.reasoning) if plan.reasoning else 0
    answer = "".join(plan.pieces) + "".join(arguments for _, arguments in plan.calls)
    completion = _tokens(answer) + reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _call_id(n: int, i: int) -> str:
    return f"call_{n}_{i}"


class Reply:
    """Builds the JSON body or the chunk list of one reply."""

    def __init__(
        self,
        body: Mapping[str, Any],
        messages: list[Any],
        *,
        thinking: bool,
        reasoning_field: str,
        model: str,
        chunk_style: str,
    ) -> None:
        self.messages = messages
        self.reasoning_field = reasoning_field
        self.chunk_style = chunk_style
        self.plan = _plan(body, messages, thinking)
        self.model = body.get("model") or model
        self.completion_id = f"chatcmpl-{len(messages)}"

    def completion(self) -> dict[str, Any]:
        plan, n = self.plan, len(self.messages)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.pieces) or None}
        message["refusal"] = None
        if plan.reasoning is not None:
            message[self.reasoning_field] = plan.reasoning
        if plan.calls:
            message["tool_calls"] = [
                {"id": _call_id(n, i), "type": "function", "function": {"name": a, "arguments": b}}
                for i, (a, b) in enumerate(plan.calls)
            ]
        choice = {"index": 0, "message": message, "finish_reason": plan.finish_reason}
        choice["logprobs"] = None
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self._usage()}

    def _usage(self) -> dict[str, Any]:
        return _usage(self.messages, self.plan)

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.completion_id, "object": kind, "created": CREATED, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice]}

    def _call_fragments(self) -> list[dict[str, Any]]:
        """Tool call deltas, fragments of parallel calls interleaved round by round."""
        rounds: list[list[dict[str, Any]]] = [[], [], []]
        for i, (name, arguments) in enumerate(self.plan.calls):
            head = {"name": name, "arguments": ""}
            rounds[0].append(
                {"index": i, "id": _call_id(len(self.messages), i), "type": "function"}
            )
            rounds[0][-1]["function"] = head
            half = len(arguments) // 2
            rounds[1].append({"index": i, "function": {"arguments": arguments[:half]}})
            rounds[2].append({"index": i, "function": {"arguments": arguments[half:]}})
        return [self._chunk({"tool_calls": [f]}) for fragments in rounds for f in fragments]

    def chunks(self, include_usage: bool) -> list[dict[str, Any]]:
        plan = self.plan
        transformers = self.chunk_style == "transformers"
        role = {"role": "assistant"} if transformers else {"role": "assistant", "content": ""}
        chunks = [self._chunk(role)]
        if plan.reasoning is not None:
            field_name = self.reasoning_field
            chunks += [self._chunk({field_name: piece}) for piece in _words(plan.reasoning)]
        content = [self._chunk({"content": piece}) for piece in plan.pieces]
        if plan.mid_error:
            error = error_body(MID_STREAM_ERROR_MESSAGE, "server_error")
            return [*chunks, *content[:1], error]
        chunks += content + self._call_fragments()
        chunks.append(self._chunk({}, plan.finish_reason))
        if include_usage and transformers:
            chunks[-1]["usage"] = self._usage()
        elif include_usage:  # every chunk says usage: null, then one chunk carries it
            for chunk in chunks:
                chunk["usage"] = None
            chunks.append({**self._envelope("chat.completion.chunk"), "choices": []})
            chunks[-1]["usage"] = self._usage()
        return chunks

    def frames(self, include_usage: bool) -> list[bytes]:
        """The stream's ``data:`` frames: :meth:`chunks` written in the chunk style and
        cut short as the plan says, then ``data: [DONE]`` when whole (OpenAI style)."""
        chunks = self.chunks(include_usage)
        cut = self.plan.cut_after
        complete = cut is None and not self.plan.mid_error
        if cut is not None:
            chunks = chunks[:cut]
        if self.chunk_style == "transformers":
            chunks = [_transformers_chunk(chunk, i) for i, chunk in enumerate(chunks)]
        frames = [b"data: " + _encode(chunk) + b"\n\n" for chunk in chunks]
        if complete and self.chunk_style == "openai":
            frames.append(b"data: [DONE]\n\n")
        return frames


def _transformers_chunk(chunk: dict[str, Any], number: int) -> dict[str, Any]:
    """Chunk ``number`` of a stream as ``transformers serve`` writes it: the SDK's field
    order, ``None`` fields left out, ``created`` moving on with the chunks."""
    if "choices" not in chunk:  # an error payload goes out as it is
        return chunk
    choices = []
    for choice in chunk["choices"]:
        delta = {k: v for k, v in choice["delta"].items() if v is not None}
        written = {"delta": delta, "index": choice["index"]}
        if choice["finish_reason"] is not None:
            written["finish_reason"] = choice["finish_reason"]
        choices.append(written)
    written = {"id": chunk["id"], "choices": choices}
    written["created"] = chunk["created"] + number // CHUNKS_PER_SECOND
    written.update(model=chunk["model"], object=chunk["object"], system_fingerprint="")
    if chunk.get("usage") is not None:
        written["usage"] = chunk["usage"]
    return written
