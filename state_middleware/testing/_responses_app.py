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
                the message, and only with a message if ``text`` or ``deltas`` is set);
                its arguments are ``{"input": <text of the last user message>}``.
``shell``       str: a command; emit a ``function_call`` to ``exec_command`` with arguments
                ``{"cmd": <command>}`` (Codex's shell tool, so Codex runs it), after the
                ``calls``.
``cut_after``   int: stream only the first k events (never the terminal one), then end
                the body; for a JSON request this is a 500.
``failed``      bool: the response fails (``error`` + ``response.failed`` when streaming).
``incomplete``  bool: the response ends ``incomplete`` (reason ``max_output_tokens``).

Magic tokens are read from the last input item when it is a user message, so they also
work over a real socket from another process. They combine, except ``FAIL`` which wins:
``FAIL:<status>``, ``CUT:<k>``, ``RESPONSE_FAILED``, ``INCOMPLETE``, ``DELTAS:<k>``,
``CALL:<name>[,<name>...]`` and ``SHELL:<command up to the end of the line>`` map onto
``status``, ``cut_after``, ``failed``, ``incomplete``, ``deltas``, ``calls`` and
``shell`` (as the scripted chat app's ``SHELL:`` does).

``ScriptedResponsesApp(answer_as="stream")`` streams every answer, asked or not (as HF
``transformers serve`` does when ``stream`` is absent), and ``answer_as="json"`` answers
every request as JSON; the default ``"asked"`` does what the request says.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Callable, Mapping
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
from ._responses_script import (
    SCRIPTED_FAILURE_MESSAGE,
    Reply,
    RequestError,
    content_text,
    final_response,
    input_items,
    invalid,
    is_user_message,
    output_items,
    reply_from_tokens,
    response_object,
    stream_events,
    usage,
)

__all__ = [
    "PREVIOUS_RESPONSE_ID_MESSAGE",
    "SCRIPTED_FAILURE_MESSAGE",
    "ReceivedRequest",
    "ScriptEntry",
    "ScriptedResponsesApp",
]

PREVIOUS_RESPONSE_ID_MESSAGE = "previous_response_id is not supported by this stateless upstream."


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


class ScriptedResponsesApp:
    """A stateless fake of ``POST /v1/responses``; see the module docstring for scripting.

    ``requests`` logs every HTTP request received (rejected ones too), and ``script``
    holds overrides for the next replies. Response ids are ``resp_upstream_<n>`` counting
    from 1 per app instance, so they repeat across instances on purpose.
    """

    def __init__(
        self,
        *,
        prefix: str = "/v1",
        delay: float = 0.0,
        model: str = "scripted-model",
        answer_as: str = "asked",
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        if answer_as not in ("asked", "json", "stream"):
            raise ValueError(f"answer_as must be 'asked', 'json' or 'stream', not {answer_as!r}")
        self.answer_as = answer_as
        self.route = prefix.rstrip("/") + "/responses"
        self.delay = delay
        #: awaited with ``delay`` before each streamed event instead of waiting on the
        #: loop's clock (a test passes a gate to let events out one by one); when given it
        #: is awaited before every event, even with ``delay`` 0, and a disconnect cuts it
        #: short
        self.sleep = sleep
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

    def _next_reply(self, request: ReceivedRequest, items: list[dict[str, Any]]) -> Reply:
        if self.script:
            entry = self.script.popleft()
            override = entry(request) if callable(entry) else entry
            if override is not None:
                return msgspec.convert(dict(override), Reply)
        last = items[-1] if items else {}
        if is_user_message(last):
            return reply_from_tokens(content_text(last.get("content")))
        return Reply()

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
            except RequestError as exc:
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
            raise RequestError(404, error_body(message, "invalid_request_error"))
        if not isinstance(decoded, dict):
            raise invalid("The request body is not a valid JSON object.", None, None)
        if body.get("previous_response_id") is not None:
            raise invalid(
                PREVIOUS_RESPONSE_ID_MESSAGE, "previous_response_id", "unsupported_parameter"
            )
        if "input" not in body:
            raise invalid(
                "Missing required parameter: 'input'.", "input", "missing_required_parameter"
            )
        items = input_items(body["input"])
        reply = self.app._next_reply(request, items)
        stream = body.get("stream") is True
        if self.app.answer_as != "asked":
            stream = self.app.answer_as == "stream"
        if reply.status is None and reply.cut_after is not None and not stream:
            reply = Reply(status=500)
        if reply.status is not None:
            error_type = "server_error" if reply.status >= 500 else "invalid_request_error"
            failure = error_body(SCRIPTED_FAILURE_MESSAGE, error_type, None, "scripted_failure")
            raise RequestError(reply.status, failure)

        started = response_object(body, self.app._next_id(), self.app.model)
        output = output_items(reply, items)
        final = final_response(started, reply, output, usage(items, output))
        if not stream:
            await send_json(self.send, 200, final)
            return
        events = stream_events(started, final, output)
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
                if self.app.sleep is not None:
                    await self._sleep_unless(disconnected)
                elif self.app.delay:
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

    async def _sleep_unless(self, disconnected: asyncio.Task[None]) -> None:
        """Await the app's ``sleep``, or the disconnect if it comes first."""
        assert self.app.sleep is not None
        sleeping = asyncio.ensure_future(self.app.sleep(self.app.delay))
        try:
            await asyncio.wait({disconnected, sleeping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            await asyncio.wait({sleeping})
        if not sleeping.cancelled():
            sleeping.result()  # what a failing sleep raised is the test's to see

    async def _wait_for_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
