"""Stateful OpenAI Responses API for any stateless OpenAI-compatible ASGI app.

``app = ResponsesStateMiddleware(app)`` adds ``previous_response_id`` chaining, stored
responses and ``GET``/``DELETE /v1/responses/{id}`` (plus ``input_items``).
"""

from typing import TYPE_CHECKING, Any

from ._identity import default_identity
from ._metrics import Metrics, TurnStats
from ._middleware import ResponsesStateMiddleware
from ._record import TurnRecord
from ._settings import BackgroundSettings
from ._store import Store, StoreError, StoreUnavailable
from ._stores.memory import MemoryStore

if TYPE_CHECKING:
    from ._stores.redis import RedisStore

#: the one copy of the version: pyproject.toml reads it ([tool.hatch.version])
__version__ = "0.1.0"

__all__ = [
    "BackgroundSettings",
    "MemoryStore",
    "Metrics",
    "RedisStore",
    "ResponsesStateMiddleware",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TurnRecord",
    "TurnStats",
    "__version__",
    "default_identity",
]


def __getattr__(name: str) -> Any:
    # RedisStore is imported on first use, so the package never needs redis to import.
    if name == "RedisStore":
        from ._stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
