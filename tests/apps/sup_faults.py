"""A WSGI app that misbehaves on request, for the supervision tests."""

import ctypes
import os
import signal
import time

_ballast = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/exit":
        os._exit(7)
    if path == "/raise-loop":
        raise SystemExit(1)  # escapes the worker loop
    if path == "/segfault":
        ctypes.string_at(0)
    if path == "/sigkill-self":
        os.kill(os.getpid(), signal.SIGKILL)
    if path == "/hang":
        while True:
            time.sleep(1)
    if path == "/sleep":
        seconds = float(environ.get("QUERY_STRING") or "0.5")
        time.sleep(seconds)
    if path == "/grow":
        _ballast.append(bytearray(int(environ.get("QUERY_STRING") or 0) * 1024 * 1024))
    body = f"{os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
