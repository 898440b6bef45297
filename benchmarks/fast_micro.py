"""The front's own cost per request on the fast path, without the client's TCP: our
uvicorn protocol fed requests in-process.

    python -m benchmarks.fast_micro [--requests 40000] [--concurrency 32] [--profile]

Starts a real pool (two worker processes serving the hello app) and ``concurrency``
connections of a2wsgi_mp's protocol (``headlimits``: the CLI's, or ``--front``), each on a stand-in
transport: a connection's next request is fed (by ``call_soon``) as soon as its
response is written.  So this process does what the front does for a keep-alive
client — parse, dispatch, the IPC hop, frame and write the response — except the
client socket's syscalls.  Prints this process's CPU time per request
(``time.process_time``); with ``--profile``, the functions that cost most (cProfile:
its overhead inflates Python code about threefold).  For A/B of front changes: it
moves far less than end-to-end figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import resource
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from a2wsgi_mp import WSGIPool
from a2wsgi_mp.headlimits import HeadLimits, protocol_class

REQUEST = (b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")


class _Transport(asyncio.Transport):
    """A client connection that reads every response at once, then sends its next request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, left: list[int], done: asyncio.Future) -> None:
        super().__init__()
        self.loop = loop
        self.left = left
        self.done = done
        self.protocol: Any = None
        self.closing = False

    def write(self, data: Any) -> None:
        if bytes(data).endswith(b"Hello, world!"):
            if self.left[0] > 0:
                self.left[0] -= 1
                self.loop.call_soon(self.protocol.data_received, REQUEST)
            else:
                self.left[1] -= 1  # this connection is done
                if not self.left[1] and not self.done.done():
                    self.done.set_result(None)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False


async def measure(requests: int, concurrency: int, profile: cProfile.Profile | None,
                  front: str = "ours") -> tuple[float, float, float]:
    """(CPU seconds, of which user, wall seconds) per request; ``front``: the CLI's protocol
    ("ours", :mod:`a2wsgi_mp.headlimits.lean`), the uvicorn protocol it hands connections over to
    ("uvicorn", with the fast path), or the lean-front experiment's ("lean", :mod:`benchmarks.lean_front`)."""
    pool = WSGIPool("benchmarks.apps:app", workers=2, timeout=30)
    await pool.startup()
    loop = asyncio.get_running_loop()
    try:
        http = protocol_class("httptools", HeadLimits(), lean=front != "uvicorn")
        config = Config(app=pool, http=http, lifespan="off",
                        log_level="warning", access_log=False, proxy_headers=False)
        config.load()
        state = ServerState()
        cls = config.http_protocol_class
        if front == "lean":
            from .lean_front import LeanHTTP

            def cls(**_: Any) -> Any:
                return LeanHTTP(pool.dispatcher, ("127.0.0.1", 8000))

        async def run(n: int) -> None:
            left = [n * concurrency, concurrency]  # requests to send, connections busy
            done = loop.create_future()
            for _ in range(concurrency):
                proto = cls(config=config, server_state=state, app_state={})
                transport = _Transport(loop, left, done)
                transport.protocol = proto
                proto.connection_made(transport)
                left[0] -= 1
                proto.data_received(REQUEST)
            await done
            for p in list(state.connections):
                p.transport.close()
                p.connection_lost(None)

        await run(200 // concurrency + 1)  # warm-up
        per = requests // concurrency
        if profile is not None:
            profile.enable()
        c0, u0, w0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_utime, time.perf_counter()
        await run(per)
        c1, u1, w1 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_utime, time.perf_counter()
        if profile is not None:
            profile.disable()
        served = per * concurrency
        return (c1 - c0) / served, (u1 - u0) / served, (w1 - w0) / served
    finally:
        await pool.shutdown(5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fast_micro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--front", choices=("ours", "uvicorn", "lean"), default="ours",
                        help="the CLI's protocol; our uvicorn protocol (with the fast path), which it hands "
                             "connections over to; or the lean-front experiment's (no uvicorn, no ASGI)")
    args = parser.parse_args(argv)
    import uvloop

    profile = cProfile.Profile() if args.profile else None
    front_cpu, user, wall = uvloop.run(measure(args.requests, args.concurrency, profile, args.front))
    print(f"front CPU per request: {front_cpu * 1e6:.2f} us ({user * 1e6:.2f} us user; wall {wall * 1e6:.2f} us, "
          f"{args.requests} requests)")
    if profile is not None:
        from .cpu import print_profile

        print_profile(profile, args.requests, 30)


if __name__ == "__main__":
    main()
