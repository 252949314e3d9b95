"""What to install when an optional part is used without its extra.

The core (the middleware, ``MemoryStore``, the scripted apps of ``state_middleware.testing``,
the no-op ``Metrics``) needs only asgiref, msgspec and cachetools. A module that needs more
imports it at the top and, when that fails, raises ``ModuleNotFoundError`` with its message
from here (this module imports nothing, so the message is there even when the import is
not). The redis and serve messages live with the code that raises them:
``_stores.redis_client.MISSING_EXTRA_MESSAGE`` and ``cli.MISSING_EXTRA_MESSAGE``.
"""

from __future__ import annotations

__all__ = ["MISSING_METRICS_MESSAGE", "MISSING_PROXY_MESSAGE", "MISSING_TESTING_MESSAGE"]

MISSING_METRICS_MESSAGE = (
    'state_middleware.metrics needs prometheus_client: pip install "state-middleware[metrics]"'
)

MISSING_PROXY_MESSAGE = (
    'create_app and ForwardingApp need httpx and anyio: pip install "state-middleware[proxy]"'
)
MISSING_TESTING_MESSAGE = (
    'StreamingASGITransport needs httpx: pip install "state-middleware[testing]"'
)
