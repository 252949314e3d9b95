"""A FastAPI app serving a stateless ``POST /v1/responses``, made stateful by one line.

Run from the repository root::

    uvicorn examples.fastapi_app:app

then talk to ``http://127.0.0.1:8000/v1`` with any OpenAI client, passing
``previous_response_id`` to continue a conversation.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from examples._model import response_for, sse_stream
from state_middleware import MemoryStore, ResponsesStateMiddleware

app = FastAPI(title="Shouting parrot")


@app.post("/v1/responses")
async def create_response(request: Request) -> Response:
    """The stateless model: it only ever sees the ``input`` it is sent."""
    body = await request.json()
    if body.get("stream"):
        return StreamingResponse(sse_stream(body), media_type="text/event-stream")
    return JSONResponse(response_for(body))


# Conversations are kept in this process: up to 64 MiB, each turn for an hour after
# its chain was last used.
app.add_middleware(ResponsesStateMiddleware, store=MemoryStore(max_bytes=64 * 2**20, ttl=3600))
