"""Scripted upstreams for ``python -m uvicorn --factory tests.upstream_app:<name>``.

``combined`` serves ``/v1/chat/completions`` with ``ScriptedChatApp`` and everything else
with ``ScriptedResponsesApp`` (which answers 404 to any route but ``POST
/v1/responses``), so one process can stand behind a proxy in either mode.
"""

from __future__ import annotations

from typing import Any

from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp

_CHAT_ROUTE = "/chat/completions"


def responses() -> ScriptedResponsesApp:
    return ScriptedResponsesApp()


def chat() -> ScriptedChatApp:
    return ScriptedChatApp()


def combined() -> Any:
    chat_app = ScriptedChatApp()
    responses_app = ScriptedResponsesApp()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith(_CHAT_ROUTE):
            await chat_app(scope, receive, send)
        else:
            await responses_app(scope, receive, send)

    return app
