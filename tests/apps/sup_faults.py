"""A WSGI app that misbehaves on request, for the supervision tests."""

import ctypes
import os
import signal
import threading
import time

_ballast = []


def _helper_sleeps():
    while True:
        time.sleep(1)


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
    if path == "/hang-threads":  # a thread of the app's own, asleep, while the request hangs
        threading.Thread(target=_helper_sleeps, daemon=True).start()
        path = "/hang"
    if path == "/hang":
        while True:
            time.sleep(1)
    if path == "/alloc":  # allocate (and touch) N MiB, 10 MiB at a time, a little slowly
        held = []
        for _ in range(int(environ.get("QUERY_STRING") or 0) // 10):
            chunk = bytearray(10 * 1024 * 1024)
            chunk[::4096] = b"x" * len(range(0, len(chunk), 4096))
            held.append(chunk)
            time.sleep(0.005)
    if path == "/sleep":
        seconds = float(environ.get("QUERY_STRING") or "0.5")
        time.sleep(seconds)
    if path == "/grow":
        _ballast.append(bytearray(int(environ.get("QUERY_STRING") or 0) * 1024 * 1024))
    if path == "/leak":  # keep (and touch) N MiB per request; answer "pid rss"
        chunk = bytearray(int(environ.get("QUERY_STRING") or 0) * 1024 * 1024)
        chunk[::4096] = b"x" * len(range(0, len(chunk), 4096))
        _ballast.append(chunk)
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        body = f"{os.getpid()} {rss}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = f"{os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
