"""Every default, once: the middleware, the proxy, the command line and the stores.

Each constructor, factory and command-line option that has a default takes it from here,
so a default changed here changes everywhere it is offered. Imports nothing from the
package, so every module can use it.
"""

from __future__ import annotations

from typing import Final

# -- ResponsesStateMiddleware ----------------------------------------------------------
# What the middleware does when left alone: serve the Responses API under /v1 in front of
# an app that speaks it, accept request bodies up to 32 MiB, and let a follow-up wait 30 s
# for the turn it continues. The last four only matter with upstream_api="chat", where
# they shape the Chat Completions requests sent to the app.

PREFIX: Final = "/v1"
MAX_BODY_BYTES: Final = 32 * 2**20
PENDING_TIMEOUT: Final = 30.0
#: how long a turn may hold its conversation's lock (a process that dies holding it
#: blocks the conversation at most this long; a longer turn is not stopped, but a second
#: turn may then start on the conversation)
CONVERSATION_LEASE: Final = 600.0
UPSTREAM_API: Final = "responses"
SYSTEM_ROLE: Final = "system"
REASONING_FIELD: Final = "reasoning_content"
MAX_TOKENS_FIELD: Final = "max_completion_tokens"
UNSUPPORTED_TOOLS: Final = "reject"

# -- the proxy (create_app, ForwardingApp) ---------------------------------------------
# Seconds to open a connection to the upstream (past it, 502) and to wait for each piece
# of its reply, not the whole reply, so a long stream is fine (past it, 504).

CONNECT_TIMEOUT: Final = 10.0
READ_TIMEOUT: Final = 600.0

# -- the command line (state-middleware serve) -----------------------------------------
# Where the proxy listens, and how much uvicorn logs. Loopback only unless asked.

HOST: Final = "127.0.0.1"
PORT: Final = 8080
LOG_LEVEL: Final = "info"

# -- MemoryStore -------------------------------------------------------------------------
# One process's store: 256 MiB of turns, least recently used evicted first; an unused
# turn expires after an hour (sliding: using its chain refreshes it).

MEMORY_MAX_BYTES: Final = 256 * 2**20
MEMORY_TTL: Final = 3600.0

# -- background responses (both stores) ---------------------------------------------------
# A finished background response's events can be streamed again for 10 minutes (OpenAI
# keeps background data "roughly 10 minutes"); its state lives as long as responses do.
EVENT_TTL: Final = 600.0
# Per process: 32 background turns run at once, 256 more may wait (then 429). A worker
# renews its lease every 2 s; a worker not heard of for 20 s is taken for dead and its
# turn fails. Shutdown gives running turns 10 s; a cancel waits up to 10 s for the turn
# to stop before it answers.
BACKGROUND_RUNNING: Final = 32
BACKGROUND_QUEUED: Final = 256
BACKGROUND_LEASE: Final = 20.0
BACKGROUND_HEARTBEAT: Final = 2.0
BACKGROUND_GRACE: Final = 10.0
BACKGROUND_CANCEL_WAIT: Final = 10.0

# -- RedisStore --------------------------------------------------------------------------
# Turns kept a day (sliding) under their own key prefix; conversations as long as turns
# ("ttl": the store's own ttl, whatever it is set to; None keeps them until deleted); a
# turn in progress blocks its followers for at most 5 minutes after a crash; a Redis that
# does not answer costs a request about 2 s (1 s to connect).

REDIS_TTL: Final = 86400.0
REDIS_CONVERSATION_TTL: Final = "ttl"
REDIS_KEY_PREFIX: Final = "state_middleware:"
REDIS_PENDING_TTL: Final = 300.0
REDIS_SOCKET_TIMEOUT: Final = 2.0
REDIS_SOCKET_CONNECT_TIMEOUT: Final = 1.0
#: bytes of stored turn records each process keeps decoded (records never change, so a
#: chain it has seen costs Redis only a check that it is still alive)
REDIS_CACHE_BYTES: Final = 64 * 2**20
