"""Stateful OpenAI Responses API for any stateless OpenAI-compatible ASGI app.

``app = ResponsesStateMiddleware(app)`` adds ``previous_response_id`` chaining, stored
responses and ``GET``/``DELETE /v1/responses/{id}`` (plus ``input_items``).
"""

from ._identity import default_identity
from ._memory import MemoryStore
from ._middleware import ResponsesStateMiddleware
from ._record import TurnRecord
from ._store import Store, StoreError, StoreUnavailable

__version__ = "0.1.0"

__all__ = [
    "MemoryStore",
    "ResponsesStateMiddleware",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TurnRecord",
    "__version__",
    "default_identity",
]
