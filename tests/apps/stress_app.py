"""The app of the fault-injection stress test: every answer names its worker's pid.

``/upload`` answers ``length sha256 pid`` of the body it read; ``/download?size=N&seed=S``
streams N deterministic bytes; ``/exit`` and ``/segfault`` kill the worker in
the middle of its request; anything else answers the pid.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import random


def pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    pid = os.getpid()
    if path == "/exit":
        os._exit(9)
    if path == "/segfault":
        ctypes.string_at(0)
    if path == "/upload":
        digest = hashlib.sha256()
        length = 0
        stream = environ["wsgi.input"]
        while chunk := stream.read(256 * 1024):
            digest.update(chunk)
            length += len(chunk)
        body = f"{length} {digest.hexdigest()} {pid}".encode()
    elif path == "/download":
        query = dict(part.split("=") for part in environ["QUERY_STRING"].split("&"))
        data = pattern(int(query["size"]), int(query["seed"]))
        start_response("200 OK", [("Content-Length", str(len(data))), ("X-Pid", str(pid))])
        return [data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024)]
    else:
        body = str(pid).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Pid", str(pid))])
    return [body]
