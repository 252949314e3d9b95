"""The ASGI apps the HTTP benchmarks serve, one uvicorn subprocess each.

``bare`` is the stateless scripted upstream on its own; ``wrapped`` is the same upstream
behind ``ResponsesStateMiddleware`` with the default in-memory store.
"""

from state_middleware import ResponsesStateMiddleware
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp

bare = ScriptedResponsesApp()
wrapped = ResponsesStateMiddleware(ScriptedResponsesApp())

# For bench_bridge.py: the scripted Chat Completions upstream on its own, and the same
# upstream behind the middleware's Responses-to-Chat bridge.
bare_chat = ScriptedChatApp()
bridge = ResponsesStateMiddleware(ScriptedChatApp(), upstream_api="chat")
