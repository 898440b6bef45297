"""Starlette mounting a WSGIPool at /legacy beside an async route (served by uvicorn)."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from a2wsgi_mp import WSGIPool

pool = WSGIPool("tests.apps.core_app:app", workers=2, graceful_timeout=5)


async def ping(request):
    return PlainTextResponse("pong")


app = Starlette(routes=[Route("/ping", ping), Mount("/legacy", app=pool)])
