"""The ASGI apps the HTTP benchmarks serve, one uvicorn subprocess each.

``bare`` is the stateless scripted upstream on its own; ``wrapped`` is the same upstream
behind ``ResponsesStateMiddleware`` with the default in-memory store.
"""

from state_middleware import ResponsesStateMiddleware
from state_middleware.testing import ScriptedResponsesApp

bare = ScriptedResponsesApp()
wrapped = ResponsesStateMiddleware(ScriptedResponsesApp())
