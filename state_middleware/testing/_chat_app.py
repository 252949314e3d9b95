"""A scripted, stateless Chat Completions upstream for tests of the Responses bridge.

``ScriptedChatApp`` is a raw ASGI3 app serving ``POST {prefix}/chat/completions`` only
(any other method or path is a 404 JSON error). It answers as JSON, or as a Chat event
stream (``data:`` lines only, one body message per chunk, ending with ``data: [DONE]``,
plus a last ``choices: []`` usage chunk when ``stream_options.include_usage`` is true).
Replies are derived from the messages received, so they prove what reached the upstream:

* the last message is a ``tool`` message -> ``tool said: <its content>``;
* otherwise -> ``[<n> messages] <text of the last user message>``.

Magic tokens in the last user message (when it is the last message) change the reply:

``CALL:<name>``     call the request tool ``<name>`` with ``{"input": <user text>}``;
                    ``CALL:a,b`` makes parallel calls, streamed as interleaved fragments.
``SHELL:<command>`` call ``exec_command`` (Codex's shell tool) with ``{"cmd": <command>}``;
                    the command is the rest of the line.
``PATCH:<file>``    call ``apply_patch`` with ``{"input": <a patch adding <file>>}``.
``FAIL:<status>``   answer that HTTP status with an error body.
``CUT:<k>``         stream only the first k chunks, then end the body without ``[DONE]``.
``MIDERROR``        stream one text chunk, then a chunk holding an ``error`` object, then end.
``LENGTH``          finish with ``finish_reason: "length"``.
``DELTAS:<k>``      stream exactly k content chunks: the usual text, then `` 1`` ... `` k-1``.

A call of a tool the request does not offer is a 400, so a bridge that lost a tool fails
loudly. ``ScriptedChatApp(thinking=True)`` behaves like a thinking model: it first streams
(or returns) ``<reasoning_field>: "thinking about: <user text>"``, and, like DeepSeek and
Kimi, refuses with 400 any request holding an assistant message with ``tool_calls`` but
no non-empty ``<reasoning_field>``. ``ScriptedChatApp(answer_as="json")`` answers every
request as JSON, ``stream: true`` or not, and ``answer_as="stream"`` streams every answer,
as some servers do (the default, ``"asked"``, follows ``stream``).

``ScriptedChatApp(chunk_style="transformers", frames_per_write=8)`` streams the way real
servers are read through a proxy: each body message holds up to 8 frames, and the chunks
are written as ``transformers serve`` writes them (the openai SDK's field order with
``None`` fields left out, a ``created`` that moves on every ``CHUNKS_PER_SECOND`` chunks,
no ``data: [DONE]``), with the usage, when asked for, on the finish chunk (as llama.cpp's
server puts it) instead of a chunk of its own.
"""

from __future__ import annotations

from typing import Any

import msgspec
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from ._chat_script import (
    CHUNK_STYLES,
    CHUNKS_PER_SECOND,
    MID_STREAM_ERROR_MESSAGE,
    PATCH_TEMPLATE,
    SCRIPTED_FAILURE_MESSAGE,
    THINKING_MISSING_MESSAGE,
    Reply,
    RequestError,
    check_thinking,
)
from ._common import (
    ClientDisconnect,
    header_dict,
    read_body,
    run_lifespan,
    send_json,
)
from ._responses_app import ReceivedRequest

__all__ = [
    "CHUNKS_PER_SECOND",
    "MID_STREAM_ERROR_MESSAGE",
    "PATCH_TEMPLATE",
    "SCRIPTED_FAILURE_MESSAGE",
    "THINKING_MISSING_MESSAGE",
    "ScriptedChatApp",
]


class ScriptedChatApp:
    """A stateless fake of ``POST /v1/chat/completions``; see the module docstring.

    ``requests`` logs every HTTP request received, rejected ones included.
    """

    def __init__(
        self,
        *,
        prefix: str = "/v1",
        thinking: bool = False,
        reasoning_field: str = "reasoning_content",
        model: str = "scripted-chat-model",
        answer_as: str = "asked",
        chunk_style: str = "openai",
        frames_per_write: int = 1,
    ) -> None:
        if answer_as not in ("asked", "json", "stream"):
            raise ValueError(f"answer_as must be 'asked', 'json' or 'stream', not {answer_as!r}")
        if chunk_style not in CHUNK_STYLES:
            raise ValueError(f"chunk_style must be 'openai' or 'transformers', not {chunk_style!r}")
        if frames_per_write < 1:
            raise ValueError(f"frames_per_write must be at least 1, not {frames_per_write}")
        self.chunk_style = chunk_style
        self.frames_per_write = frames_per_write
        self.route = prefix.rstrip("/") + "/chat/completions"
        self.thinking = thinking
        self.answer_as = answer_as
        self.reasoning_field = reasoning_field
        self.model = model
        self.requests: list[ReceivedRequest] = []

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            raw_body = await read_body(receive)
            try:
                await self._respond(scope, raw_body, send)
            except RequestError as exc:
                await send_json(send, exc.status, exc.body)
        except (ClientDisconnect, OSError):  # the client went away
            return

    def _record(self, scope: Any, raw_body: bytes) -> ReceivedRequest:
        try:
            decoded = msgspec.json.decode(raw_body)
        except msgspec.DecodeError:
            decoded = None
        request = ReceivedRequest(
            method=scope["method"],
            path=scope["path"],
            headers=header_dict(scope["headers"]),
            body=decoded if isinstance(decoded, dict) else {},
            raw_body=raw_body,
        )
        self.requests.append(request)
        return request

    async def _respond(self, scope: Any, raw_body: bytes, send: ASGISendCallable) -> None:
        request = self._record(scope, raw_body)
        root_path: str = scope.get("root_path", "")
        path = request.path
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        if request.method != "POST" or path != self.route:
            raise RequestError(404, f"Invalid URL ({request.method} {request.path})")
        messages = request.body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise RequestError(400, "Missing required parameter: 'messages'.")
        if self.thinking:
            check_thinking(messages, self.reasoning_field)
        reply = Reply(
            request.body,
            messages,
            thinking=self.thinking,
            reasoning_field=self.reasoning_field,
            model=self.model,
            chunk_style=self.chunk_style,
        )
        stream = request.body.get("stream") is True
        if self.answer_as != "asked":
            stream = self.answer_as == "stream"
        if not stream:
            await send_json(send, 200, reply.completion())
            return
        options = request.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        await self._stream(send, reply, include_usage)

    async def _stream(self, send: ASGISendCallable, reply: Reply, include_usage: bool) -> None:
        frames = reply.frames(include_usage)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": False}
        )
        size = self.frames_per_write
        for start in range(0, len(frames), size):
            body = b"".join(frames[start : start + size])
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
