"""A scripted, deliberately stateless Responses API upstream for tests.

``ScriptedResponsesApp`` is a raw ASGI3 app serving ``POST {prefix}/responses`` only. It
refuses ``previous_response_id``, so anything stateful a test observes must come from the
middleware in front of it. Its reply is derived from the input it received, so the reply
text proves which history reached the upstream:

* the last input item is a ``function_call_output`` -> ``tool said: <output>``;
* otherwise -> ``[<n> items] <text of the last user message>``.

Behaviour is steered per request, first by ``app.script`` and then by magic tokens.

``app.script`` is a deque; when it is not empty the next request pops one entry, and that
entry replaces the magic tokens. An entry is a mapping, or a callable taking the
``ReceivedRequest`` and returning a mapping (or ``None`` for "no override"). Keys:

``status``      int 400-599: reply with that HTTP status and an error body, nothing else.
``text``        str: the assistant message text.
``deltas``      int >= 1: the text becomes ``"w0 w1 ... "``, streamed as exactly that many
                ``response.output_text.delta`` events (cannot be combined with ``text``).
``calls``       list of function names: emit one ``function_call`` item per name (after
                the message, and only with a message if ``text`` or ``deltas`` is set).
``cut_after``   int: stream only the first k events (never the terminal one), then end
                the body; for a JSON request this is a 500.
``failed``      bool: the response fails (``error`` + ``response.failed`` when streaming).
``incomplete``  bool: the response ends ``incomplete`` (reason ``max_output_tokens``).

Magic tokens are read from the last input item when it is a user message, so they also
work over a real socket from another process. They combine, except ``FAIL`` which wins:
``FAIL:<status>``, ``CUT:<k>``, ``RESPONSE_FAILED``, ``INCOMPLETE``, ``DELTAS:<k>`` and
``CALL:<name>[,<name>...]`` map onto ``status``, ``cut_after``, ``failed``,
``incomplete``, ``deltas`` and ``calls``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from ._common import (
    ClientDisconnect,
    error_body,
    header_dict,
    read_body,
    run_lifespan,
    send_json,
    sse_frame,
)

__all__ = [
    "PREVIOUS_RESPONSE_ID_MESSAGE",
    "SCRIPTED_FAILURE_MESSAGE",
    "ReceivedRequest",
    "ScriptEntry",
    "ScriptedResponsesApp",
]

PREVIOUS_RESPONSE_ID_MESSAGE = "previous_response_id is not supported by this stateless upstream."
SCRIPTED_FAILURE_MESSAGE = "scripted failure"


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the upstream saw it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw_body: bytes


ScriptEntry: TypeAlias = Mapping[str, Any] | Callable[[ReceivedRequest], Mapping[str, Any] | None]
"""A mapping of reply overrides, or a callable computing one from the request."""


class _Reply(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to answer one request; the validated form of a script entry."""

    status: int | None = None
    text: str | None = None
    deltas: int | None = None
    calls: list[str] | None = None
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


class _RequestError(Exception):
    """A request the upstream rejects with a JSON error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def _invalid(message: str, param: str | None, code: str | None) -> _RequestError:
    return _RequestError(400, error_body(message, "invalid_request_error", param, code))


# --- reading the request -------------------------------------------------------------


def _content_text(content: Any) -> str:
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


def _is_user_message(item: Mapping[str, Any]) -> bool:
    return item.get("type") in (None, "message") and item.get("role") == "user"


def _input_items(value: Any) -> list[dict[str, Any]]:
    """Normalise ``input``: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    raise _invalid(
        "Invalid type for 'input': expected a string or an array of input items.",
        "input",
        "invalid_type",
    )


def _item_text(item: Mapping[str, Any]) -> str:
    kind = item.get("type")
    if kind in (None, "message"):
        return _content_text(item.get("content"))
    if kind == "function_call_output":
        return _content_text(item.get("output"))
    if kind == "function_call":
        arguments = item.get("arguments")
        return arguments if isinstance(arguments, str) else ""
    return ""


def _last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if _is_user_message(item):
            return _content_text(item.get("content"))
    return ""


_FAIL = re.compile(r"\bFAIL:([45]\d\d)\b")
_CUT = re.compile(r"\bCUT:(\d+)\b")
_DELTAS = re.compile(r"\bDELTAS:(\d+)\b")
_CALL = re.compile(r"\bCALL:([\w-]+(?:,[\w-]+)*)", re.ASCII)
_RESPONSE_FAILED = re.compile(r"\bRESPONSE_FAILED\b")
_INCOMPLETE = re.compile(r"\bINCOMPLETE\b")


def _reply_from_tokens(text: str) -> _Reply:
    if fail := _FAIL.search(text):
        return _Reply(status=int(fail.group(1)))
    cut = _CUT.search(text)
    deltas = _DELTAS.search(text)
    call = _CALL.search(text)
    return _Reply(
        cut_after=int(cut.group(1)) if cut else None,
        deltas=max(1, int(deltas.group(1))) if deltas else None,
        calls=call.group(1).split(",") if call else None,
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


def _function_call_item(name: str, user_text: str) -> dict[str, Any]:
    return {
        "id": f"fc_{uuid.uuid4().hex}",
        "type": "function_call",
        "status": "completed",
        "arguments": msgspec.json.encode({"input": user_text}).decode("utf-8"),
        "call_id": f"call_{uuid.uuid4().hex}",
        "name": name,
    }


def _default_text(items: list[dict[str, Any]]) -> str:
    last = items[-1] if items else {}
    if last.get("type") == "function_call_output":
        return f"tool said: {_content_text(last.get('output'))}"
    return f"[{len(items)} items] {_last_user_text(items)}"


def _output_items(reply: _Reply, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = reply.text
    if reply.deltas is not None:
        text = "".join(f"w{i} " for i in range(reply.deltas))
    elif text is None and not reply.calls:
        text = _default_text(items)
    output = []
    if text is not None:
        output.append(_message_item(text, "incomplete" if reply.incomplete else "completed"))
    user_text = _last_user_text(items)
    output.extend(_function_call_item(name, user_text) for name in reply.calls or ())
    return output


def _tokens(chars: int) -> int:
    return chars // 4 + 1


def _usage(items: list[dict[str, Any]], output: list[dict[str, Any]]) -> dict[str, Any]:
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


def _response_object(
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


def _final_response(
    started: dict[str, Any], reply: _Reply, output: list[dict[str, Any]], usage: dict[str, Any]
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


def _stream_events(
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


class ScriptedResponsesApp:
    """A stateless fake of ``POST /v1/responses``; see the module docstring for scripting.

    ``requests`` logs every HTTP request received (rejected ones too), and ``script``
    holds overrides for the next replies. Response ids are ``resp_upstream_<n>`` counting
    from 1 per app instance, so they repeat across instances on purpose.
    """

    def __init__(
        self, *, prefix: str = "/v1", delay: float = 0.0, model: str = "scripted-model"
    ) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.route = prefix.rstrip("/") + "/responses"
        self.delay = delay
        self.model = model
        self.requests: list[ReceivedRequest] = []
        self.script: collections.deque[ScriptEntry] = collections.deque()
        self._ids = itertools.count(1)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000, "reason": None})
        elif scope["type"] == "http":
            await _Responder(self, scope, receive, send).run()

    def _next_reply(self, request: ReceivedRequest, items: list[dict[str, Any]]) -> _Reply:
        if self.script:
            entry = self.script.popleft()
            override = entry(request) if callable(entry) else entry
            if override is not None:
                return msgspec.convert(dict(override), _Reply)
        last = items[-1] if items else {}
        if _is_user_message(last):
            return _reply_from_tokens(_content_text(last.get("content")))
        return _Reply()

    def _next_id(self) -> str:
        return f"resp_upstream_{next(self._ids)}"


class _Responder:
    """Handles one HTTP request for a ``ScriptedResponsesApp``."""

    def __init__(
        self,
        app: ScriptedResponsesApp,
        scope: Any,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send

    async def run(self) -> None:
        try:
            raw_body = await read_body(self.receive)
            try:
                await self._respond(raw_body)
            except _RequestError as exc:
                await send_json(self.send, exc.status, exc.body)
        except (ClientDisconnect, OSError):  # the client went away; stop quietly
            return

    def _route_path(self) -> str:
        path: str = self.scope["path"]
        root_path: str = self.scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            return path[len(root_path) :] or "/"
        return path

    async def _respond(self, raw_body: bytes) -> None:
        try:
            decoded = msgspec.json.decode(raw_body)
        except msgspec.DecodeError:
            decoded = None
        body: dict[str, Any] = decoded if isinstance(decoded, dict) else {}
        request = ReceivedRequest(
            method=self.scope["method"],
            path=self.scope["path"],
            headers=header_dict(self.scope["headers"]),
            body=body,
            raw_body=raw_body,
        )
        self.app.requests.append(request)

        if request.method != "POST" or self._route_path() != self.app.route:
            message = f"Invalid URL ({request.method} {request.path})"
            raise _RequestError(404, error_body(message, "invalid_request_error"))
        if not isinstance(decoded, dict):
            raise _invalid("The request body is not a valid JSON object.", None, None)
        if body.get("previous_response_id") is not None:
            raise _invalid(
                PREVIOUS_RESPONSE_ID_MESSAGE, "previous_response_id", "unsupported_parameter"
            )
        if "input" not in body:
            raise _invalid(
                "Missing required parameter: 'input'.", "input", "missing_required_parameter"
            )
        items = _input_items(body["input"])
        reply = self.app._next_reply(request, items)
        stream = body.get("stream") is True
        if reply.status is None and reply.cut_after is not None and not stream:
            reply = _Reply(status=500)
        if reply.status is not None:
            error_type = "server_error" if reply.status >= 500 else "invalid_request_error"
            failure = error_body(SCRIPTED_FAILURE_MESSAGE, error_type, None, "scripted_failure")
            raise _RequestError(reply.status, failure)

        started = _response_object(body, self.app._next_id(), self.app.model)
        output = _output_items(reply, items)
        final = _final_response(started, reply, output, _usage(items, output))
        if not stream:
            await send_json(self.send, 200, final)
            return
        events = _stream_events(started, final, output)
        if reply.cut_after is not None:
            events = events[: min(reply.cut_after, len(events) - 1)]
        await self._stream(events)

    async def _stream(self, events: list[dict[str, Any]]) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
                "trailers": False,
            }
        )
        disconnected = asyncio.ensure_future(self._wait_for_disconnect())
        try:
            for index, event in enumerate(events):
                if self.app.delay:
                    await asyncio.wait({disconnected}, timeout=self.app.delay)
                elif index % 16 == 15:
                    await asyncio.sleep(0)  # let the disconnect watcher run now and then
                if disconnected.done():
                    return
                frame = sse_frame(event["type"], event)
                await self.send({"type": "http.response.body", "body": frame, "more_body": True})
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnected.cancel()
            await asyncio.wait({disconnected})
            if not disconnected.cancelled():
                disconnected.exception()  # retrieve it, so asyncio never logs it

    async def _wait_for_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
