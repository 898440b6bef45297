"""A request body trickled in tiny pieces wakes the front in batches, not once a piece.

A client that sends its body a few bytes at a time, slowly (P4: 2,000 clients, a
byte every 0.1 s each), costs the front one wake-up per TCP segment: epoll, the
``recv``, uvloop's read callback, the parser, uvicorn's ``on_body``.  The pool
reads such a body in batches (``pool/app.py`` ``_read_body``: the request task looks
at it every ``TRICKLE_WAIT`` s), but the protocol still woke for every segment:
~10 µs of the front's CPU per trickled piece, most of it the read itself.

So the protocol gates such a connection: once :data:`STREAK` reads in a row inside a
body were each of at most :data:`PIECE` bytes and came more than :data:`GAP` s after
the previous read, it raises the socket's ``SO_RCVLOWAT`` to :data:`LOWAT` bytes.  The
kernel then keeps (and acknowledges) the pieces without waking the front — epoll
reports the socket readable only once that many bytes are queued, or at a FIN, a
reset or an error — and a hold later (below) the gate opens: ``SO_RCVLOWAT`` back to 1,
which wakes the front at once if bytes are queued, and one ``recv`` takes them all.
A read after that which is still tiny closes the gate again; a larger one (the client
sped up, or :data:`LOWAT` bytes came within the hold) or the end of the body leaves
it open.

Why ``SO_RCVLOWAT`` and not ``transport.pause_reading()`` (tried first, and on the
``sched`` branch): a paused socket is not polled, so a client's disconnect would be
seen only when the hold ends; and uvloop drops a paused socket from epoll lazily (the
next piece still wakes the front, to unregister it), then registers it again on
resume.  With the low-water mark the socket stays registered, nothing wakes the front
until the hold ends, and a FIN or a reset wakes it as usual: **a gated client's
disconnect is seen at once**.  Reading is never paused, so uvicorn's own flow control
is untouched.

How long a hold: as long as the server can afford, no longer.  Each gated connection
costs the front one wake-up per hold (the ticker's ``setsockopt``, the read of the batch,
the request task), so the hold grows with the number of gated connections: at least
:data:`MIN_HOLD` (the pool's ``TRICKLE_WAIT``: a trickled body was already read every
0.5 s), at most :data:`HOLD`, and in between such that the gates open at most
:data:`OPENS` times a second in all -- a few slow clients wait 0.5 s per batch, 2,000
(P4: a byte every 0.1 s each) 2 s.  ``docs/performance.md`` has the measurements.

One ticker per server (:class:`Ticker`), not a timer per connection, opens the
gates: gated connections queue in the order they were gated, and the ticker runs
every ``MIN_HOLD / SLICES`` s while any is queued, so 2,000 connections open spread
over the hold, not in one burst.

What a gated connection costs its client: its pieces reach the app at most a hold
(and a tick) late, so a trickled body's request starts that much after its last
byte (the pool then reads it at once: ``pool/app.py`` ``_read_body`` does not wait
again for pieces the protocol held).  The hold is at most a quarter of the pool's
``body_timeout``, so a late read never turns a client on time into a 408.  Nothing is
lost or reordered: the bytes wait in the socket's receive queue.  TCP sockets only
(the low-water mark does not gate ``poll`` on Unix sockets).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any

#: A read of at most this many bytes is a tiny piece (the pool's ``TRICKLE_PIECE``).
PIECE = 512
#: ... and slow when it came more than this many seconds after the previous read.
GAP = 0.02
#: Tiny slow reads in a row before the gate closes.
STREAK = 4
#: Seconds a gated connection wakes no one: at least MIN_HOLD, at most HOLD (and at most a
#: quarter of the pool's ``body_timeout``), and in between the number of gated connections / OPENS.
MIN_HOLD = 0.5
HOLD = 2.0
#: Gate openings per second, in all, that the hold aims at (see above).
OPENS = 1000.0
#: The ticker runs every ``MIN_HOLD / SLICES`` seconds while connections are gated.
SLICES = 32
#: A gated socket is readable once this many bytes are queued (a client that sends that much
#: within the hold is no trickle: read at once, and the gate stays open).
LOWAT = 8192

__all__ = ["GAP", "HOLD", "LOWAT", "MIN_HOLD", "OPENS", "PIECE", "SLICES", "STREAK", "Ticker", "TrickleGate",
           "hold_for"]


class Ticker:
    """The gated connections of one server and the one timer that opens them."""

    __slots__ = ("loop", "min_hold", "max_hold", "step", "queue", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, max_hold: float) -> None:
        self.loop = loop
        self.max_hold = max_hold
        self.min_hold = min(MIN_HOLD, max_hold)
        self.step = self.min_hold / SLICES
        #: (loop time to open at, connection), in that order
        self.queue: deque[tuple[float, TrickleGate]] = deque()
        self.handle: asyncio.TimerHandle | None = None

    def hold(self) -> float:
        """The hold of a connection gated now (with ``len(queue)`` gated already)."""
        return min(self.max_hold, max(self.min_hold, len(self.queue) / OPENS))

    def add(self, gate: "TrickleGate") -> None:
        """``gate`` closed: open it a hold from now (never before one gated earlier: the queue stays in order)."""
        queue = self.queue
        at = self.loop.time() + self.hold()
        if queue and queue[-1][0] > at:
            at = queue[-1][0]
        queue.append((at, gate))
        if self.handle is None:
            self.handle = self.loop.call_later(self.step, self._tick)

    def _tick(self) -> None:
        self.handle = None
        queue = self.queue
        due = self.loop.time() + self.step / 2  # (the nearest tick, not the next one)
        while queue and queue[0][0] <= due:
            queue.popleft()[1]._trickle_open()
        if queue:
            self.handle = self.loop.call_later(self.step, self._tick)


def hold_for(config: Any, app: Any) -> float:
    """The longest hold for a server: :data:`HOLD`, at most a quarter of the pool's
    ``body_timeout`` (when the app is a pool with one); looked up once per uvicorn config."""
    hold = getattr(config, "_a2wsgi_mp_trickle_hold", None)
    if hold is None:
        from ..pool.fastpath import find_pool  # (not at the top: pool/ imports this package)

        pool = find_pool(app)
        timeout = pool.config.body_timeout if pool is not None else 0.0
        hold = min(HOLD, timeout / 4) if timeout else HOLD
        try:
            config._a2wsgi_mp_trickle_hold = hold
        except AttributeError:
            pass
    return float(hold)


class TrickleGate:
    """The gate, for uvicorn's protocol classes (it uses their ``loop``, ``transport``,
    ``config``, ``app`` and ``server_state``).  The concrete protocol calls
    :meth:`_body_read` after each read that left a request body still coming, and
    :meth:`_trickle_end` when the body is whole or answered."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    config: Any
    app: Any
    server_state: Any

    _trickle_last = 0.0  # loop time of the previous read inside this body
    _trickle_streak = 0  # tiny slow reads in a row
    _gated = False  # SO_RCVLOWAT is LOWAT
    _trickle_sock: Any = None  # the connection's socket, once looked up; False: not a TCP one

    def _body_read(self, size: int) -> None:
        """A read of ``size`` bytes left the request body still coming: a tiny slow
        one adds to the streak, and past :data:`STREAK` of them the gate closes."""
        now = self.loop.time()
        if size <= PIECE and now - self._trickle_last > GAP:
            self._trickle_streak += 1
        else:
            self._trickle_streak = 0
        self._trickle_last = now
        if self._trickle_streak >= STREAK and not self._gated and self._set_lowat(LOWAT):
            self._gated = True
            self._ticker().add(self)

    def _trickle_open(self) -> None:
        """The hold is over (or the body ended, or was answered): the queued bytes, if any, are read now."""
        if self._gated:
            self._gated = False
            if not self.transport.is_closing():
                self._set_lowat(1)  # (the kernel wakes the loop at once if bytes are queued)

    def _trickle_end(self) -> None:
        """The body is whole (or the response went out): the next body starts afresh, and a closed gate opens."""
        self._trickle_streak = 0
        self._trickle_last = 0.0
        if self._gated:
            self._trickle_open()

    def _set_lowat(self, value: int) -> bool:
        """``SO_RCVLOWAT = value`` on the connection's TCP socket; False where there is none."""
        sock = self._trickle_sock
        if sock is None:
            sock = self.transport.get_extra_info("socket")
            if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
                sock = False
            self._trickle_sock = sock
        if sock is False:
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, value)
        except (OSError, ValueError):  # (closed under us)
            return False
        return True

    def _ticker(self) -> Ticker:
        state = self.server_state
        ticker: Ticker | None = getattr(state, "_a2wsgi_mp_trickle_ticker", None)
        if ticker is None or ticker.loop is not self.loop:
            ticker = Ticker(self.loop, hold_for(self.config, self.app))
            state._a2wsgi_mp_trickle_ticker = ticker
        return ticker
