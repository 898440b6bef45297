"""Scenarios that hang a2wsgi, run in a child process: ``python a2wsgi_scenarios.py IMPL NAME``.

Prints one JSON line, then leaves with ``os._exit`` so a thread that a2wsgi
left blocked cannot keep the process (and the test run) alive.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import threading
import time
from typing import Any

TIMEOUT = 5.0


def wsgi_middleware(impl: str):
    if impl == "a2wsgi":
        from a2wsgi import WSGIMiddleware
    else:
        from a2wsgi_mp import WSGIMiddleware
    return WSGIMiddleware


def asgi_middleware(impl: str):
    if impl == "a2wsgi":
        from a2wsgi import ASGIMiddleware
    else:
        from a2wsgi_mp import ASGIMiddleware
    return ASGIMiddleware


def http_scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1234), "server": ("test", 80),
    }


def endless_app(closed: threading.Event):
    """A WSGI app streaming for up to a minute, recording when its iterable is closed."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def chunks():
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    yield b"x" * 1024
                    time.sleep(0.001)
            finally:
                closed.set()

        return chunks()

    return app


async def drive(mw, send_raises: bool) -> dict[str, Any]:
    """The client leaves after three chunks; uvicorn >= 0.28 style (send raises) or 0.54 style."""
    gone = asyncio.Event()
    sent = 0

    async def receive():
        if not getattr(receive, "body_sent", False):
            receive.body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal sent
        if gone.is_set() and send_raises:
            raise OSError("client disconnected")  # uvicorn's ClientDisconnected is an OSError
        sent += 1
        if sent >= 3:
            gone.set()

    try:
        await asyncio.wait_for(mw(http_scope(), receive, send), TIMEOUT)
    except asyncio.TimeoutError:
        return {"result": "call hung"}
    except OSError:
        pass
    return {"result": "returned"}


def wsgi_disconnect(impl: str, send_raises: bool) -> dict[str, Any]:
    closed = threading.Event()
    mw = wsgi_middleware(impl)(endless_app(closed))
    outcome = asyncio.run(drive(mw, send_raises))
    if outcome["result"] == "returned":
        outcome["result"] = "ok" if closed.wait(TIMEOUT) else "thread still streaming"
    return outcome


def asgi_truncated_upload(impl: str) -> dict[str, Any]:
    """The client promised 10 bytes and sent 3: the app must not get a 'complete' body."""
    seen: dict[str, Any] = {}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("lifespan not supported")
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen["disconnect"] = True
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                seen["complete_body"] = body
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    environ = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": "10", "wsgi.input": io.BytesIO(b"abc"), "wsgi.url_scheme": "http",
    }
    result: dict[str, Any] = {}

    def call() -> None:
        response = asgi_middleware(impl)(app)(environ, lambda status, headers, exc_info=None: None)
        try:
            result["body"] = b"".join(response)
        finally:
            getattr(response, "close", lambda: None)()

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        return {"result": "call hung"}
    if "complete_body" in seen:
        return {"result": f"truncated body taken as complete: {seen['complete_body']!r}"}
    return {"result": "ok" if seen.get("disconnect") else f"unexpected: {seen}"}


SCENARIOS = {
    "wsgi_send_raises": lambda impl: wsgi_disconnect(impl, send_raises=True),
    "wsgi_disconnect_mid_stream": lambda impl: wsgi_disconnect(impl, send_raises=False),
    "asgi_truncated_upload": asgi_truncated_upload,
}

if __name__ == "__main__":
    impl_name, scenario_name = sys.argv[1], sys.argv[2]
    try:
        outcome = SCENARIOS[scenario_name](impl_name)
    except BaseException as exc:  # report, never hang
        outcome = {"result": f"error: {exc!r}"}
    print(json.dumps(outcome), flush=True)
    os._exit(0)
