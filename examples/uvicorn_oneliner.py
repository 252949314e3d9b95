"""The one-liner: a stateless Responses upstream made stateful.

Run from the repository root::

    uvicorn examples.uvicorn_oneliner:app

``ScriptedResponsesApp`` (from ``state_middleware.testing``) stands in for any stateless
OpenAI-compatible ASGI app; it answers ``[<n> items] <last user text>``.
"""

from state_middleware import ResponsesStateMiddleware
from state_middleware.testing import ScriptedResponsesApp

app = ResponsesStateMiddleware(ScriptedResponsesApp())
