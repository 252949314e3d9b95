"""A single-file Django project serving a stateless ``POST /v1/responses``, made stateful.

Run from the repository root::

    uvicorn examples.django_asgi:application

The middleware wraps Django's ASGI handler from the outside, so it works with any
Django project: wrap whatever ``get_asgi_application()`` returns in your ``asgi.py``.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from examples._model import response_for, sse_stream
from state_middleware import ResponsesStateMiddleware

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only-not-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )


@csrf_exempt
@require_POST
async def create_response(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The stateless model: it only ever sees the ``input`` it is sent."""
    body = json.loads(request.body)
    if body.get("stream"):
        return StreamingHttpResponse(sse_stream(body), content_type="text/event-stream")
    return JsonResponse(response_for(body))


urlpatterns = [path("v1/responses", create_response)]

django_asgi_app = get_asgi_application()
application = ResponsesStateMiddleware(django_asgi_app)
