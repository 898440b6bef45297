"""The WSGI app behind tests/test_direct_stream.py: streamed bodies a worker may
write to the client itself, with checkable contents."""

from __future__ import annotations

import hashlib
import os
import time
from urllib.parse import parse_qs


def pattern(n: int) -> bytes:
    """``n`` bytes no two 64 KiB stretches of which are alike (a misplaced chunk shows)."""
    block = hashlib.sha256(b"direct").digest() * 2048  # 64 KiB
    out = bytearray()
    i = 0
    while len(out) < n:
        out += i.to_bytes(8, "big") + block[8:]
        i += 1
    return bytes(out[:n])


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


class _Closing:
    """An iterable whose close() leaves a trace (``$DIRECT_RECORD_DIR/<token>``)."""

    def __init__(self, chunks, token):
        self.chunks = chunks
        self.token = token

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        if self.token:
            open(os.path.join(os.environ["DIRECT_RECORD_DIR"], self.token), "w").close()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    pid = ("X-Pid", str(os.getpid()))
    if path == "/hello":
        start_response("200 OK", [("Content-Length", "13"), pid])
        return [b"Hello, world!"]
    if path == "/stream":  # n bytes in chunks; Content-Length unless length=0 (then chunked)
        n, chunk = int(q.get("n", "1000000")), int(q.get("chunk", "65536"))
        body = pattern(n)
        headers = [("Content-Type", "application/octet-stream"), pid]
        if q.get("length", "1") == "1":
            headers.append(("Content-Length", str(n)))
        start_response("200 OK", headers)
        return _Closing((body[i:i + chunk] for i in range(0, n, chunk)), q.get("token"))
    if path == "/whole":  # complete at its first chunk (one list item): offered only when large
        n = int(q.get("n", "1000000"))
        start_response("200 OK", [("Content-Length", str(n)), pid])
        return [pattern(n)]
    if path == "/slow":  # a chunk every `every` seconds, for ever (or `count` of them)
        every, count = float(q.get("every", "0.02")), int(q.get("count", "1000000"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), pid])

        def slowly():
            for _ in range(count):
                yield pattern(65536)
                time.sleep(every)
        return _Closing(slowly(), q.get("token"))
    if path == "/short":  # promises more than it sends: the client must see the body cut
        start_response("200 OK", [("Content-Length", "300000"), pid])
        return iter([b"x" * 100000, b"y" * 100000])
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
