"""An experiment, not a server: a separate front that reads every request, at its floor.

    python -m benchmarks.split_front APP --port PORT [--workers 2] [--depth 2]

Is a front in its own process — this product's shape — bound to cost more CPU
per request than granian on 2 cores?  Here the front is one ``selectors`` loop
(httptools, keep-alive) that sends each parsed request as a msgpack frame over
a socketpair to one of N forked workers and writes the worker's complete
response back; the workers build the environ and the response exactly as
:mod:`benchmarks.worker_http` does.  ``--depth`` is how many requests a worker
may have in flight: at 1 (today's pool) every request makes its worker sleep
and wake; at 2, under load, a worker finds its next request already in its
socket, and the front's write to it wakes nobody.  Written for issue 22 by the
session's reviewer (docs/performance.md, "The floor, measured").

Everything a server owes its users is missing: no request bodies beyond one
read, no limits, timeouts, slow-reader handling (a response is assumed to fit
the socket), supervision, access log or client-gone handling.
"""

from __future__ import annotations

import collections
import os
import selectors
import signal
import socket
from typing import Any, Callable

import msgpack

from .worker_http import _Conn, _environ, _respond, start

#: The peer the workers' environ names (the front does not forward it: not what is measured).
_PEER = ("127.0.0.1", 40000)


def serve(sock: socket.socket, app: Callable[..., Any], port: int) -> None:
    """A worker: answer every request frame that arrives, in order, all answers of one read in one
    write, until the front hangs up."""
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        try:
            data = sock.recv(262144)
        except ConnectionError:
            data = b""
        if not data:
            return
        unpacker.feed(data)
        out = [msgpack.packb([rid, _respond(app, _environ(_PEER, method, url, [(n, v) for n, v in headers], body,
                                                          port), keep), keep])
               for rid, method, url, headers, body, keep in unpacker]
        sock.sendall(b"".join(out))


def main() -> None:
    args, app, tie_to_parent = start(__doc__, depth=True)
    pipes: list[socket.socket] = []
    for _ in range(args.workers):
        front_end, worker_end = socket.socketpair()
        if os.fork() == 0:
            tie_to_parent()
            front_end.close()
            for p in pipes:
                p.close()
            serve(worker_end, app, args.port)
            os._exit(0)  # the front is gone
        worker_end.close()
        pipes.append(front_end)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # (the workers follow: PDEATHSIG)
    listener = socket.create_server((args.host, args.port), backlog=2048)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    in_flight = dict.fromkeys(pipes, 0)
    unpackers = {p: msgpack.Unpacker(raw=False) for p in pipes}
    for p in pipes:
        sel.register(p, selectors.EVENT_READ, "worker")
    queue: collections.deque[bytes] = collections.deque()
    waiting: dict[int, _Conn] = {}
    next_rid = 0

    def dispatch() -> None:
        batches: dict[socket.socket, list[bytes]] = {}
        while queue:
            pipe = min(pipes, key=in_flight.__getitem__)
            if in_flight[pipe] >= args.depth:
                break
            in_flight[pipe] += 1
            batches.setdefault(pipe, []).append(queue.popleft())
        for pipe, frames in batches.items():
            pipe.sendall(b"".join(frames))

    def close(conn: _Conn) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()

    while True:
        for key, _ in sel.select():
            data_: Any = key.data
            if data_ is None:
                try:
                    sock, peer = listener.accept()
                except BlockingIOError:
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, _Conn(sock, peer))
            elif data_ == "worker":
                pipe: socket.socket = key.fileobj  # type: ignore[assignment]
                chunk = pipe.recv(262144)
                if not chunk:
                    raise SystemExit("a worker died")
                unpackers[pipe].feed(chunk)
                for rid, response, keep in unpackers[pipe]:
                    in_flight[pipe] -= 1
                    conn = waiting.pop(rid, None)
                    if conn is None or conn.sock.fileno() == -1:
                        continue
                    try:
                        conn.sock.send(response)
                    except OSError:
                        keep = False
                    if not keep:
                        close(conn)
                dispatch()
            else:
                conn = data_
                if not conn.read():
                    close(conn)
                    continue
                while conn.ready:
                    method, url, headers, body, keep = conn.ready.pop(0)
                    next_rid += 1
                    waiting[next_rid] = conn
                    queue.append(msgpack.packb([next_rid, method, url, headers, body, keep]))
                dispatch()


if __name__ == "__main__":
    main()
