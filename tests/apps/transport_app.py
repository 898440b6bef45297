"""The WSGI app behind tests/test_transports.py (and benchmarks/ipc_micro.py)."""

import hashlib
import os
import time

from tests.apps.markers import write_marker

BLOCK = bytes(range(256)) * 4096  # 1 MiB, deterministic


def _q(environ):
    out = {}
    for part in environ.get("QUERY_STRING", "").split("&"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _q(environ)
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
        return [b"Hello world!"]
    if path == "/upload":
        digest = hashlib.sha256()
        size = 0
        stream = environ["wsgi.input"]
        while True:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        body = f"{size} {digest.hexdigest()}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/drain":  # read and drop the body
        stream = environ["wsgi.input"]
        size = 0
        while True:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                break
            size += len(chunk)
        body = str(size).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/once":  # one body of `size` bytes in a one-element list
        size = int(q.get("size", "0"))
        body = (BLOCK * (size // len(BLOCK) + 1))[:size]
        start_response("200 OK", [("Content-Length", str(size))])
        return [body]
    if path == "/download":  # `mib` MiB streamed in `chunk`-byte pieces
        mib = int(q.get("mib", "1"))
        chunk = int(q.get("chunk", str(len(BLOCK))))
        start_response("200 OK", [("Content-Length", str(mib * len(BLOCK))), ("X-Pid", str(os.getpid()))])

        def gen():
            for _ in range(mib):
                for i in range(0, len(BLOCK), chunk):
                    yield BLOCK[i : i + chunk]

        return gen()
    if path == "/stream":  # a few chunks with pauses between them
        count = int(q.get("n", "5"))
        delay = float(q.get("delay", "0.05"))

        def gen():
            for i in range(count):
                yield f"chunk {i}\n".encode() * 1000
                time.sleep(delay)

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/endless":  # until the client leaves; writes a marker on close
        marker = q.get("marker")

        class Endless:
            def __iter__(self):
                while True:
                    yield BLOCK
                    time.sleep(0.01)

            def close(self):
                if marker:
                    write_marker(marker, str(os.getpid()))

        start_response("200 OK", [])
        return Endless()
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
