"""The worker's half of the direct stream: a streamed body written straight to the client.

Relaying a large body costs the front two copies and a wake-up per chunk (one
process, saturated: a 1 GiB download took 4-5x gunicorn sync's time), so after
the front's TAKE the worker writes the rest of the body to the client's socket
itself, as HTTP/1.1 chunks when the front's head said so (``docs/protocol.md``,
"Direct stream").

A slow client still never holds a worker: the socket is the front's, non-blocking
(O_NONBLOCK is shared by every descriptor of it: never make it blocking), and a
write that finds it full waits at most :data:`PATIENCE`; a client that has taken
less than :data:`MIN_RATE` since the TAKE (once :data:`RATE_AFTER` has passed)
is a slow one too.  Either way the worker gives the rest back to the front
(DIRECT not ``done``, with the unsent bytes of the piece in hand, already
framed) and goes on through the pipe, as without a TAKE: the front buffers for
the client as it does for any relayed response.  A client that is gone (EPIPE,
ECONNRESET) reads as a cancel.
"""

from __future__ import annotations

import select
import socket
from time import monotonic

#: How long a write may wait for the client's socket to take more before the
#: rest of the body goes back to the front.
PATIENCE = 0.05
#: A client slower than this (bytes a second, from the TAKE on) gets the rest from the front...
MIN_RATE = 16 * 1024 * 1024
#: ... judged once this long has passed (a socket buffer takes the first megabytes of anyone).
RATE_AFTER = 0.05
#: Bytes per write (and per chunk, when chunked): what the front gets back at most when handed the rest.
PIECE = 256 * 1024
#: A response complete at its first chunk is offered too when that chunk is this large.
OFFER_WHOLE = 1024 * 1024
#: What :meth:`ClientWriter.write` returns of one piece when it stops there: nothing left unstarted.
_NOTHING = memoryview(b"")


class ClientWriter:
    """Writes body pieces to the client socket passed with a TAKE."""

    __slots__ = ("sock", "chunked", "written", "gone", "tail", "since")

    def __init__(self, fd: int, chunked: bool) -> None:
        sock = socket.socket(fileno=fd)
        # Non-blocking, no timeout: a socket with a timeout poll()s before every send, a
        # syscall per piece that finds room at once (nearly all of them); we poll only when
        # it is full (_send_all).  (It stays O_NONBLOCK, as it must: the flag is shared.)
        sock.setblocking(False)
        self.sock: socket.socket | None = sock
        self.chunked = chunked
        #: Body bytes written (or, for the piece in hand when the client stalled, given back as :attr:`tail`).
        self.written = 0
        #: The client is gone: the response cannot complete.
        self.gone = False
        #: The framed bytes of the last piece the client did not take (set when :meth:`write` returns a rest).
        self.tail = b""
        self.since = monotonic()

    def write(self, data: bytes | memoryview) -> memoryview | None:
        """Write ``data``; None when it all went (or the client is gone: :attr:`gone`),
        else the part of ``data`` not even started, after :attr:`tail` was left for
        the front: the caller ends direct mode and sends that part through the pipe."""
        sock = self.sock
        assert sock is not None
        if not self.chunked and len(data) <= PIECE:  # (nearly every piece of a download: one send)
            return self._write_one(sock, data)
        view = memoryview(data)
        for start in range(0, len(view), PIECE):
            piece = view[start:start + PIECE]
            parts: list[bytes | memoryview] = [b"%x\r\n" % len(piece), piece, b"\r\n"] if self.chunked else [piece]
            try:
                sent = _send_all(sock, parts)
            except OSError:  # EPIPE, ECONNRESET: the client left
                self.gone = True
                self.close()
                return None
            unsent = None if sent is None else b"".join(parts)[sent:]
            rest = self._settle(len(piece), unsent, view[start + PIECE:])
            if rest is not None:
                return rest
        return None

    def _write_one(self, sock: socket.socket, data: bytes | memoryview) -> memoryview | None:
        """:meth:`write` of one unframed piece, which usually leaves in one ``send``."""
        try:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            stalled = None if sent == len(data) else _send_all(sock, [memoryview(data)[sent:]])
        except OSError:  # EPIPE, ECONNRESET: the client left
            self.gone = True
            self.close()
            return None
        return self._settle(len(data), None if stalled is None else bytes(memoryview(data)[sent + stalled:]), _NOTHING)

    def _settle(self, size: int, unsent: bytes | None, rest: memoryview) -> memoryview | None:
        """A piece of ``size`` body bytes was written: None to go on, or ``rest`` (the part of
        the data not started) when the direct stream ends here — the client stalled inside the
        piece (``unsent``: its framed bytes that did not go, the front's to send) or reads too
        slowly."""
        self.written += size
        if unsent is not None:
            self.tail = unsent
            self.close()
            return rest
        elapsed = monotonic() - self.since
        if elapsed > RATE_AFTER and self.written < MIN_RATE * elapsed:  # a slow reader
            self.close()
            return rest
        return None

    def close(self) -> None:
        """Drop our descriptor of the client socket (the front keeps its own)."""
        if self.sock is not None:
            self.sock.close()  # (close(2) of our descriptor, no shutdown: the connection is the front's)
            self.sock = None


def _send_all(sock: socket.socket, parts: list[bytes | memoryview]) -> int | None:
    """Send ``parts`` in order; None once all went, or how many bytes went
    before the socket stayed full for :data:`PATIENCE`."""
    views = [memoryview(p) for p in parts]
    total = 0
    while views:
        try:
            sent = sock.sendmsg(views)
        except BlockingIOError:
            if not _writable(sock, PATIENCE):
                return total
            continue
        total += sent
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]
    return None


def _writable(sock: socket.socket, timeout: float) -> bool:
    """The socket has room again within ``timeout`` seconds (an error or hang-up counts: the
    next send reports it)."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(timeout * 1000))
