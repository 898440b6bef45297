"""ASGI apps on a WSGI server (gunicorn sync) through ``ASGIMiddleware``, for the matrix.

Starlette at ``/``, a FastAPI app mounted at ``/fastapi``, and a bare ASGI app
at ``/listen`` that waits for ``http.disconnect`` in a second task while it
streams (as Starlette's ``StreamingResponse`` does before ASGI 2.4), and
issue 10's bare ``StreamingResponse`` app at ``/issue10``.
``A2WSGI_IMPL=a2wsgi`` wraps the same app in a2wsgi's middleware, the
reference: one import changed.  ``COMPAT_ASGI_DIR`` is where the app writes
marker files (background task ran, listener saw the disconnect, a stream was
cancelled) and where the served file lives; the events happen in gunicorn's
worker, so files are how the tests see them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

DIR = Path(os.environ.get("COMPAT_ASGI_DIR", "/nonexistent"))
FILE_NAME = "served.bin"


def mark(name: str) -> None:
    (DIR / name).write_text(str(os.getpid()))


# ---------------------------------------------------------------- Starlette


async def stream(request: Request) -> StreamingResponse:
    """The example from issue 10: a sync iterator of str."""
    return StreamingResponse(content=map(str, range(10)))


async def stream_async(request: Request) -> StreamingResponse:
    async def chunks():
        for i in range(200):
            yield (f"{i:05d}" * 200).encode()  # 1000 bytes
            if i % 50 == 0:
                await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="application/octet-stream")


class _Endless(StreamingResponse):
    """Marks when the response call ends (cancelled, client gone, or done): the
    async generator's own ``finally`` would only run when it is collected."""

    def __init__(self, tag: str) -> None:
        super().__init__(self._chunks(), media_type="application/octet-stream")
        self.tag = tag

    @staticmethod
    async def _chunks():
        for _ in range(6000):  # a minute at most
            yield b"x" * 4096
            await asyncio.sleep(0.01)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            mark(f"endless-closed-{self.tag}")


async def endless(request: Request) -> StreamingResponse:
    """Streams until the client leaves."""
    return _Endless(request.query_params["tag"])


async def file(request: Request) -> FileResponse:
    return FileResponse(DIR / FILE_NAME, filename=FILE_NAME)


async def background(request: Request) -> PlainTextResponse:
    tag = request.query_params["tag"]
    return PlainTextResponse("queued", background=BackgroundTask(mark, f"background-{tag}"))


async def upload(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


# ---------------------------------------------------------------- FastAPI

api = FastAPI()


@api.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict:
    return {"item_id": item_id, "q": q}


@api.get("/stream")
async def api_stream() -> StreamingResponse:
    async def chunks():
        for i in range(50):
            yield f"event {i}\n"

    return StreamingResponse(chunks(), media_type="text/plain")


@api.post("/background")
async def api_background(tag: str, tasks: BackgroundTasks) -> dict:
    tasks.add_task(mark, f"fastapi-background-{tag}")
    return {"queued": tag}


@api.put("/upload")
async def api_upload(request: Request) -> dict:
    body = await request.body()
    return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


# ---------------------------------------------------------------- bare ASGI


async def listen(scope, receive, send) -> None:
    """Streams 10 chunks while a second task waits for ``http.disconnect``; the
    response is complete only when that task has ended (as the server closes the
    response, receive() must say so)."""
    tag = scope["query_string"].decode().partition("tag=")[2]
    while (await receive())["type"] != "http.request":
        pass

    async def listener() -> None:
        while True:
            if (await receive())["type"] == "http.disconnect":
                mark(f"listen-disconnect-{tag}")
                return

    task = asyncio.ensure_future(listener())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"100")]})
    for i in range(10):
        await send({"type": "http.response.body", "body": b"%09d\n" % i, "more_body": i < 9})
    await task


starlette_app = Starlette(routes=[
    Route("/stream", stream),
    Route("/stream-async", stream_async),
    Route("/endless", endless),
    Route("/file", file),
    Route("/background", background),
    Route("/upload", upload, methods=["PUT"]),
    Route("/hello", lambda request: PlainTextResponse("hello")),
    Mount("/fastapi", app=api),
    Mount("/listen", app=listen),
])

if os.environ.get("A2WSGI_IMPL") == "a2wsgi":
    from a2wsgi import ASGIMiddleware
else:
    from a2wsgi_mp import ASGIMiddleware

starlette_wsgi = ASGIMiddleware(starlette_app)
#: Issue 10's example verbatim: a response object as the whole app.  Its iterator
#: is one-shot, so each worker serves it once (the test asks once).
issue10 = ASGIMiddleware(StreamingResponse(content=map(str, range(10))))


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/issue10":
        return issue10(environ, start_response)
    return starlette_wsgi(environ, start_response)
