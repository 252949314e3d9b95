"""Responses ``input`` items -> Chat Completions ``messages``.

Mapping rules (contract section 8.4), applied in input order:

* ``instructions`` (a string) -> a leading ``{"role": system_role, "content": ...}``.
* A string ``input`` -> one user message.
* Messages (``type: "message"`` or the easy form with only ``role`` and ``content``):
  ``user`` keeps its role; ``system`` and ``developer`` become ``system_role``;
  ``assistant`` output messages become one assistant message whose ``content`` is the
  ``output_text`` parts joined, and whose ``refusal`` is the ``refusal`` parts joined.
  Content parts map one to one: ``input_text`` -> ``text``, ``input_image`` ->
  ``image_url{url, detail}``, ``input_file`` -> ``file{file_data | file_id, filename}``,
  ``input_audio`` unchanged. A list holding exactly one text part becomes a plain string
  (the form every server accepts). Ids, ``status`` and ``phase`` are dropped.
* ``function_call`` / ``custom_tool_call`` items join the assistant message just before
  them (the model's text and its calls were one Chat message), else open a new one with
  ``content: null``: ``tool_calls[] = {"id": call_id, "type": "function", "function":
  {"name", "arguments"}}``, where a custom call's arguments are ``{"input": <input>}``.
* ``function_call_output`` / ``custom_tool_call_output`` -> ``{"role": "tool",
  "tool_call_id", "content"}``; list outputs have their text parts joined with a newline,
  and image or file parts are refused (Chat tool messages hold text only).
* ``reasoning`` items: their text goes onto the next assistant message as
  ``reasoning_field``. A user, system or developer message in between discards it. An
  assistant message with tool calls but no reasoning item takes the text the core
  recovered for one of its call ids (``recovered_reasoning``).
* Hosted-tool items (``web_search_call``, ``mcp_call``, ...) are refused, or skipped when
  the bridge drops unsupported tools; any other item type is refused.

Tool pairing is checked first, over the whole input, in two deterministic passes: the
first output (in input order) whose ``call_id`` has no earlier call, then the first call
(in input order) that no later output answers. Both are 400s with ``param: "input"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._errors import ApiError
from .reasoning import reasoning_text

__all__ = ["build_messages", "check_tool_pairing", "is_hosted_item_type"]

NO_CALL_FOR_OUTPUT = "No tool call found for function call output with call_id {}."
NO_OUTPUT_FOR_CALL = "No tool output found for function call {}."

_CALLS = frozenset({"function_call", "custom_tool_call"})
_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})

_encoder = msgspec.json.Encoder()


def _invalid(message: str, param: str = "input", code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _missing(index: int, key: str) -> ApiError:
    return _invalid(
        f"Missing required parameter: 'input[{index}].{key}'.", code="missing_required_parameter"
    )


def is_hosted_item_type(kind: str) -> bool:
    """Whether an item type belongs to a hosted tool (``*_call``, ``*_call_output``, mcp)."""
    if kind in _CALLS or kind in _OUTPUTS:
        return False
    return kind.endswith(("_call", "_call_output")) or kind.startswith("mcp_")


def _item_type(item: Mapping[str, Any]) -> str:
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"
    return kind if isinstance(kind, str) else ""


def _call_id(item: Mapping[str, Any], index: int) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _missing(index, "call_id")
    return call_id


def check_tool_pairing(items: list[dict[str, Any]]) -> None:
    """Refuse outputs without an earlier call and calls without a later output."""
    called: set[str] = set()
    for index, item in enumerate(items):
        kind = _item_type(item)
        if kind in _CALLS:
            called.add(_call_id(item, index))
        elif kind in _OUTPUTS and (call_id := _call_id(item, index)) not in called:
            raise _invalid(NO_CALL_FOR_OUTPUT.format(call_id))
    answered = {item["call_id"] for item in items if _item_type(item) in _OUTPUTS}
    for item in items:
        if _item_type(item) in _CALLS and item["call_id"] not in answered:
            raise _invalid(NO_OUTPUT_FOR_CALL.format(item["call_id"]))


def _media_part(part: Mapping[str, Any], kind: str, index: int) -> dict[str, Any]:
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _invalid(
                f"input[{index}]: input_image needs an image_url; file_id is not supported."
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url") is not None:
            raise _invalid(f"input[{index}]: input_file with file_url is not supported.")
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
        return {"type": "file", "file": file}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    raise _invalid(f"input[{index}]: content part type {kind!r} is not supported.")


def _content(content: Any, index: int, *, allow_media: bool) -> str | list[dict[str, Any]]:
    """Message content as Chat content: a string, or a list of Chat parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _missing(index, "content")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif allow_media and isinstance(kind, str):
            parts.append(_media_part(part, kind, index))
        else:
            raise _invalid(f"input[{index}]: content part type {kind!r} is not supported here.")
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _assistant_content(content: Any, index: int) -> tuple[str | None, str | None]:
    """(text, refusal) of an assistant message's content."""
    if isinstance(content, str) or content is None:
        return content, None
    if not isinstance(content, list):
        raise _missing(index, "content")
    texts: list[str] = []
    refusals: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            refusals.append(part["refusal"])
        else:
            raise _invalid(f"input[{index}]: assistant content part {kind!r} is not supported.")
    return ("".join(texts) if texts else None), ("".join(refusals) if refusals else None)


def _tool_output(output: Any, index: int) -> str:
    """A tool output as the text of a Chat tool message."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts: list[str] = []
        for part in output:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
                raise _invalid(
                    f"input[{index}]: a tool output part of type {kind!r} cannot be sent to a "
                    "Chat Completions upstream; tool messages hold text only."
                )
            texts.append(part["text"])
        return "\n".join(texts)
    if output is None:
        raise _missing(index, "output")
    return _encoder.encode(output).decode()


def _tool_call(item: Mapping[str, Any], kind: str, index: int) -> dict[str, Any]:
    name = item.get("name")
    if not isinstance(name, str):
        raise _missing(index, "name")
    if kind == "custom_tool_call":
        value = item.get("input")
        if not isinstance(value, str):
            raise _missing(index, "input")
        arguments = _encoder.encode({"input": value}).decode()
    elif isinstance(item.get("arguments"), str):
        arguments = item["arguments"]
    else:
        raise _missing(index, "arguments")
    function = {"name": name, "arguments": arguments}
    return {"id": item["call_id"], "type": "function", "function": function}


class _MessageBuilder:
    """Folds input items into Chat messages; holds the state of one translation."""

    def __init__(
        self,
        *,
        system_role: str,
        reasoning_field: str,
        recovered_reasoning: Mapping[str, str] | None,
        drop_hosted_items: bool,
    ) -> None:
        self.messages: list[dict[str, Any]] = []
        self._system_role = system_role
        self._reasoning_field = reasoning_field
        self._recovered = recovered_reasoning or {}
        self._drop_hosted = drop_hosted_items
        self._pending_reasoning: str | None = None
        self._open_assistant: dict[str, Any] | None = None

    def add_system(self, text: str) -> None:
        self.messages.append({"role": self._system_role, "content": text})

    def add_item(self, item: dict[str, Any], index: int) -> None:
        kind = _item_type(item)
        if kind == "message":
            self._add_message(item, index)
        elif kind == "reasoning":
            self._add_reasoning(item)
        elif kind in _CALLS:
            self._add_call(item, kind, index)
        elif kind in _OUTPUTS:
            content = _tool_output(item.get("output"), index)
            self.messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": content}
            )
            self._open_assistant = None
        elif not (self._drop_hosted and is_hosted_item_type(kind)):
            raise _invalid(
                f"input[{index}]: items of type {kind!r} are not supported by the "
                "Chat Completions bridge."
            )

    def _add_reasoning(self, item: Mapping[str, Any]) -> None:
        text = reasoning_text(item)
        if text:
            pending = self._pending_reasoning
            self._pending_reasoning = f"{pending}\n{text}" if pending else text
        self._open_assistant = None

    def _add_message(self, item: Mapping[str, Any], index: int) -> None:
        role = item.get("role")
        content = item.get("content")
        if role == "assistant":
            text, refusal = _assistant_content(content, index)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if refusal is not None:
                message["refusal"] = refusal
            self._start_assistant(message)
            return
        if role == "user":
            message = {"role": "user", "content": _content(content, index, allow_media=True)}
        elif role in ("system", "developer"):
            message = {
                "role": self._system_role,
                "content": _content(content, index, allow_media=False),
            }
        else:
            raise _invalid(f"input[{index}]: message role {role!r} is not supported.")
        self.messages.append(message)
        self._pending_reasoning = None
        self._open_assistant = None

    def _start_assistant(self, message: dict[str, Any]) -> None:
        if self._pending_reasoning is not None:
            message[self._reasoning_field] = self._pending_reasoning
            self._pending_reasoning = None
        self.messages.append(message)
        self._open_assistant = message

    def _add_call(self, item: Mapping[str, Any], kind: str, index: int) -> None:
        call = _tool_call(item, kind, index)
        message = self._open_assistant
        if message is None:
            message = {"role": "assistant", "content": None}
            self._start_assistant(message)
        message.setdefault("tool_calls", []).append(call)
        if self._reasoning_field not in message and call["id"] in self._recovered:
            message[self._reasoning_field] = self._recovered[call["id"]]


def build_messages(
    instructions: Any,
    input_value: Any,
    *,
    system_role: str,
    reasoning_field: str,
    recovered_reasoning: Mapping[str, str] | None,
    drop_hosted_items: bool,
) -> list[dict[str, Any]]:
    """The Chat ``messages`` for a Responses ``instructions`` + full ``input``."""
    builder = _MessageBuilder(
        system_role=system_role,
        reasoning_field=reasoning_field,
        recovered_reasoning=recovered_reasoning,
        drop_hosted_items=drop_hosted_items,
    )
    if isinstance(instructions, str) and instructions:
        builder.add_system(instructions)
    elif instructions is not None and not isinstance(instructions, (str, list)):
        raise _invalid("'instructions' must be a string.", param="instructions")
    items: list[Any] = list(instructions) if isinstance(instructions, list) else []
    if isinstance(input_value, str):
        items.append({"role": "user", "content": input_value})
    elif isinstance(input_value, list):
        items.extend(input_value)
    elif input_value is not None:
        raise _invalid("'input' must be a string or an array of items.")
    if not all(isinstance(item, dict) for item in items):
        bad = next(i for i, item in enumerate(items) if not isinstance(item, dict))
        raise _invalid(f"input[{bad}] must be an object.")
    check_tool_pairing(items)
    for index, item in enumerate(items):
        builder.add_item(item, index)
    return builder.messages
