"""The worker's own cost per request, without HTTP, a front or a second process.

    python -m benchmarks.worker_micro [--requests 20000] [--profile]

Runs :func:`~a2wsgi_mp.workers.process.serve_slot` for the hello app on one
end of a socketpair and drives it from a forked process with REQUEST frames,
one at a time, waiting for each response frame.  Prints the serving thread's
CPU time per request (``time.thread_time``: its Python and its syscalls, none
of the driver's), and with ``--profile`` the functions
that cost most (cProfile: wall time, so the blocking ``recvmsg_into`` shows the
wait for the next request, and its overhead inflates the rest about threefold).
Use it to compare worker changes A/B on a busy machine: the figure moves far
less than end-to-end ones.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import socket
import time
from typing import Any

from a2wsgi_mp.environ import request_head
from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.ipc.events import End, Start
from a2wsgi_mp.ipc.worker_pipe import WorkerPipe
from a2wsgi_mp.workers.process import serve_slot

from . import cpu
from .apps import app

SCOPE = {
    "type": "http", "method": "GET", "scheme": "http", "path": "/hello", "query_string": b"", "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "http_version": "1.1",
}


def measure(requests: int, profile: cProfile.Profile | None = None) -> float:
    """Worker CPU seconds per request."""
    front, back = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the driver: another process, as the front is (a thread would share our GIL)
        back.close()
        try:
            _drive(front, requests)
        finally:
            os._exit(0)
    front.close()
    pipe = WorkerPipe(back)
    try:
        if profile is not None:
            profile.enable()
        t0 = time.thread_time()
        serve_slot(app, pipe, False)  # until the driver hangs up
        cpu = time.thread_time() - t0
        if profile is not None:
            profile.disable()
    finally:
        pipe.close()
        os.waitpid(pid, 0)
    return cpu / requests


def _drive(front: socket.socket, requests: int, scope: dict[str, Any] = SCOPE) -> None:
    """Send ``requests`` REQUEST frames for ``scope``, each once the last response ended."""
    decoder = protocol.Decoder()
    frame_head = request_head(scope)
    for rid in range(1, requests + 1):
        front.sendall(protocol.encode_request(rid, frame_head, b"", 0))
        answered = False
        while not answered:
            data = front.recv(262144)
            if not data:
                raise RuntimeError("the worker hung up")
            decoder.feed(data)
            answered = any(isinstance(e, End) or (isinstance(e, Start) and e.done) for e in decoder.events())
    front.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_micro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    profile = cProfile.Profile() if args.profile else None
    per = measure(args.requests, profile)
    print(f"worker CPU per request: {per * 1e6:.2f} us ({args.requests} requests)")
    if profile is not None:
        cpu.print_profile(profile, args.requests, 25)


if __name__ == "__main__":
    main()
