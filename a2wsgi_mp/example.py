"""A small WSGI app that ships with the package, so the CLI serves something
out of the box: ``a2wsgi-mp a2wsgi_mp.example:app``."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any, Callable, Iterable, Iterator


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/upload":
        digest = hashlib.sha256()
        size = 0
        for block in iter(lambda: environ["wsgi.input"].read(65536), b""):
            digest.update(block)
            size += len(block)
        return _text(start_response, f"{size} {digest.hexdigest()}\n")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _slow_chunks()
    if path == "/cpu":
        n = sum(i * i for i in range(200_000))
        return _text(start_response, f"{n} computed by pid {os.getpid()}\n")
    return _text(
        start_response,
        f"Hello from a2wsgi_mp worker pid {os.getpid()}!\n"
        "Try /cpu, /stream, or POST a body to /upload.\n",
    )


def _text(start_response: Callable[..., Any], text: str) -> list[bytes]:
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def _slow_chunks() -> Iterator[bytes]:
    for i in range(5):
        time.sleep(0.2)
        yield f"chunk {i} from pid {os.getpid()}\n".encode()
