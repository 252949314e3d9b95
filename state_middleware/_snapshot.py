"""The response object so far, folded from the recorded events of a turn.

A background response runs without its client, so ``GET /v1/responses/{id}`` has to show
it as it stands: ``queued``, ``in_progress`` with the output produced so far, then the
final object; a cancelled one keeps its partial output. :class:`ResponseSnapshot` is fed
the payload of each SSE ``data`` field of the turn, in order, and builds the object the
openai SDK's stream accumulator would hold at that point (contract section 6.4):

* every event carrying a ``response`` (``created``, ``queued``, ``in_progress`` and the
  terminal ``completed``, ``incomplete``, ``failed``) replaces the object; the output
  built so far stays unless that response brings a non-empty ``output`` of its own;
* ``output_item.added`` opens an item at ``output_index``, ``content_part.added`` and
  ``reasoning_summary_part.added`` open a part in it, text and argument deltas are
  appended to the field they stream, their ``.done`` events set its final value, and
  ``output_item.done`` replaces the item. An item still open shows what it has so far,
  with the status it was added with (``in_progress``).

Pure and IO-free, and linear in the events: each payload is decoded once into a small
view, deltas are kept as lists of pieces and joined only when the object is produced,
and finished items and the response's own fields stay raw JSON that is spliced back in
unchanged. Unknown event types, malformed payloads, events for items that were never
added and everything after the terminal event are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

__all__ = ["ResponseSnapshot"]

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _EventView(msgspec.Struct):
    """The fields of a Responses stream event that the fold reads."""

    type: str = ""
    response: msgspec.Raw = msgspec.Raw(b"")
    item: msgspec.Raw = msgspec.Raw(b"")
    part: msgspec.Raw = msgspec.Raw(b"")
    annotation: msgspec.Raw = msgspec.Raw(b"")
    output_index: int = -1
    content_index: int = -1
    summary_index: int = -1
    delta: str | None = None
    text: str | None = None
    refusal: str | None = None
    arguments: str | None = None
    input: str | None = None
    code: str | None = None


_decode_event = msgspec.json.Decoder(_EventView).decode
#: one level deep: the response's keys, each value kept as its raw JSON
_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw] | None).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_OPEN_BRACE = ord("{")


def _is_object(raw: msgspec.Raw) -> bool:
    return len(raw) > 0 and memoryview(raw)[0] == _OPEN_BRACE


def _part(part_type: str, key: str) -> dict[str, Any]:
    """An empty content part, for a delta whose ``content_part.added`` is missing."""
    if part_type == "output_text":
        return {"type": part_type, key: "", "annotations": []}
    return {"type": part_type, key: ""}


#: events that stream a field of a content part (``content_index``): the field, and the
#: part a delta opens when its part was never added
_CONTENT_TEXT = {
    "response.output_text.delta": ("text", "output_text"),
    "response.output_text.done": ("text", "output_text"),
    "response.refusal.delta": ("refusal", "refusal"),
    "response.refusal.done": ("refusal", "refusal"),
    "response.reasoning_text.delta": ("text", "reasoning_text"),
    "response.reasoning_text.done": ("text", "reasoning_text"),
}
#: events that stream a string field of the item itself
_ITEM_TEXT = {
    "response.function_call_arguments.delta": "arguments",
    "response.function_call_arguments.done": "arguments",
    "response.custom_tool_call_input.delta": "input",
    "response.custom_tool_call_input.done": "input",
    "response.mcp_call_arguments.delta": "arguments",
    "response.mcp_call_arguments.done": "arguments",
    "response.code_interpreter_call_code.delta": "code",
    "response.code_interpreter_call_code.done": "code",
}
_SUMMARY_TEXT = frozenset(
    {"response.reasoning_summary_text.delta", "response.reasoning_summary_text.done"}
)


class _Text:
    """A string being streamed, as the pieces received so far."""

    __slots__ = ("pieces",)

    def __init__(self, start: Any) -> None:
        self.pieces: list[str] = [start] if isinstance(start, str) and start else []

    def value(self) -> str:
        pieces = self.pieces
        if len(pieces) > 1:  # joined once; later calls only join what came after
            pieces[:] = ["".join(pieces)]
        return pieces[0] if pieces else ""


class _OpenPart:
    """A content or summary part being streamed."""

    __slots__ = ("key", "part", "text")

    def __init__(self, part: dict[str, Any]) -> None:
        self.part = part
        self.key = "refusal" if part.get("type") == "refusal" else "text"
        self.text = _Text(part.get(self.key))

    def render(self) -> dict[str, Any]:
        return {**self.part, self.key: self.text.value()}


def _open_parts(parts: Any) -> dict[int, _OpenPart]:
    if not isinstance(parts, list):
        return {}
    return {i: _OpenPart(part) for i, part in enumerate(parts) if isinstance(part, dict)}


class _OpenItem:
    """An output item between its ``output_item.added`` and ``output_item.done``."""

    __slots__ = ("content", "fields", "item", "summary")

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item
        self.content = _open_parts(item.get("content"))
        self.summary = _open_parts(item.get("summary"))
        self.fields: dict[str, _Text] = {}

    def field(self, key: str) -> _Text:
        text = self.fields.get(key)
        if text is None:
            text = self.fields[key] = _Text(self.item.get(key))
        return text

    def render(self) -> dict[str, Any]:
        item = dict(self.item)
        if self.content:
            item["content"] = [part.render() for _, part in sorted(self.content.items())]
        if self.summary:
            item["summary"] = [part.render() for _, part in sorted(self.summary.items())]
        for key, text in self.fields.items():
            item[key] = text.value()
        return item


class ResponseSnapshot:
    """Fold a turn's stream events into the response object as it stands.

    ``base`` is the response object (JSON) before any event, such as the ``queued``
    object a background turn starts with; the first event carrying a ``response``
    replaces it. Feed each event payload with :meth:`feed`, then ask for the object with
    :meth:`response` (a fresh ``dict``) or :meth:`response_json` (JSON bytes), as often as
    needed. Raises ``msgspec.DecodeError`` or ``msgspec.ValidationError`` when ``base``
    is not a JSON object.
    """

    def __init__(self, base: bytes) -> None:
        self._fields: dict[str, msgspec.Raw] = {}
        self._raw = b""
        self._status = ""
        self._items: dict[int, _OpenItem | msgspec.Raw] = {}
        #: whether ``_raw`` (a terminal response with its own output) is the object as is
        self._final = False
        self._finished = False
        self._set_response(bytes(base), _decode_fields(base))

    @property
    def finished(self) -> bool:
        """Whether the terminal event was fed (later events are ignored)."""
        return self._finished

    @property
    def status(self) -> str:
        """The ``status`` of the last response object seen (``""`` if it had none)."""
        return self._status

    def feed_all(self, payloads: Iterable[bytes]) -> None:
        """Feed each payload in turn."""
        for payload in payloads:
            self.feed(payload)

    def feed(self, payload: bytes) -> None:
        """Fold in one event payload (the JSON of one SSE ``data`` field)."""
        if self._finished:
            return
        try:
            event = _decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        kind = event.type
        if kind in _CONTENT_TEXT:
            self._content_text(event, *_CONTENT_TEXT[kind])
        elif kind in _ITEM_TEXT:
            item = self._items.get(event.output_index)
            if isinstance(item, _OpenItem):
                self._set_text(item.field(_ITEM_TEXT[kind]), event, _ITEM_TEXT[kind])
        elif kind in _SUMMARY_TEXT:
            self._summary_text(event)
        elif kind == "response.output_item.added":
            self._item_added(event)
        elif kind == "response.output_item.done":
            if event.output_index >= 0 and _is_object(event.item):
                self._items[event.output_index] = event.item
        elif kind in ("response.content_part.added", "response.content_part.done"):
            self._part(event, "content", event.content_index)
        elif kind in (
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_part.done",
        ):
            self._part(event, "summary", event.summary_index)
        elif kind == "response.output_text.annotation.added":
            self._annotation(event)
        elif _is_object(event.response):
            self._replace_response(event)

    def response(self, *, status: str | None = None) -> dict[str, Any]:
        """The response object so far, optionally with another ``status`` (say
        ``cancelled``); ``output`` as accumulated, every other field as last seen."""
        value: dict[str, Any] = _decode_any(self.response_json(status=status))
        return value

    def response_json(self, *, status: str | None = None) -> bytes:
        """:meth:`response` as JSON bytes."""
        if self._final and status is None:
            return self._raw
        fields: dict[str, Any] = dict(self._fields)
        fields["output"] = [
            item.render() if isinstance(item, _OpenItem) else item
            for _, item in sorted(self._items.items())
        ]
        if status is not None:
            fields["status"] = status
        return _encode(fields)

    # -- events -------------------------------------------------------------------------

    def _set_response(self, raw: bytes, fields: dict[str, msgspec.Raw]) -> bool:
        """Take ``fields`` as the object; returns whether it brought its own output."""
        self._fields, self._raw = fields, raw
        status = fields.get("status")
        self._status = ""
        if status is not None:
            value = _decode_any(status)
            self._status = value if isinstance(value, str) else ""
        output = fields.get("output")
        try:
            items = _decode_raw_list(output) if output is not None else None
        except msgspec.ValidationError:
            items = None
        if not items:
            return False
        self._items = dict(enumerate(items))
        return True

    def _replace_response(self, event: _EventView) -> None:
        raw = bytes(event.response)
        try:
            fields = _decode_fields(raw)
        except msgspec.ValidationError:
            return
        own_output = self._set_response(raw, fields)
        if event.type in TERMINAL_EVENTS:
            self._finished = True
            self._final = own_output

    def _item_added(self, event: _EventView) -> None:
        if event.output_index < 0 or not _is_object(event.item):
            return
        item = _decode_any(event.item)
        if isinstance(item, dict):
            self._items[event.output_index] = _OpenItem(item)

    def _part(self, event: _EventView, where: str, index: int) -> None:
        item = self._items.get(event.output_index)
        if not isinstance(item, _OpenItem) or index < 0 or not _is_object(event.part):
            return
        part = _decode_any(event.part)
        if isinstance(part, dict):
            parts = item.content if where == "content" else item.summary
            parts[index] = _OpenPart(part)

    def _annotation(self, event: _EventView) -> None:
        item = self._items.get(event.output_index)
        if not isinstance(item, _OpenItem) or not _is_object(event.annotation):
            return
        part = item.content.get(event.content_index)
        if part is not None:
            annotations = part.part.get("annotations")
            if not isinstance(annotations, list):
                annotations = part.part["annotations"] = []
            annotations.append(_decode_any(event.annotation))

    def _content_text(self, event: _EventView, key: str, part_type: str) -> None:
        item = self._items.get(event.output_index)
        if not isinstance(item, _OpenItem) or event.content_index < 0:
            return
        part = item.content.get(event.content_index)
        if part is None:
            part = item.content[event.content_index] = _OpenPart(_part(part_type, key))
        self._set_text(part.text, event, key)

    def _summary_text(self, event: _EventView) -> None:
        item = self._items.get(event.output_index)
        if not isinstance(item, _OpenItem) or event.summary_index < 0:
            return
        part = item.summary.get(event.summary_index)
        if part is None:
            part = item.summary[event.summary_index] = _OpenPart(_part("summary_text", "text"))
        self._set_text(part.text, event, "text")

    @staticmethod
    def _set_text(text: _Text, event: _EventView, key: str) -> None:
        """Append a delta event's ``delta``, or set a done event's final value."""
        if event.type.endswith(".delta"):
            if event.delta:
                text.pieces.append(event.delta)
            return
        value = getattr(event, key)
        if isinstance(value, str):
            text.pieces[:] = [value] if value else []
