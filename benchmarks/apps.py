"""The apps every benchmarked server runs.

Plain WSGI callables (``hello``, ``cpu``, ``sleep``, ``upload``, ``download``)
and ``app``, which dispatches on PATH_INFO to them so one server process can
serve every scenario.  ``make_a2wsgi`` and ``make_router`` are ASGI factories
for ``uvicorn --factory``; ``raw_hello`` is a bare ASGI hello (the reference
ceiling for P1).  Configuration of the factories comes from environment
variables set by the runner (``BENCH_*``), so the same module works under
every server's command line.
"""

from __future__ import annotations

import json
import os
import time

CHUNK = 64 * 1024
#: ~10 ms of pure-Python work on the 2-vCPU benchmark machine (CPython 3.11).
#: A fixed amount of work, not a time budget: a server that makes it compete
#: for the GIL must show up as slower, not hide it.
CPU_ITERATIONS = 160_000
SLEEP_SECONDS = 0.05

_HELLO = b"Hello, world!"
_ZEROS = bytes(CHUNK)


def _text(start_response, body: bytes, status: str = "200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hello(environ, start_response):
    return _text(start_response, _HELLO)


def burn(n: int = CPU_ITERATIONS) -> int:
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def cpu(environ, start_response):
    return _text(start_response, str(burn()).encode())


def sleep(environ, start_response):
    time.sleep(SLEEP_SECONDS)
    return _text(start_response, b"slept")


def upload(environ, start_response):
    """Read the whole body in 64 KiB chunks; answer the byte count."""
    stream = environ["wsgi.input"]
    total = 0
    length = environ.get("CONTENT_LENGTH", "")
    if length.strip().isdigit():
        remaining = int(length)
        while remaining > 0:
            data = stream.read(min(CHUNK, remaining))
            if not data:
                break
            total += len(data)
            remaining -= len(data)
    else:  # chunked: the server marks the end with b""
        while True:
            data = stream.read(CHUNK)
            if not data:
                break
            total += len(data)
    return _text(start_response, str(total).encode())


def download(environ, start_response):
    """Stream n bytes (query string ``n=BYTES``) in 64 KiB chunks."""
    n = 0
    for part in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = part.partition("=")
        if key == "n" and value.isdigit():
            n = int(value)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))])

    def body():
        left = n
        while left >= CHUNK:
            yield _ZEROS
            left -= CHUNK
        if left:
            yield _ZEROS[:left]

    return body()


#: The response headers of Django's /admin/login/ (benchmarks/django_site.py), values as long.
_PAGE_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"), ("Expires", "Mon, 07 Dec 2026 09:11:20 GMT"),
    ("Cache-Control", "max-age=0, no-cache, no-store, must-revalidate, private"), ("Vary", "Cookie"),
    ("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Set-Cookie", "csrftoken=NwXR9N0ePZ0jG816r0aiYAj7NfnIZTBj; expires=Mon, 06 Dec 2027 09:11:20 GMT; "
                   "Max-Age=31449600; Path=/; SameSite=Lax"),
]


def shape(environ, start_response):
    """A response shaped like a real page, without the page's work, to tell apart what
    costs the front: ``?size=BYTES`` of body, ``&headers=N`` of the admin login page's
    headers (0-9), ``&burn=N`` iterations of :func:`burn` in the worker first, or
    ``&sleep_us=N`` microseconds of sleep (the worker busy, its CPU idle)."""
    q = dict(part.partition("=")[::2] for part in environ.get("QUERY_STRING", "").split("&") if part)
    if q.get("burn", "0").isdigit() and int(q.get("burn", "0")):
        burn(int(q["burn"]))
    if q.get("sleep_us", "0").isdigit() and int(q.get("sleep_us", "0")):
        time.sleep(int(q["sleep_us"]) / 1e6)
    size = int(q.get("size", "13")) if q.get("size", "13").isdigit() else 13
    n = int(q.get("headers", "1")) if q.get("headers", "1").isdigit() else 1
    body = b"x" * size
    headers = [("Content-Type", "text/plain")] if n <= 1 else list(_PAGE_HEADERS[:n])
    start_response("200 OK", [*headers, ("Content-Length", str(size))])
    return [body]


def not_found(environ, start_response):
    return _text(start_response, b"not found", "404 Not Found")


ROUTES = {
    "/": hello,
    "/hello": hello,
    "/cpu": cpu,
    "/sleep": sleep,
    "/upload": upload,
    "/download": download,
    "/shape": shape,
}


def app(environ, start_response):
    return ROUTES.get(environ.get("PATH_INFO", "/"), not_found)(environ, start_response)


application = app


# --- ASGI side ---------------------------------------------------------------

async def raw_hello(scope, receive, send):
    """Bare ASGI hello: what uvicorn itself can do (reference only)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": _HELLO})


def _wrapped_pool():
    """The WSGI app behind an ASGI adapter, as chosen by BENCH_BACKEND."""
    backend = os.environ.get("BENCH_BACKEND", "a2wsgi")
    threads = int(os.environ.get("BENCH_THREADS", "10"))
    if backend == "a2wsgi":
        from a2wsgi import WSGIMiddleware

        return WSGIMiddleware(app, workers=threads)
    if backend == "a2wsgi_mp":
        from a2wsgi_mp import WSGIPool

        workers = int(os.environ.get("BENCH_WORKERS", "2"))
        options = json.loads(os.environ.get("BENCH_MP_OPTIONS", "{}"))
        return WSGIPool("benchmarks.apps:app", workers=workers, threads=threads, **options)
    raise ValueError(f"unknown BENCH_BACKEND {backend!r}")


def make_a2wsgi():
    """``uvicorn --factory benchmarks.apps:make_a2wsgi``: a2wsgi 1.10 around ``app``, or
    around the WSGI app ``$BENCH_WSGI_APP`` names (``module:attribute``, the real pages)."""
    import importlib

    from a2wsgi import WSGIMiddleware

    target = app
    if os.environ.get("BENCH_WSGI_APP"):
        module, _, attr = os.environ["BENCH_WSGI_APP"].partition(":")
        target = getattr(importlib.import_module(module), attr)
    return WSGIMiddleware(target, workers=int(os.environ.get("BENCH_THREADS", "10")))


def make_router():
    """``uvicorn --factory benchmarks.apps:make_router``: P3's mixed app.

    ``/ping`` is answered by an async endpoint in the event-loop process;
    everything else goes to the WSGI app through the pool (a2wsgi_mp's
    ``WSGIPool`` or a2wsgi's ``WSGIMiddleware``).
    """
    inner = _wrapped_pool()
    pong_headers = [(b"content-type", b"text/plain"), (b"content-length", b"4")]

    async def router(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/ping":
            await send({"type": "http.response.start", "status": 200, "headers": pong_headers})
            await send({"type": "http.response.body", "body": b"pong"})
            return
        await inner(scope, receive, send)

    return router
