"""A streamed, multi-turn conversation through the middleware, over a real socket.

Run ``python -m state_middleware.demo``. It wraps the stateless scripted upstream
(``state_middleware.testing.ScriptedResponsesApp``, which answers
``[<n> items] <last user text>``) in ``ResponsesStateMiddleware``, serves it with uvicorn
on 127.0.0.1, and talks to it with the official ``openai`` SDK: four streamed turns
chained by ``previous_response_id``, then ``retrieve``, ``input_items.list`` and a fork.
The growing ``[<n> items]`` shows the whole history reaching the stateless upstream.

Needs ``uvicorn`` and ``openai`` (``pip install state-middleware[test]``).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any

from . import ResponsesStateMiddleware
from .testing import ScriptedResponsesApp

__all__ = ["main"]

TURNS = [
    "Hi! My name is Ada.",
    "What did I just tell you?",
    "Please repeat this whole sentence back to me, one word at a time.",
    "Thanks, that is all.",
]
FORK_TEXT = "Actually, let's talk about something else."
MISSING_DEPENDENCIES = (
    "The demo needs uvicorn and the openai SDK: pip install 'state-middleware[test]'"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _item_text(item: Any) -> str:
    content = getattr(item, "content", None)
    if isinstance(content, str):
        return content
    return "".join(getattr(part, "text", "") for part in content or ())


def _streamed_turn(client: Any, text: str, previous_id: str | None) -> str:
    """Send one streamed turn, print its deltas as they arrive; return its id."""
    from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

    print(f"user      > {text}")
    print("assistant < ", end="", flush=True)
    response_id = ""
    stream = client.responses.create(
        model="scripted-model", input=text, previous_response_id=previous_id, stream=True
    )
    with stream:
        for event in stream:
            if isinstance(event, ResponseTextDeltaEvent):
                print(event.delta, end="", flush=True)
            elif isinstance(event, ResponseCompletedEvent):
                response_id = event.response.id
    print()
    print(f"            id={response_id} previous_response_id={previous_id}")
    return response_id


def _conversation(client: Any) -> list[str]:
    ids: list[str] = []
    for number, text in enumerate(TURNS, start=1):
        print(f"\n-- turn {number} " + "-" * 50)
        ids.append(_streamed_turn(client, text, ids[-1] if ids else None))
    return ids


def _inspect(client: Any, response_id: str) -> None:
    print("\n-- responses.retrieve(last turn) " + "-" * 33)
    stored = client.responses.retrieve(response_id)
    print(f"id={stored.id} status={stored.status}")
    print(f"previous_response_id={stored.previous_response_id}")
    print(f"output_text={stored.output_text!r}")

    print("\n-- responses.input_items.list(last turn) " + "-" * 25)
    items = client.responses.input_items.list(response_id, order="asc")
    for item in items.data:
        print(f"{item.role:>9}: {_item_text(item)}")
    print(f"({len(items.data)} input items)")


def main() -> int:
    try:
        import openai
        import uvicorn
    except ImportError:
        print(MISSING_DEPENDENCIES, file=sys.stderr)
        return 1

    app = ResponsesStateMiddleware(ScriptedResponsesApp(delay=0.02))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            print("uvicorn did not start", file=sys.stderr)
            return 1
        time.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}/v1"
    print(f"ResponsesStateMiddleware(ScriptedResponsesApp()) serving {base_url}")
    try:
        with openai.OpenAI(base_url=base_url, api_key="sk-demo", max_retries=0) as client:
            ids = _conversation(client)
            _inspect(client, ids[-1])
            print("\n-- fork from turn 2 " + "-" * 46)
            _streamed_turn(client, FORK_TEXT, ids[1])
    finally:
        server.should_exit = True
        thread.join(10)
    print("\ndone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
