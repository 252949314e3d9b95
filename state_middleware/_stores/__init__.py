"""The two stores behind the ``Store`` protocol (``_store.py``): ``MemoryStore``
(``memory.py``: one process) and ``RedisStore`` (``redis.py``: shared by processes).

Each store is one class composed of parts, one module per concern: turns and notes in
the class's own module, items and conversations (with their locks) in
``*_conversations.py``, background responses in ``*_background.py``, and what the parts
share (the cache, or the Redis client) in ``memory_entries.py`` and
``redis_client.py``. RedisStore's Lua scripts are split the same way
(``redis_*_scripts.py``, with their shared helpers in ``redis_lua.py``). Importing this
package never imports redis: only ``RedisStore.from_url`` (or a client you pass) does.
"""
