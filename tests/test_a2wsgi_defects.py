"""Each known a2wsgi 1.10 defect, run against both implementations.

The ``a2wsgi`` variant is ``xfail(strict=True)``: it must fail, proving the
defect is real there, while the ``a2wsgi_mp`` variant proves it is fixed.
Scenarios that hang a2wsgi run in a child process (see apps/a2wsgi_scenarios.py).
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from a2wsgi_scenarios import asgi_middleware, wsgi_middleware  # noqa: E402
from a2wsgi_support import Gunicorn, run_scenario  # noqa: E402

IMPLS = [
    pytest.param("a2wsgi", marks=pytest.mark.xfail(strict=True, reason="a2wsgi 1.10 defect")),
    pytest.param("a2wsgi_mp"),
]


# -- WSGIMiddleware (WSGI app on an ASGI server) --------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_send_raising_mid_stream_does_not_hang_the_thread(impl: str) -> None:
    """a2wsgi #48/#49: uvicorn >= 0.28 raises from send() once the client left."""
    assert run_scenario(impl, "wsgi_send_raises")["result"] == "ok"


@pytest.mark.parametrize("impl", IMPLS)
def test_disconnect_mid_stream_closes_the_iterable(impl: str) -> None:
    """uvicorn 0.54 drops sends after a disconnect; the stream must still stop."""
    assert run_scenario(impl, "wsgi_disconnect_mid_stream")["result"] == "ok"


@pytest.mark.parametrize("impl", IMPLS)
def test_disconnect_during_upload_is_not_end_of_body(impl: str) -> None:
    seen: dict[str, Any] = {}

    def app(environ, start_response):
        try:
            seen["body"] = environ["wsgi.input"].read()
        except OSError as exc:
            seen["error"] = exc
        start_response("200 OK", [])
        return [b""]

    messages = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        pass

    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/",
        "query_string": b"", "root_path": "", "headers": [(b"content-length", b"10")], "server": ("t", 80),
    }
    asyncio.run(asyncio.wait_for(wsgi_middleware(impl)(app)(scope, receive, send), 5))
    assert "body" not in seen, f"truncated upload read as complete: {seen['body']!r}"
    assert isinstance(seen["error"], OSError)


@pytest.mark.parametrize("impl", IMPLS)
def test_exc_info_replaces_headers_not_yet_sent(impl: str) -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-Stage", "before")])
        try:
            raise ValueError("failed after start_response")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Stage", "error")], sys.exc_info())
        return [b"error page"]

    async def call() -> httpx.Response:
        # Both re-raise the handled exc_info after the response: look at the response only.
        transport = httpx.ASGITransport(app=wsgi_middleware(impl)(app), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/")

    response = asyncio.run(asyncio.wait_for(call(), 5))
    assert response.status_code == 500
    assert response.headers["x-stage"] == "error"
    assert response.content == b"error page"


# -- ASGIMiddleware (ASGI app on a WSGI server) ---------------------------------


async def _plain_app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("http only")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("impl", IMPLS)
def test_construction_starts_no_thread(impl: str) -> None:
    """The root cause of the pre-fork hangs (uWSGI #34, Passenger #81)."""
    before = set(threading.enumerate())
    asgi_middleware(impl)(_plain_app)
    assert set(threading.enumerate()) - before == set()


@pytest.mark.parametrize("impl", IMPLS)
def test_serves_after_gunicorn_preload_fork(impl: str, tmp_path: Path) -> None:
    server = Gunicorn(impl, tmp_path, preload=True)
    try:
        server.wait_ready()
        response = httpx.get(server.url + "/state", timeout=5)
        assert response.status_code == 200
    finally:
        server.kill()


@pytest.mark.parametrize("impl", IMPLS)
def test_chunked_upload_reaches_the_app(impl: str) -> None:
    """No CONTENT_LENGTH, ``wsgi.input_terminated`` set: read the body to EOF."""
    received = bytearray()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("http only")
        while True:
            message = await receive()
            received.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    payload = b"0123456789" * 10000
    environ = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(payload),
        "wsgi.input_terminated": True, "wsgi.url_scheme": "http",
    }
    response = asgi_middleware(impl)(app)(environ, lambda status, headers, exc_info=None: None)
    try:
        assert b"".join(response) == b"ok"
    finally:
        response.close()
    assert bytes(received) == payload


@pytest.mark.parametrize("impl", IMPLS)
def test_upload_shorter_than_content_length_is_not_complete(impl: str) -> None:
    assert run_scenario(impl, "asgi_truncated_upload")["result"] == "ok"
