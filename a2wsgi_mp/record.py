"""One request's record: what the access log and the metrics both read.

The front fills a :class:`Record` as the request goes (queued, on which worker,
what status, how many bytes) and hands it, once finished, to the sinks of its
process: the metrics (:mod:`a2wsgi_mp.pool.metrics`) and, when on, the access
log (:mod:`a2wsgi_mp.accesslog`).  Nothing is formatted on the request path:
the record is a handful of numbers and a reference to the ASGI scope.

Requests refused before any app sees them (a head past the limits: 408, 414,
431; a malformed head: 400) are recorded by the protocol
(:mod:`a2wsgi_mp.headlimits.guard`) and go to :data:`refusal_sink`, which the
process's :class:`~a2wsgi_mp.pool.app.WSGIPool` sets when it starts.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

__all__ = ["Record", "refused", "refusal_sink"]


class Record:
    """One request, from the front's point of view.  Times are ``time.perf_counter()`` seconds."""

    __slots__ = ("scope", "start", "duration", "queued", "pid", "status", "reason", "bytes_in", "bytes_out",
                 "headers")

    def __init__(self, scope: Mapping[str, Any], start: float) -> None:
        self.scope = scope
        self.start = start
        #: Seconds from arrival to the end of the response (set when the record is finished).
        self.duration = 0.0
        #: Seconds spent waiting for a free worker (0: one was idle).
        self.queued = 0.0
        #: The worker process that served it (None: answered by the front alone).
        self.pid: int | None = None
        #: The status sent (0: none; the client left first).
        self.status = 0
        #: Why the front answered (or gave up) itself: "queue full", "worker died"... ("": the app answered).
        self.reason = ""
        #: Request body bytes received, response body bytes sent.
        self.bytes_in = 0
        self.bytes_out = 0
        #: The response headers sent (for the access log's ``%({name}o)s``).
        self.headers: list[tuple[bytes, bytes]] = []

    def answered(self, status: int, reason: str, size: int) -> None:
        """The front answered ``status`` itself (a refusal or an error page of ``size`` body bytes)."""
        self.status = status
        self.reason = reason
        self.bytes_out += size


#: Called with the record of every request the protocol refused (set by the pool of this process).
refusal_sink: Callable[[Record], None] | None = None


def refused(client: Any, status: int, reason: str, elapsed: float = 0.0, method: str = "", target: str = "") -> None:
    """Record a request the protocol answered itself, before any scope existed;
    ``elapsed``: seconds since its head began."""
    sink = refusal_sink
    if sink is None:
        return
    scope: dict[str, Any] = {"type": "http", "client": client, "headers": ()}
    if method:  # what is known of the request line (nothing, for a line too long)
        scope.update(method=method, path=target or "-", raw_path=(target or "-").encode("latin-1", "replace"))
    record = Record(scope, time.perf_counter() - elapsed)
    record.answered(status, reason, len(reason) + 1)
    sink(record)
