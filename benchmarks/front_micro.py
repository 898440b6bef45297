"""The front's own cost per request, without HTTP: ``WSGIPool`` driven in-process.

    python -m benchmarks.front_micro [--requests 40000] [--concurrency 32] [--profile] [--access-log]

Starts a real pool (two worker processes serving the hello app) and calls the
ASGI app directly from ``concurrency`` tasks on one uvloop loop, with a
``receive`` and a ``send`` that cost next to nothing.  Prints this process's
CPU time per request (``time.process_time``: our ASGI app, the IPC hop and the
loop — no HTTP parsing, no client socket), and with ``--profile`` the functions
that cost most (cProfile: its overhead inflates Python code about threefold).
``--access-log`` turns the access log on, its lines formatted and written to
/dev/null (what a log line costs the front).
Use it to compare front changes A/B: it moves far less than end-to-end figures,
and what it measures is exactly what a2wsgi_mp adds to an ASGI server.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import time
from typing import Any

from a2wsgi_mp import WSGIPool

SCOPE = {
    "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
    "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return REQUEST


async def _send(message: dict[str, Any]) -> None:
    return None


async def measure(requests: int, concurrency: int, profile: cProfile.Profile | None,
                  access_log: bool = False) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per request."""
    options = {"access_log": True} if access_log else {}
    app = WSGIPool("benchmarks.apps:app", workers=2, timeout=30, **options)
    await app.startup()
    try:
        async def client(n: int) -> None:
            for _ in range(n):
                await app(dict(SCOPE), _receive, _send)

        await asyncio.gather(*(client(200) for _ in range(concurrency)))  # warm-up
        per = requests // concurrency
        if profile is not None:
            profile.enable()
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(per) for _ in range(concurrency)))
        c1, w1 = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.disable()
        served = per * concurrency
        return (c1 - c0) / served, (w1 - w0) / served
    finally:
        await app.shutdown(5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.front_micro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--access-log", action="store_true", help="log every request (to /dev/null)")
    args = parser.parse_args(argv)
    if args.access_log:
        log = logging.getLogger("a2wsgi_mp.access")
        log.addHandler(logging.StreamHandler(open(os.devnull, "w")))
        log.setLevel(logging.INFO)
        log.propagate = False
    profile = cProfile.Profile() if args.profile else None
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    cpu, wall = runner(measure(args.requests, args.concurrency, profile, args.access_log))
    print(f"front CPU per request: {cpu * 1e6:.2f} us (wall {wall * 1e6:.2f} us, {args.requests} requests, "
          f"concurrency {args.concurrency}{', access log on' if args.access_log else ''})")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
