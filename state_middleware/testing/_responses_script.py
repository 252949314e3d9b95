"""What the scripted Responses upstream answers: reading its input, the reply a script
entry or magic tokens ask for, and the response object and SSE events that carry it.

Pure functions; ``_responses_app`` does the ASGI side.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from ._common import error_body

SCRIPTED_FAILURE_MESSAGE = "scripted failure"


class RequestError(Exception):
    """A request the upstream rejects with a JSON error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def invalid(message: str, param: str | None, code: str | None) -> RequestError:
    return RequestError(400, error_body(message, "invalid_request_error", param, code))


class Reply(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to answer one request; the validated form of a script entry."""

    status: int | None = None
    text: str | None = None
    deltas: int | None = None
    calls: list[str] | None = None
    shell: str | None = None
    cut_after: int | None = None
    failed: bool = False
    incomplete: bool = False

    def __post_init__(self) -> None:
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be 400-599, got {self.status}")
        if self.deltas is not None and self.deltas < 1:
            raise ValueError(f"deltas must be >= 1, got {self.deltas}")
        if self.deltas is not None and self.text is not None:
            raise ValueError("give either text or deltas, not both")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError(f"cut_after must be >= 0, got {self.cut_after}")


# --- reading the request -------------------------------------------------------------


def content_text(content: Any) -> str:
    """The text of a string content or of a list of text-bearing parts, joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def is_user_message(item: Mapping[str, Any]) -> bool:
    return item.get("type") in (None, "message") and item.get("role") == "user"


def input_items(value: Any) -> list[dict[str, Any]]:
    """Normalise ``input``: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    raise invalid(
        "Invalid type for 'input': expected a string or an array of input items.",
        "input",
        "invalid_type",
    )


def _item_text(item: Mapping[str, Any]) -> str:
    kind = item.get("type")
    if kind in (None, "message"):
        return content_text(item.get("content"))
    if kind == "function_call_output":
        return content_text(item.get("output"))
    if kind == "function_call":
        arguments = item.get("arguments")
        return arguments if isinstance(arguments, str) else ""
    return ""


def _last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if is_user_message(item):
            return content_text(item.get("content"))
    return ""


_FAIL = re.compile(r"\bFAIL:([45]\d\d)\b")
_CUT = re.compile(r"\bCUT:(\d+)\b")
_DELTAS = re.compile(r"\bDELTAS:(\d+)\b")
_CALL = re.compile(r"\bCALL:([\w-]+(?:,[\w-]+)*)", re.ASCII)
_SHELL = re.compile(r"\bSHELL:[ \t]*([^\r\n]+)")
_RESPONSE_FAILED = re.compile(r"\bRESPONSE_FAILED\b")
_INCOMPLETE = re.compile(r"\bINCOMPLETE\b")


def reply_from_tokens(text: str) -> Reply:
    if fail := _FAIL.search(text):
        return Reply(status=int(fail.group(1)))
    cut = _CUT.search(text)
    deltas = _DELTAS.search(text)
    call = _CALL.search(text)
    shell = _SHELL.search(text)
    return Reply(
        cut_after=int(cut.group(1)) if cut else None,
        deltas=max(1, int(deltas.group(1))) if deltas else None,
        calls=call.group(1).split(",") if call else None,
        shell=shell.group(1).strip() if shell else None,
        failed=_RESPONSE_FAILED.search(text) is not None,
        incomplete=_INCOMPLETE.search(text) is not None,
    )


# --- building the reply --------------------------------------------------------------


def _split_words(text: str) -> list[str]:
    """One piece per word, keeping whitespace, so the pieces join back to ``text``."""
    return re.findall(r"\s*\S+\s*", text) or [text]


def _message_item(text: str, status: str) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _function_call_item(name: str, arguments: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"fc_{uuid.uuid4().hex}",
        "type": "function_call",
        "status": "completed",
        "arguments": msgspec.json.encode(arguments).decode("utf-8"),
        "call_id": f"call_{uuid.uuid4().hex}",
        "name": name,
    }


def _default_text(items: list[dict[str, Any]]) -> str:
    last = items[-1] if items else {}
    if last.get("type") == "function_call_output":
        return f"tool said: {content_text(last.get('output'))}"
    return f"[{len(items)} items] {_last_user_text(items)}"


def output_items(reply: Reply, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = reply.text
    if reply.deltas is not None:
        text = "".join(f"w{i} " for i in range(reply.deltas))
    elif text is None and not reply.calls and reply.shell is None:
        text = _default_text(items)
    output = []
    if text is not None:
        output.append(_message_item(text, "incomplete" if reply.incomplete else "completed"))
    user_text = _last_user_text(items)
    output.extend(_function_call_item(name, {"input": user_text}) for name in reply.calls or ())
    if reply.shell is not None:
        output.append(_function_call_item("exec_command", {"cmd": reply.shell}))
    return output


def _tokens(chars: int) -> int:
    return chars // 4 + 1


def usage(items: list[dict[str, Any]], output: list[dict[str, Any]]) -> dict[str, Any]:
    input_tokens = _tokens(sum(len(_item_text(item)) for item in items))
    output_tokens = _tokens(sum(len(_item_text(item)) for item in output))
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _echo(body: Mapping[str, Any], key: str, default: Any) -> Any:
    value = body.get(key)
    return default if value is None else value


def response_object(
    body: Mapping[str, Any], response_id: str, default_model: str
) -> dict[str, Any]:
    """The response object in its in-progress form; the caller finishes it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": _echo(body, "model", default_model),
        "output": [],
        "parallel_tool_calls": _echo(body, "parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": _echo(body, "reasoning", {"effort": None, "summary": None}),
        "store": _echo(body, "store", True),
        "temperature": _echo(body, "temperature", 1.0),
        "text": _echo(body, "text", {"format": {"type": "text"}}),
        "tool_choice": _echo(body, "tool_choice", "auto"),
        "tools": _echo(body, "tools", []),
        "top_p": _echo(body, "top_p", 1.0),
        "truncation": _echo(body, "truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": _echo(body, "metadata", {}),
    }


def final_response(
    started: dict[str, Any], reply: Reply, output: list[dict[str, Any]], usage: dict[str, Any]
) -> dict[str, Any]:
    final = dict(started)
    if reply.failed:
        final.update(
            status="failed",
            error={"code": "server_error", "message": SCRIPTED_FAILURE_MESSAGE},
        )
    elif reply.incomplete:
        final.update(
            status="incomplete",
            incomplete_details={"reason": "max_output_tokens"},
            output=output,
            usage=usage,
        )
    else:
        final.update(status="completed", completed_at=int(time.time()), output=output, usage=usage)
    return final


def _item_events(index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The events that stream one output item, without ``sequence_number``."""
    item_id = item["id"]
    if item["type"] == "message":
        text = item["content"][0]["text"]
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "content": []},
        }
        yield {
            "type": "response.content_part.added",
            **where,
            "part": {"type": "output_text", "text": "", "annotations": []},
        }
        for piece in _split_words(text):
            yield {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
        yield {"type": "response.content_part.done", **where, "part": item["content"][0]}
    else:
        arguments = item["arguments"]
        where = {"item_id": item_id, "output_index": index}
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "arguments": ""},
        }
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            if piece:
                yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
        yield {"type": "response.function_call_arguments.done", **where, "arguments": arguments}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def stream_events(
    started: dict[str, Any], final: dict[str, Any], output: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every event of one stream, in order, numbered from 0."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    if final["status"] == "failed":
        error = {
            "type": "server_error",
            "code": "server_error",
            "message": SCRIPTED_FAILURE_MESSAGE,
            "param": None,
        }
        events.append({"type": "error", "error": error})
        events.append({"type": "response.failed", "response": final})
    else:
        for index, item in enumerate(output):
            events.extend(_item_events(index, item))
        terminal = (
            "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        )
        events.append({"type": terminal, "response": final})
    return [{"type": e["type"], "sequence_number": n, **e} for n, e in enumerate(events)]


# --- ASGI plumbing -------------------------------------------------------------------
