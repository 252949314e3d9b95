"""A plain WebSocket client's side of WebSocket mode: frames out, turns in."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection

from ._sync import soon

__all__ = ["ROUTE", "create", "next_frame", "read_turn", "refusal", "text_of", "turn", "ws_url"]

ROUTE = "/v1/responses"
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def ws_url(base: str, path: str = ROUTE) -> str:
    return "ws" + base.removeprefix("http") + path


def create(**fields: Any) -> str:
    """A ``response.create`` frame (model ``m`` unless given)."""
    return json.dumps({"type": "response.create", "model": "m", **fields})


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    message = await soon(ws.recv(), "a frame from the server")
    assert isinstance(message, str), "events come as text frames"
    frame: dict[str, Any] = json.loads(message)  # so never a "[DONE]"
    return frame


async def read_turn(ws: ClientConnection) -> list[dict[str, Any]]:
    """The frames of one turn: through its terminal event, or one refusing ``error``."""
    frames = [await next_frame(ws)]
    while frames[-1]["type"] not in TERMINAL and frames[0]["type"] != "error":
        frames.append(await next_frame(ws))
    return frames


async def turn(ws: ClientConnection, **fields: Any) -> list[dict[str, Any]]:
    """Send a ``response.create`` and read its turn."""
    await ws.send(create(**fields))
    return await read_turn(ws)


def text_of(response: dict[str, Any]) -> str:
    """The assistant text of a response object."""
    output = response["output"]
    return "".join(
        part["text"] for item in output if item["type"] == "message" for part in item["content"]
    )


def refusal(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """The one ``error`` frame a refused turn gets."""
    assert [frame["type"] for frame in frames] == ["error"], frames
    return frames[0]
