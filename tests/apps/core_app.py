"""The WSGI app behind the core end-to-end tests (tests/test_e2e_core.py).

One route per behaviour, chosen by PATH_INFO.  Everything it reports is JSON so
the tests assert on what the app itself saw.  ``CORE_RECORD_DIR`` (an env var
set by the test fixture) is where it records ``close()`` calls of streamed
responses, so a test can see them happen in a worker process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

#: Not callable: the CLI must refuse it with a message naming the target.
NOT_CALLABLE = 42


#: /together's meeting points, by key.
_BARRIERS: dict[str, threading.Barrier] = {}
_BARRIERS_LOCK = threading.Lock()


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _read_all(stream):
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = stream.read(256 * 1024)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _fd_link(stream):
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _record(name, text=""):
    directory = os.environ.get("CORE_RECORD_DIR")
    if directory:
        path = os.path.join(directory, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


class _Recorded:
    """A streamed body whose ``close()`` is written down under ``token``."""

    def __init__(self, token, chunks, delay, size=1024):
        self.token = token
        self.chunks = chunks
        self.delay = delay
        self.chunk = b"x" * size
        self.sent = 0

    def __iter__(self):
        for i in range(self.chunks):
            if i and self.delay:
                time.sleep(self.delay)
            self.sent += 1
            yield self.chunk

    def close(self):
        _record(f"closed-{self.token}", str(self.sent))


_BLOCK = random.Random(1234).randbytes(1 << 20)


def download_bytes(size, chunk=64 * 1024):
    """Deterministic bytes, in chunks: the tests compute the same to check a download."""
    sent = 0
    while sent < size:
        offset = (sent * 7) % (len(_BLOCK) - chunk)
        piece = _BLOCK[offset : offset + min(chunk, size - sent)]
        sent += len(piece)
        yield piece


def _environ_view(environ):
    view = {k: v for k, v in environ.items() if isinstance(v, str)}
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        view[key] = environ.get(key)
    view["wsgi.version"] = list(environ["wsgi.version"])
    view["pid"] = os.getpid()
    return view


def _validated_inner(environ, start_response):
    digest, size = _read_all(environ["wsgi.input"])
    environ["wsgi.errors"].write("validated app saw a request\n")
    body = json.dumps({"sha256": digest, "size": size}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return iter([body[:5], body[5:]])


_validated = validator(_validated_inner)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, world!"]
    if path.startswith("/environ"):
        return _json(start_response, _environ_view(environ))
    if path == "/pid":
        # A spawned worker's argv is "-c APP ZYGOTE_PID FD..."; a forked one has the zygote's
        # ("-c APP START_METHOD FRONT_PID FD") or the front's.
        forked = sys.argv[2:3] != [str(os.getppid())]
        return _json(start_response, {"pid": os.getpid(), "thread": threading.get_ident(), "forked": forked})
    if path == "/together":  # n requests that must all be running at once to be answered (no clock)
        with _BARRIERS_LOCK:
            barrier = _BARRIERS.setdefault(q.get("key", ""), threading.Barrier(int(q.get("n", "2"))))
        try:
            barrier.wait(timeout=20)
        except threading.BrokenBarrierError:
            return _json(start_response, {"error": "not all at once"}, "503 Service Unavailable")
        return _json(start_response, {"pid": os.getpid(), "thread": threading.get_ident()})
    if path == "/sleep":
        if "started" in q:  # the test waits for this instead of sleeping itself
            _record(f"started-{q['started']}")
        time.sleep(float(q.get("t", "0.5")))
        # A spawned worker's argv is "-c APP ZYGOTE_PID FD..."; a forked one has the zygote's
        # ("-c APP START_METHOD FRONT_PID FD") or the front's.
        forked = sys.argv[2:3] != [str(os.getppid())]
        return _json(start_response, {"pid": os.getpid(), "thread": threading.get_ident(), "forked": forked})
    if path == "/upload":
        stream = environ["wsgi.input"]
        link = _fd_link(stream)
        mode = None
        if link is not None:
            mode = os.fstat(stream.fileno()).st_mode & 0o777
        digest, size = _read_all(stream)
        return _json(start_response, {
            "sha256": digest,
            "size": size,
            "content_length": environ.get("CONTENT_LENGTH"),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
            "fd_link": link,
            "fd_mode": mode,
        })
    if path == "/stream":
        # 4 chunks, 0.3 s apart, no Content-Length: must reach the client as made.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def gen():
            for i in range(4):
                if i:
                    time.sleep(0.3)
                yield b"chunk-%d;" % i
        return gen()
    if path == "/slow-stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Recorded(q["token"], int(q.get("chunks", "400")), float(q.get("delay", "0.05")),
                         int(q.get("size", "1024")))
    if path == "/error-before":
        raise RuntimeError("boom before start_response")
    if path == "/error-after":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def failing():
            yield b"first part;"
            time.sleep(0.05)
            raise RuntimeError("boom after the response started")
        return failing()
    if path == "/short":
        # Declares 100 bytes, sends 10: must never look complete.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])

        def short():
            yield b"0123456789"
        return short()
    if path == "/short-list":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return [b"0123456789"]
    if path == "/download":
        size = int(q["size"])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return download_bytes(size, int(q.get("chunk", 64 * 1024)))
    if path == "/file":
        # A real file through wsgi.file_wrapper (the server may send it by descriptor).
        size = int(q["size"])
        f = tempfile.TemporaryFile()
        for piece in download_bytes(size):
            f.write(piece)
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 64 * 1024)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/validated":
        return _validated(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


def make_app(greeting="Hello", *, upper=False):
    """A factory with literal arguments, for ``module:make_app('Hi', upper=True)``."""
    text = greeting.upper() if upper else greeting

    def factory_app(environ, start_response):
        body = text.encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    factory_app.greeting = text
    return factory_app
