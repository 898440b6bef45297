"""A Starlette app behind ASGIMiddleware, served by gunicorn in the tests.

``A2WSGI_IMPL`` picks the middleware (``a2wsgi`` or ``a2wsgi_mp``);
``A2WSGI_MARKER_DIR`` is where it leaves files the tests look for, because the
interesting events (lifespan, background tasks) happen in another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tests.apps.markers import write_marker

IMPL = os.environ.get("A2WSGI_IMPL", "a2wsgi_mp")
MARKERS = Path(os.environ.get("A2WSGI_MARKER_DIR", "."))


def mark(name: str) -> None:
    write_marker(MARKERS / f"{name}.{os.getpid()}", str(os.getpid()))


@asynccontextmanager
async def lifespan(app: Starlette):
    mark("startup")
    yield {"lifespan_pid": os.getpid()}
    mark("shutdown")


async def stream(request: Request) -> StreamingResponse:
    gate = MARKERS / "release"

    async def chunks():
        yield b"first\n"
        for _ in range(1000):  # the client creates the gate after it has seen "first"
            if gate.exists():
                break
            await asyncio.sleep(0.01)
        yield b"second\n"

    return StreamingResponse(chunks(), media_type="text/plain")


async def background(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", background=BackgroundTask(mark, "background"))


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})


async def state(request: Request) -> JSONResponse:
    return JSONResponse({"lifespan_pid": getattr(request.state, "lifespan_pid", None), "pid": os.getpid()})


starlette_app = Starlette(
    routes=[
        Route("/stream", stream),
        Route("/background", background),
        Route("/echo", echo, methods=["POST"]),
        Route("/state", state),
    ],
    lifespan=lifespan,
)

if IMPL == "a2wsgi":
    from a2wsgi import ASGIMiddleware as A2WSGIMiddleware

    application = A2WSGIMiddleware(starlette_app)
else:
    from a2wsgi_mp import ASGIMiddleware

    application = ASGIMiddleware(starlette_app)
