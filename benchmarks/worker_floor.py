"""Our worker against the floor's, driven alike: is a worker's extra CPU on a real page its code?

    python -m benchmarks.worker_floor [--page R3|R2|R1|P1] [--requests 2000] [--rounds 4]

In the real-page runs our workers cost more per request than the workers of the
``py-split-front`` experiment (docs/performance.md, "The floor, measured").  Here
both serve the same page, one request at a time, driven from a forked process
over a socketpair (as a front drives them): our
:func:`~a2wsgi_mp.workers.process.serve_slot` with REQUEST frames, and the
floor's loop (:func:`benchmarks.split_front.serve`, msgpack frames).  Each
figure is the serving thread's ``thread_time`` per request; rounds interleaved.
Equal figures mean the difference seen in a server comes from the run around the
worker (its sleeps, wake-ups, preemptions), not its code.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import socket
import statistics
import time
from typing import Any, Callable

import msgpack

from a2wsgi_mp.ipc.worker_pipe import WorkerPipe
from a2wsgi_mp.workers.process import serve_slot

from . import split_front
from .appcost import _call
from .configs import WSGI_APPS
from .realpages import PAGES
from .worker_micro import SCOPE, _drive

HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]


def _drive_ours(sock: socket.socket, path: str, requests: int) -> None:
    _drive(sock, requests, {**SCOPE, "path": path, "headers": HEADERS})


def _drive_floor(sock: socket.socket, path: str, requests: int) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    for rid in range(1, requests + 1):
        sock.sendall(msgpack.packb([rid, b"GET", path.encode(), HEADERS, b"", True]))
        answered = False
        while not answered:
            unpacker.feed(sock.recv(262144))
            answered = any(True for _ in unpacker)


#: The real pages, and P1's hello.
_PAGES = {**PAGES, "P1": ("wsgi", "/hello")}


def run(kind: str, app: Callable[..., Any], path: str, requests: int) -> float:
    """CPU µs per request of the serving thread (``kind``: "ours" or "floor")."""
    ours, driver = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            (_drive_ours if kind == "ours" else _drive_floor)(driver, path, requests)
        finally:
            os._exit(0)
    driver.close()
    t0 = time.thread_time()
    if kind == "ours":
        pipe = WorkerPipe(ours)
        serve_slot(app, pipe, False)  # until the driver hangs up
        pipe.close()
    else:
        split_front.serve(ours, app, 8000)
        ours.close()
    cpu = time.thread_time() - t0
    os.waitpid(pid, 0)
    return cpu / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", default="R3", choices=sorted(_PAGES))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    app_key, path = _PAGES[args.page]
    module, attr = WSGI_APPS[app_key].split(":")
    app = getattr(importlib.import_module(module), attr)
    for _ in range(300):  # as a worker after its warm-up: templates compiled, heap frozen
        _call(app, path)
    gc.freeze()
    figures: dict[str, list[float]] = {"ours": [], "floor": []}
    for rnd in range(args.rounds):
        for kind in ("ours", "floor") if rnd % 2 == 0 else ("floor", "ours"):
            figures[kind].append(round(run(kind, app, path, args.requests), 1))
    for kind, values in figures.items():
        print(f"{args.page} {kind:<5} worker CPU per request: median {statistics.median(values):,.1f} us "
              f"(rounds {', '.join(f'{v:,.1f}' for v in values)})")


if __name__ == "__main__":
    main()
