"""The WSGI app of the chaos benchmark (and of the chaos e2e tests).

Every body is checkable by the client without a copy of it: a download of
``size`` bytes with seed ``s`` is :func:`payload` (``s``, ``size``), which the
client regenerates; an upload is answered with its SHA-256 and length.  Routes:

* ``/hello`` — 13 bytes;
* ``/download?size=N&seed=S[&chunk=C]`` — N bytes of :func:`payload`, with
  Content-Length, in chunks of C bytes (64 KiB);
* ``/stream?n=N&seed=S&delay=D`` — N chunks of 16 KiB, D seconds apart, no
  Content-Length (chunked);
* ``/upload`` — reads the body, answers ``{"sha256", "size"}``;
* ``/sleep?t=T`` — sleeps T seconds;
* ``/pid`` — the worker's pid.

With ``CHAOS_MARKERS`` set to a directory, ``/download`` leaves a file
``closed.<token>`` there (content: the worker's pid) once its iterable's
``close()`` has run, so a test knows the worker produced the whole response.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

BLOCK = 64 * 1024
_blocks: dict[int, bytes] = {}


def _block(seed: int) -> bytes:
    """64 KiB of bytes that depend on ``seed`` (cached: one per seed)."""
    block = _blocks.get(seed)
    if block is None:
        parts, counter = [], 0
        while sum(map(len, parts)) < BLOCK:
            parts.append(hashlib.sha256(b"%d:%d" % (seed, counter)).digest())
            counter += 1
        block = _blocks[seed] = b"".join(parts)[:BLOCK]
        if len(_blocks) > 64:
            _blocks.pop(next(iter(_blocks)))
    return block


def payload_chunks(seed: int, size: int, chunk: int = BLOCK):
    """The download of ``size`` bytes for ``seed``, in chunks of ``chunk`` bytes.

    Position-dependent (each 64 KiB block is rotated by its index), so a chunk
    delivered twice, dropped or out of order changes the checksum."""
    block = _block(seed)
    doubled = block + block
    pos = 0
    while pos < size:
        n = min(chunk, size - pos)
        out = bytearray()
        while len(out) < n:
            index, offset = divmod(pos + len(out), BLOCK)
            rot = (index * 7919) % BLOCK
            take = min(BLOCK - offset, n - len(out))
            out += doubled[rot + offset:rot + offset + take]
        pos += n
        yield bytes(out)


def payload_digest(seed: int, size: int) -> str:
    digest = hashlib.sha256()
    for part in payload_chunks(seed, size, 1024 * 1024):
        digest.update(part)
    return digest.hexdigest()


def _query(environ) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


class _Download:
    def __init__(self, seed: int, size: int, chunk: int, token: str | None) -> None:
        self._chunks = payload_chunks(seed, size, chunk)
        self._token = token

    def __iter__(self):
        return self._chunks

    def close(self) -> None:
        markers = os.environ.get("CHAOS_MARKERS")
        if markers and self._token:
            path = os.path.join(markers, f"closed.{self._token}")
            with open(path + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(path + ".tmp", path)


def app(environ, start_response):
    """Every response names its worker process (``X-Pid``): a cut response is matched to a kill."""

    def start(status, headers):
        return start_response(status, [*headers, ("X-Pid", _PID[0])])

    if _PID[1] != os.getpid():  # (forked workers inherit the module)
        _PID[:] = [str(os.getpid()), os.getpid()]
    return _route(environ, start)


_PID: list = ["", 0]


def _route(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, world!"]
    if path == "/download":
        size = int(q.get("size", "1048576"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return _Download(int(q.get("seed", "0")), size, int(q.get("chunk", str(BLOCK))), q.get("token"))
    if path == "/stream":
        n, seed, delay = int(q.get("n", "10")), int(q.get("seed", "0")), float(q.get("delay", "0.05"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def chunks():
            for i, part in enumerate(payload_chunks(seed, n * 16384, 16384)):
                if i:
                    time.sleep(delay)
                yield part

        return chunks()
    if path == "/upload":
        stream = environ["wsgi.input"]
        digest, size = hashlib.sha256(), 0
        while True:
            data = stream.read(256 * 1024)
            if not data:
                break
            digest.update(data)
            size += len(data)
        body = json.dumps({"sha256": digest.hexdigest(), "size": size}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/sleep":
        time.sleep(float(q.get("t", "0.1")))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"slept"]
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]
