"""The ASGI side of the Chat Completions bridge.

``chat_request_body`` turns a turn request (history already loaded) into the body of a
``POST {prefix}/chat/completions``; ``ChatReplyTranslator`` sits on the app's ``send``
and turns its Chat reply into the Responses reply the turn responder tees and stores,
exactly as if the app had spoken Responses itself. Streams are translated chunk by
chunk; nothing waits for the end of the stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import _defaults
from .._asgi import header, with_headers
from .._errors import ApiError
from .._record import join_arrays
from .._request import TurnRequest
from .._sse import SSEDecoder
from .errors import chat_error_to_response_error
from .replay import replay_events
from .request import build_chat_request
from .response import chat_completion_to_response
from .stream import ChatStreamTranslator

__all__ = ["BridgeOptions", "ChatReplyTranslator", "call_ids", "chat_request_body"]

_decoder = msgspec.json.Decoder()
_list_decoder = msgspec.json.Decoder(list[dict[str, Any]])
_encoder = msgspec.json.Encoder()
_CALL_TYPES = frozenset({"function_call", "custom_tool_call"})
_BODY_HEADERS = (b"content-length", b"content-type", b"transfer-encoding")
_JSON = b"application/json"
_EVENT_STREAM = b"text/event-stream; charset=utf-8"

Deliver = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    system_role: str = _defaults.SYSTEM_ROLE
    reasoning_field: str = _defaults.REASONING_FIELD
    max_tokens_field: str = _defaults.MAX_TOKENS_FIELD
    unsupported_tools: str = _defaults.UNSUPPORTED_TOOLS

    def __post_init__(self) -> None:
        # build_chat_request checks these too; failing at construction is kinder.
        build_chat_request(
            {"input": []},
            max_tokens_field=self.max_tokens_field,
            unsupported_tools=self.unsupported_tools,
        )


def expanded_input(request: TurnRequest, history: bytes | None) -> list[Any]:
    """The whole context as decoded items: stored history, then this request's input."""
    raw = join_arrays([history, request.input_items]) if history else request.input_items
    items: list[Any] = _list_decoder.decode(raw)
    return items


def call_ids(items: Sequence[Any]) -> list[str]:
    """Ids of the tool calls in a context, to look their reasoning up."""
    return [
        item["call_id"]
        for item in items
        if isinstance(item, dict)
        and item.get("type") in _CALL_TYPES
        and isinstance(item.get("call_id"), str)
    ]


def chat_request_body(
    request: TurnRequest,
    items: list[Any],
    options: BridgeOptions,
    recovered: Mapping[str, str],
) -> bytes:
    """The Chat Completions body for a turn. Raises ``ApiError``."""
    body = dict(request.body)
    body.pop("previous_response_id", None)
    body.pop("conversation", None)
    body.pop("background", None)
    body["input"] = items
    chat = build_chat_request(
        body,
        system_role=options.system_role,
        reasoning_field=options.reasoning_field,
        max_tokens_field=options.max_tokens_field,
        unsupported_tools=options.unsupported_tools,
        recovered_reasoning=recovered,
    )
    return _encoder.encode(chat)


class ChatReplyTranslator:
    """The chat app's reply, translated, goes to ``deliver``; :meth:`send` is the
    ``send`` the app gets (a bound method: cheaper to call than an instance)."""

    def __init__(
        self,
        base: dict[str, Any],
        deliver: Deliver,
        limit: int,
        *,
        direct: Callable[[], Deliver | None],
        wants_stream: bool,
    ) -> None:
        self.base = base
        # The client asked for a stream: a whole JSON completion is replayed as events.
        self.wants_stream = wants_stream
        self.deliver = deliver
        # Once the stream has started: a send for whole delta frames that need no
        # looking into (``direct()``, else ``deliver``).
        self.direct = direct
        self.deliver_plain = deliver
        self.limit = limit
        self.status = 0
        self.stream: ChatStreamTranslator | None = None
        # a stream the client did not ask for: translated, then answered as one JSON reply
        self.collected: ChatStreamTranslator | None = None
        self.decoder = SSEDecoder()
        self.held: list[bytes] = []
        self.held_size = 0
        self.overflow = False

    def send(self, message: Any) -> Awaitable[None]:
        stream = self.stream
        if stream is not None and message.get("more_body", False) and not self.decoder.pending:
            chunk: bytes = message.get("body", b"")
            # The usual chunk: one chat delta, or a few when the server's writes were
            # read together, translated and handed on at once, without a coroutine of
            # ours around it. Most are the last chunk with other text: the fast path.
            repeated = stream.repeated
            data = repeated.repeat(chunk)
            if data is not None:
                return self.deliver_plain(
                    {"type": "http.response.body", "body": data, "more_body": True}
                )
            if _single_data_line(chunk):
                data = stream.feed(chunk[6:-2], chunk)
                if not data:
                    return _nothing()
                return self.deliver({"type": "http.response.body", "body": data, "more_body": True})
            data, used = repeated.repeat_frames(chunk)
            if used == len(chunk) and data:
                return self.deliver_plain(
                    {"type": "http.response.body", "body": data, "more_body": True}
                )
            if used:  # the rest starts with a frame of another kind
                return self._stream_body(message, data, used)
        return self._handle(message)

    async def _handle(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body":
            if self.stream is not None:
                await self._stream_body(message)
            elif self.collected is not None:
                await self._collect_body(self.collected, message)
            else:
                await self._held_body(message)
        elif kind != "http.response.trailers":
            await self.deliver(message)

    async def _start(self, message: Any) -> None:
        self.status = message["status"]
        content_type = (header(message.get("headers", []), b"content-type") or b"").lower()
        if 200 <= self.status < 300 and content_type.startswith(b"text/event-stream"):
            if not self.wants_stream:  # a server that streams unasked
                self.collected = ChatStreamTranslator(base=self.base)
                return
            self.stream = ChatStreamTranslator(base=self.base)
            headers = with_headers(
                message.get("headers", []),
                _BODY_HEADERS,
                [(b"content-type", _EVENT_STREAM)],
            )
            await self.deliver({"type": "http.response.start", "status": 200, "headers": headers})
            await self._emit(self.stream.start(), more=True)
            self.deliver_plain = self.direct() or self.deliver

    async def _stream_body(self, message: Any, done: bytes = b"", used: int = 0) -> None:
        """Translate a body message of the stream; ``done``: the translation of its
        first ``used`` bytes, whole frames ``send`` already took."""
        assert self.stream is not None
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        stream = self.stream
        out = [done]
        plain = more  # only deltas of the last chunk's shape, which need no looking into
        repeat = stream.repeated.repeat
        for frame in self.decoder.frames(chunk[used:], last=not more):
            if frame.data is None:
                continue
            data = repeat(frame.raw)
            if data is None:
                plain = False
                data = stream.feed(frame.data, frame.raw)
            out.append(data)
        if not more:
            out.append(stream.finish())
        body = b"".join(out)
        if plain and body:
            await self.deliver_plain(
                {"type": "http.response.body", "body": body, "more_body": True}
            )
        else:
            await self._emit(body, more=more)

    async def _collect_body(self, stream: ChatStreamTranslator, message: Any) -> None:
        """A stream the client did not ask for: translated whole, then one JSON reply (a
        stream that fails is a 502 with the upstream's message; nothing is stored)."""
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if await self._over_limit(chunk):
            return
        for frame in self.decoder.frames(chunk, last=not more):
            if frame.data is not None:
                stream.feed(frame.data)
        if more:
            return
        stream.finish()
        response = stream.result
        assert response is not None  # finish() always ends the stream
        if response["status"] == "failed":
            error = ApiError(502, response["error"]["message"], code=response["error"]["code"])
            await self._reply(error.status, error.body())
        else:
            await self._reply(200, _encoder.encode(response))

    async def _over_limit(self, chunk: bytes) -> bool:
        """Count a chunk of a reply that is translated whole. Past the limit the client
        gets a 502 (once) and ``True``: the rest of the reply is dropped."""
        if self.overflow:
            return True
        self.held_size += len(chunk)
        if self.held_size <= self.limit:
            return False
        self.overflow = True
        self.held = []
        error = ApiError(502, "The upstream chat completion is too large to translate.")
        await self._reply(error.status, error.body())
        return True

    async def _held_body(self, message: Any) -> None:
        chunk: bytes = message.get("body", b"")
        if await self._over_limit(chunk):
            return
        self.held.append(chunk)
        if not message.get("more_body", False):
            await self._reply(*self._translate(b"".join(self.held)))

    async def _reply(self, status: int, reply: bytes, content_type: bytes = _JSON) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(reply)).encode())]
        await self.deliver({"type": "http.response.start", "status": status, "headers": headers})
        await self.deliver({"type": "http.response.body", "body": reply, "more_body": False})

    def _translate(self, body: bytes) -> tuple[int, bytes, bytes]:
        """Status, body and content type of the reply to a whole (non-stream) answer."""
        if not 200 <= self.status < 300:
            return self.status, chat_error_to_response_error(self.status, body), _JSON
        try:
            chat = _decoder.decode(body)
            if not isinstance(chat, dict):
                raise ApiError(502, "The upstream chat completion is not a JSON object.")
            response = chat_completion_to_response(chat, base=self.base)
        except msgspec.DecodeError:
            error = ApiError(502, "The upstream chat completion is not valid JSON.")
        except ApiError as exc:
            error = exc
        else:
            if self.wants_stream:  # a server that ignored ``stream: true``
                return 200, replay_events(self.base, response), _EVENT_STREAM
            return 200, _encoder.encode(response), _JSON
        return error.status, error.body(), _JSON

    async def _emit(self, data: bytes, *, more: bool) -> None:
        if data or not more:
            await self.deliver({"type": "http.response.body", "body": data, "more_body": more})


async def _nothing() -> None:
    """An awaitable for a chunk that produced nothing to send."""


def _single_data_line(chunk: bytes) -> bool:
    """``data: <payload>\n\n`` and nothing else: one chat chunk in one message."""
    return (
        chunk.startswith(b"data: ")
        and chunk.find(b"\n") == len(chunk) - 2
        and chunk.endswith(b"\n\n")
        and b"\r" not in chunk
    )
