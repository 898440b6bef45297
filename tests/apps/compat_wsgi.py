"""One WSGI app serving every framework of the compatibility matrix, by path prefix.

``/dj/…`` Django (tests.apps.djsite), ``/flask/…`` Flask, ``/bottle/…`` Bottle,
``/raw/…`` bare WSGI.  The prefix moves from ``PATH_INFO`` to ``SCRIPT_NAME``
as any mount does (werkzeug's DispatcherMiddleware), so the frameworks build
their URLs under it.  The frameworks are imported on first use: a cell's
worker processes pay only for what they serve, and Django's settings come
from the environment the test fixture gave the server.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

MOUNTS = {
    "/dj": "tests.apps.djsite.wsgi:application",
    "/flask": "tests.apps.compat_flask:app",
    "/bottle": "tests.apps.compat_bottle:app",
}
_loaded: dict[str, Callable[..., Any]] = {}


def _app(prefix: str) -> Callable[..., Any]:
    if prefix not in _loaded:
        module, _, name = MOUNTS[prefix].partition(":")
        _loaded[prefix] = getattr(importlib.import_module(module), name)
    return _loaded[prefix]


def raw(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/raise":
        raise RuntimeError("compat-matrix: bare WSGI app failed")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    for prefix in MOUNTS:
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
            return _app(prefix)(environ, start_response)
    if path.startswith("/raw/"):
        environ["PATH_INFO"] = path[len("/raw"):]
        return raw(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


if os.environ.get("COMPAT_PRELOAD"):  # import the frameworks up front (in-process cells)
    for _prefix in MOUNTS:
        _app(_prefix)
