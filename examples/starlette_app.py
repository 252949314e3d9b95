"""A Starlette app serving a stateless ``POST /v1/responses``, made stateful.

Run from the repository root::

    uvicorn examples.starlette_app:app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from examples._model import response_for, sse_stream
from state_middleware import MemoryStore, ResponsesStateMiddleware


async def create_response(request: Request) -> Response:
    """The stateless model: it only ever sees the ``input`` it is sent."""
    body = await request.json()
    if body.get("stream"):
        return StreamingResponse(sse_stream(body), media_type="text/event-stream")
    return JSONResponse(response_for(body))


app = Starlette(
    routes=[Route("/v1/responses", create_response, methods=["POST"])],
    middleware=[Middleware(ResponsesStateMiddleware, store=MemoryStore(ttl=3600))],
)
