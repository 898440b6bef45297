"""Streaming ASGI apps behind ``a2wsgi_mp.ASGIMiddleware``, for tests/test_asgi_streaming.py.

Every route is its own ``ASGIMiddleware``, as users write them, and several wrap
a bare response object as the whole app (the one-shot case of issue 10: a
``StreamingResponse`` can be iterated once).  ``/legacy...`` routes see ASGI
spec 2.3, so Starlette takes its listen-for-``http.disconnect`` path; the
others see the spec version the middleware advertises.  ``/events`` (plain
WSGI) tells the tests what the apps recorded in this process.

Served by gunicorn (``asgi_stream_app:application``), by wsgiref
(``python asgi_stream_app.py PORT``), or in-process (``make_application()``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from fastapi import BackgroundTasks, FastAPI
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, PlainTextResponse, StreamingResponse

from a2wsgi_mp import ASGIMiddleware

EVENTS: list[str] = []
_lock = threading.Lock()
CHUNK = b"x" * 16384


def record(event: str) -> None:
    with _lock:
        EVENTS.append(event)


def file_payload() -> bytes:
    """A few MB, not compressible, the same in every process."""
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() * 64 for i in range(1500))


def payload_file() -> Path:
    """The payload as a file, shared by every process and run (written once, atomically)."""
    data = file_payload()
    path = Path(tempfile.gettempdir()) / f"a2wsgi-mp-asgi-stream-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, path)
    return path


def legacy(app: Any) -> Any:
    """``app`` as served by a server speaking ASGI HTTP spec 2.3 (like uvicorn)."""

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["asgi"] = {**scope.get("asgi", {}), "spec_version": "2.3"}
        await app(scope, receive, send)

    return wrapper


def observed(app: Any) -> Any:
    """``app``, recording ``<path>:ended`` when it has finished with a request, however it ended."""

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                record(f"{scope['path']}:ended")

    return wrapper


def listener_app(name: str) -> Callable[..., Any]:
    """A raw app that streams while a second task listens for ``http.disconnect``.

    ``?endless`` streams until the client leaves.  The listener cancels the
    producer when the disconnect comes; the app returns once both are done.
    """

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        endless = scope.get("query_string") == b"endless"

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            record(f"{name}:disconnect")
            producer.cancel()  # no-op once the response is complete

        async def produce() -> None:
            try:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/plain")]})
                i = 0
                while endless or i < 5:
                    await send({"type": "http.response.body", "body": CHUNK if endless else b"%d" % i,
                                "more_body": True})
                    i += 1
                    await asyncio.sleep(0.002 if endless else 0)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except BaseException as exc:
                record(f"{name}:producer:{type(exc).__name__}")
                raise

        listener = asyncio.ensure_future(listen())
        producer = asyncio.ensure_future(produce())
        try:
            await producer
            await listener  # the response is complete: receive() must now say http.disconnect
            record(f"{name}:complete")
        except BaseException as exc:
            record(f"{name}:{type(exc).__name__}")
            raise
        finally:
            listener.cancel()
            producer.cancel()

    return app


def fastapi_app(prefix: str) -> FastAPI:
    app = FastAPI()

    @app.get(prefix + "/sync")
    def sync_endpoint() -> dict[str, Any]:
        return {"kind": "sync", "thread": threading.current_thread() is not threading.main_thread()}

    @app.get(prefix + "/async")
    async def async_endpoint() -> dict[str, Any]:
        return {"kind": "async"}

    @app.get(prefix + "/stream")
    async def stream(background: BackgroundTasks) -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(5):
                yield f"a{i}\n"
                await asyncio.sleep(0)

        background.add_task(record, f"{prefix}/stream:background")
        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get(prefix + "/sync-stream")
    def sync_stream() -> StreamingResponse:
        def chunks() -> Iterator[str]:
            for i in range(5):
                yield f"s{i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get(prefix + "/endless")
    async def endless() -> StreamingResponse:
        async def chunks() -> Any:
            record(f"{prefix}/endless:start")
            try:
                while True:
                    yield CHUNK
                    await asyncio.sleep(0.002)
            except BaseException as exc:
                record(f"{prefix}/endless:{type(exc).__name__}")
                raise
            finally:
                record(f"{prefix}/endless:end")

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get(prefix + "/endless-sync")
    def endless_sync() -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            record(f"{prefix}/endless-sync:start")
            try:
                while True:
                    yield CHUNK
            finally:
                record(f"{prefix}/endless-sync:end")

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return app


def make_application() -> Callable[..., Any]:
    """A WSGI app routing by path prefix to fresh ASGIMiddleware instances."""
    routes: dict[str, Any] = {
        "/oneshot": ASGIMiddleware(StreamingResponse(content=map(str, range(10)))),
        "/legacy-oneshot": ASGIMiddleware(legacy(StreamingResponse(content=map(str, range(10))))),
        "/file": ASGIMiddleware(FileResponse(payload_file(), background=BackgroundTask(record, "file:background"))),
        "/legacy-file": ASGIMiddleware(
            legacy(FileResponse(payload_file(), background=BackgroundTask(record, "legacy-file:background")))
        ),
        "/background": ASGIMiddleware(PlainTextResponse("ok", background=BackgroundTask(record, "background"))),
        "/listener": ASGIMiddleware(listener_app("listener")),
        "/fastapi": ASGIMiddleware(observed(fastapi_app("/fastapi"))),
        "/legacy-fastapi": ASGIMiddleware(observed(legacy(fastapi_app("/legacy-fastapi")))),
    }

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in ("/events", "/pid"):
            with _lock:
                body = json.dumps(list(EVENTS) if path == "/events" else os.getpid()).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        head = "/" + path.split("/")[1]
        if head in routes:
            return routes[head](environ, start_response)
        start_response("404 Not Found", [("Content-Length", "0")])
        return []

    return application


application = make_application()

if __name__ == "__main__":  # the wsgiref server
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep the log for errors
            pass

    server = make_server("127.0.0.1", int(sys.argv[1]), application, handler_class=Handler)
    print("serving", flush=True)
    server.serve_forever()
