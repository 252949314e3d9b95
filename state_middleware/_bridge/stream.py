"""A Chat Completions event stream -> the Responses event stream, one chunk at a time.

:class:`ChatStreamTranslator` is pure: the core hands it the payload of each Chat SSE
``data:`` field and sends on whatever Responses frames come back. Nothing is held back:
every text, reasoning or argument delta becomes a Responses delta event at once, and the
final texts are the concatenated deltas. Its ``repeat`` and ``repeat_frames`` are the fast
path of ``repeat.RepeatedChunks``, for the chunks that repeat the last one's shape.

Event order (contract section 6.3), ``sequence_number`` counting from 0:

* :meth:`~ChatStreamTranslator.start`: ``response.created``, ``response.in_progress``.
* Reasoning (``delta.reasoning_content`` or ``delta.reasoning``): ``output_item.added``
  (reasoning) -> ``content_part.added`` (``reasoning_text``) -> ``reasoning_text.delta``
  x N -> ``reasoning_text.done`` -> ``content_part.done`` -> ``output_item.done``.
* Text (``delta.content``): the same framing around ``output_text.delta`` with an
  ``output_text`` part; ``delta.refusal`` streams a ``refusal`` part of the same message.
* Tool calls (``delta.tool_calls[]``, routed by their Chat ``index``, so interleaved
  parallel calls become distinct items): ``output_item.added`` (``function_call``) ->
  ``function_call_arguments.delta`` x N -> ``function_call_arguments.done`` ->
  ``output_item.done``. A call of a ``custom`` tool of the request becomes a
  ``custom_tool_call``; its input is only known once the JSON arguments are whole, so it
  gets one ``custom_tool_call_input.delta`` and ``.done`` when the call closes.
* An item closes when the next kind of item starts, and every open item closes when the
  choice's ``finish_reason`` arrives. The terminal event (``response.completed``, or
  ``response.incomplete`` for ``length``/``content_filter``) waits for ``[DONE]`` (or the
  end of the body after a ``finish_reason``), because the usage chunk comes after the
  finish reason.
* A chunk carrying ``error``, an undecodable chunk, or a body that ends before any
  ``finish_reason`` -> ``error`` (nested form, with ``code``/``message``/``param`` also
  copied to the top level) then ``response.failed``. The upstream message is kept; its
  code too on the ``error`` event, while ``response.error.code`` falls back to
  ``server_error`` unless the code is one the Responses schema allows.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import msgspec

from .._sse import format_frame
from .chunk_shape import single_text
from .reasoning import new_item_id
from .repeat import RepeatedChunks
from .response import (
    custom_tool_names,
    failed_response,
    finished_response,
    incomplete_reason,
    map_usage,
)
from .stream_parts import (
    ChatChoice,
    StreamedItem,
    ToolCallDelta,
    content_part,
    decode_chunk,
    delta_format,
)

__all__ = ["STREAM_CUT_MESSAGE", "ChatStreamTranslator"]

STREAM_CUT_MESSAGE = "The upstream chat completion stream ended before it was complete."
INVALID_CHUNK_MESSAGE = "The upstream sent a chat completion chunk that is not valid."
UPSTREAM_ERROR_MESSAGE = "The upstream chat completion stream reported an error."

#: the codes ``response.error.code`` may hold (SPEC ``ResponseErrorCode``, the ones a Chat
#: upstream can cause); any other upstream code is kept on the ``error`` event only
RESPONSE_ERROR_CODES = frozenset(
    {"server_error", "rate_limit_exceeded", "invalid_prompt", "vector_store_timeout"}
)

_encode = msgspec.json.Encoder().encode

#: how many times one stream may try to learn a chunk shape for ``repeat`` (an upstream
#: whose chunks differ in more than their text never gives a template that fits)
_LEARN_LIMIT = 16


def _frame(payload: dict[str, Any]) -> bytes:
    return format_frame(payload["type"], _encode(payload))


class ChatStreamTranslator:
    """Translate one Chat Completions stream into Responses SSE frames."""

    def __init__(self, *, base: Mapping[str, Any]) -> None:
        self._base = dict(base)
        self._custom_names = custom_tool_names(base.get("tools"))
        # The stream's sequence numbers, shared with the fast path.
        self._sequence = itertools.count()
        self._output: list[dict[str, Any] | StreamedItem] = []
        self._text_item: StreamedItem | None = None  # the open reasoning or message item
        self._calls: dict[int, StreamedItem] = {}  # open tool calls by Chat index
        self._finish_reason: str | None = None
        self._finished = False
        self._usage: dict[str, Any] | None = None
        self._started = False
        self._delta_key: tuple[str, int, str] | None = None
        self._delta_format = b""
        #: the fast path, for frames that repeat the last chunk with other text
        self.repeated = RepeatedChunks(self._sequence)
        # Its methods, as ours: bound once, with no call of ours around them. The bridge's
        # hot path (``turn.ChatReplyTranslator``) calls them on ``repeated`` itself.
        self.repeat = self.repeated.repeat
        self.repeat_frames = self.repeated.repeat_frames
        self._learning = _LEARN_LIMIT  # chunks this stream may still learn a template from
        #: chunks decoded as JSON (the slow path); every other delta took ``repeat``
        self.decoded = 0
        self._result: dict[str, Any] | None = None

    @property
    def result(self) -> dict[str, Any] | None:
        """The response object of the terminal event, once it was emitted."""
        return self._result

    @property
    def terminal_emitted(self) -> bool:
        """Whether the terminal event (completed, incomplete or failed) was emitted."""
        return self._result is not None

    def _event(self, payload: dict[str, Any]) -> bytes:
        payload["sequence_number"] = next(self._sequence)
        return _frame(payload)

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress`` (once; later calls: ``b""``)."""
        if self._started:
            return b""
        self._started = True
        created = self._event({"type": "response.created", "response": self._base})
        return created + self._event({"type": "response.in_progress", "response": self._base})

    def feed(self, data: bytes, frame: bytes = b"") -> bytes:
        """Translate the payload of one Chat ``data:`` field (a chunk or ``[DONE]``).

        ``frame``, the whole frame ``data`` came in, lets ``repeat`` learn how the
        upstream frames its chunks (``data:`` with or without a space, ``\r\n`` line
        ends); without it they are taken to be ``data: <payload>\n\n``.
        """
        out = self.start()
        self.repeated.head = b""  # drops the fast path's template (see ``RepeatedChunks``)
        if self._result is not None:
            return out
        if data[:1] != b"{" and data.strip() == b"[DONE]":
            return out + self._complete()
        self.decoded += 1
        try:
            chunk = decode_chunk(data)
        except msgspec.DecodeError:
            return out + self._fail("server_error", INVALID_CHUNK_MESSAGE)
        if chunk.error is not None:
            return out + self._fail_upstream(chunk.error)
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices or ():
            if choice.index == 0:
                out += self._choice(choice)
        state = self._text_item
        if self._learning and state is not None and (found := single_text(chunk)):
            self._learning -= 1
            self.repeated.learn(data, frame, *found, state.parts[-1][1], self._delta_format)
        return out

    def finish(self) -> bytes:
        """End of the upstream body: terminal event if the choice finished, else failure."""
        out = self.start()
        self.repeated.head = b""  # drops the fast path's template (see ``RepeatedChunks``)
        if self._result is not None:
            return out
        if self._finished:
            return out + self._complete()
        return out + self._fail("server_error", STREAM_CUT_MESSAGE)

    # -- deltas -------------------------------------------------------------------------

    def _choice(self, choice: ChatChoice) -> bytes:
        out = b""
        delta = choice.delta
        if delta is not None:
            thought = delta.reasoning_content or delta.reasoning
            if isinstance(thought, str) and thought:
                out += self._content_delta("reasoning", "reasoning_text", thought)
            if delta.content:
                out += self._content_delta("message", "output_text", delta.content)
            if delta.refusal:
                out += self._content_delta("message", "refusal", delta.refusal)
            for call in delta.tool_calls or ():
                out += self._call_delta(call)
        if choice.finish_reason is not None:
            self._finish_reason = choice.finish_reason
            self._finished = True
            out += self._close_text() + self._close_calls()
        return out

    def _add_item(self, kind: str, item: dict[str, Any]) -> tuple[StreamedItem, bytes]:
        state = StreamedItem(kind, item["id"], len(self._output))
        self._output.append(state)
        added = {"type": "response.output_item.added", "output_index": state.output_index}
        added["item"] = item
        return state, self._event(added)

    def _part_event(self, kind: str, state: StreamedItem, part: dict[str, Any]) -> bytes:
        event = {"type": kind, **state.ids(), "content_index": len(state.parts) - 1}
        event["part"] = part
        return self._event(event)

    def _content_delta(self, item_kind: str, part_type: str, text: str) -> bytes:
        out = b""
        state = self._text_item
        if state is None or state.kind != item_kind:
            out += self._close_text() + self._close_calls()
            if item_kind == "reasoning":
                item = {"id": new_item_id("rs"), "type": "reasoning", "summary": [], "content": []}
            else:
                item = {"id": new_item_id("msg"), "type": "message", "status": "in_progress"}
                item.update(role="assistant", content=[])
            state, added = self._add_item(item_kind, item)
            self._text_item = state
            out += added
        if not state.parts or state.parts[-1][0] != part_type:
            out += self._closecontent_part(state)
            state.parts.append((part_type, []))
            out += self._part_event(
                "response.content_part.added", state, content_part(part_type, "")
            )
        state.parts[-1][1].append(text)
        key = (state.item_id, len(state.parts) - 1, part_type)
        if key != self._delta_key:
            self._delta_key = key
            self._delta_format = delta_format(state, part_type)
        # Deltas are most of a stream: their frame is a template with two holes.
        return out + self._delta_format % (_encode(text), next(self._sequence))

    def _call_index(self, call: ToolCallDelta) -> int:
        if call.index is not None:
            return call.index
        # A server that omits the index: a new id starts a new call, else the last one.
        known = {state.call_id: i for i, state in self._calls.items()}
        if call.id is not None and call.id not in known:
            return max(self._calls, default=-1) + 1
        return known.get(call.id or "", max(self._calls, default=0))

    def _open_call(self, index: int, call: ToolCallDelta) -> tuple[StreamedItem, bytes]:
        out = self._close_text()
        name = call.function.name if call.function and call.function.name else ""
        call_id = call.id or new_item_id("call")
        custom = name in self._custom_names
        if custom:
            item = {"id": new_item_id("ctc"), "type": "custom_tool_call", "status": "in_progress"}
            item.update(call_id=call_id, name=name, input="")
        else:
            item = {"id": new_item_id("fc"), "type": "function_call", "status": "in_progress"}
            item.update(arguments="", call_id=call_id, name=name)
        state, added = self._add_item("call", item)
        state.name, state.call_id, state.custom = name, call_id, custom
        state.parts.append(("arguments", []))
        self._calls[index] = state
        return state, out + added

    def _call_delta(self, call: ToolCallDelta) -> bytes:
        index = self._call_index(call)
        state = self._calls.get(index)
        out = b""
        if state is None:
            state, out = self._open_call(index, call)
        function = call.function
        if function is None:
            return out
        if function.name and not state.name:  # a name that only came after the id
            state.name = function.name
        if not function.arguments:
            return out
        state.parts[0][1].append(function.arguments)
        if state.custom:  # the input is only known once the JSON arguments are whole
            return out
        event = {"type": "response.function_call_arguments.delta", **state.ids()}
        event["delta"] = function.arguments
        return out + self._event(event)

    # -- closing ------------------------------------------------------------------------

    def _closecontent_part(self, state: StreamedItem) -> bytes:
        if not state.parts:
            return b""
        part_type = state.parts[-1][0]
        text = state.text()
        done = {"type": "", **state.ids(), "content_index": len(state.parts) - 1}
        if part_type == "refusal":
            done.update(type="response.refusal.done", refusal=text)
        elif part_type == "reasoning_text":
            done.update(type="response.reasoning_text.done", text=text)
        else:
            done.update(type="response.output_text.done", text=text, logprobs=[])
        out = self._event(done)
        return out + self._part_event(
            "response.content_part.done", state, content_part(part_type, text)
        )

    def _item_done(self, state: StreamedItem, item: dict[str, Any]) -> bytes:
        self._output[state.output_index] = item
        event = {"type": "response.output_item.done", "output_index": state.output_index}
        event["item"] = item
        return self._event(event)

    def _close_text(self) -> bytes:
        state, self._text_item = self._text_item, None
        if state is None:
            return b""
        return self._closecontent_part(state) + self._item_done(state, state.final(self._status()))

    def _close_calls(self) -> bytes:
        out = b""
        for state in self._calls.values():
            item = state.final(self._status())
            if not state.custom:
                done = {"type": "response.function_call_arguments.done", **state.ids()}
                done["arguments"] = item["arguments"]
                out += self._event(done)
            else:
                if item["input"]:
                    delta = {"type": "response.custom_tool_call_input.delta", **state.ids()}
                    delta["delta"] = item["input"]
                    out += self._event(delta)
                done = {"type": "response.custom_tool_call_input.done", **state.ids()}
                done["input"] = item["input"]
                out += self._event(done)
            out += self._item_done(state, item)
        self._calls.clear()
        return out

    def _status(self) -> str:
        return "incomplete" if incomplete_reason(self._finish_reason) else "completed"

    # -- terminal -----------------------------------------------------------------------

    def _final_output(self) -> list[dict[str, Any]]:
        """Every item so far; one cut off mid-stream is reported ``incomplete``."""
        return [
            item if isinstance(item, dict) else item.final("incomplete") for item in self._output
        ]

    def _complete(self) -> bytes:
        out = self._close_text() + self._close_calls()
        reason = incomplete_reason(self._finish_reason)
        usage = map_usage(self._usage)
        response = finished_response(
            self._base, output=self._final_output(), usage=usage, reason=reason
        )
        kind = "response.incomplete" if reason else "response.completed"
        self._result = response
        return out + self._event({"type": kind, "response": response})

    def _fail_upstream(self, error: Any) -> bytes:
        message, code = error, None
        if isinstance(error, dict):
            message, code = error.get("message"), error.get("code")
        if not isinstance(message, str) or not message:
            message = UPSTREAM_ERROR_MESSAGE
        return self._fail(code if isinstance(code, str) and code else "server_error", message)

    def _fail(self, code: str, message: str) -> bytes:
        error = {"type": "server_error", "code": code, "message": message, "param": None}
        event = {"type": "error", "error": error, "code": code, "message": message, "param": None}
        usage = map_usage(self._usage)
        output = self._final_output()
        failed_code = code if code in RESPONSE_ERROR_CODES else "server_error"
        response = failed_response(
            self._base, output=output, usage=usage, code=failed_code, message=message
        )
        self._result = response
        return self._event(event) + self._event({"type": "response.failed", "response": response})
