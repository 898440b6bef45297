"""What the bounded protocols share: the connection cap, the header timeout,
the send timeout, the refusal (a plain response, then a lingering close) and
the line meter.

A mixin for uvicorn's protocol classes: it uses their ``loop``, ``transport``,
``flow``, ``cycle``, ``server_state`` and ``logger`` and nothing else.
"""

from __future__ import annotations

import asyncio
import fcntl
import http
import logging
import struct
import termios
import time
from typing import Any

from .. import record
from ..replies import CLOSE, plain_reply
from . import HeadLimits

#: Seconds a refused connection is still read (and the bytes dropped) after the
#: answer, so the client reads the answer instead of a reset.
LINGER = 2.0
#: Seconds between two "connection limit reached" warnings.
WARN_EVERY = 10.0
#: The send timeout is checked this often at most (and 4 times per timeout at least).
SEND_CHECK = 1.0

logger = logging.getLogger("a2wsgi_mp")


class Refused(Exception):
    """Raised from a parser callback to stop parsing a head past the limits."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def plain_response(status: int, text: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole ``connection: close`` response, written straight to the transport."""
    body, headers = plain_reply(text, [CLOSE])
    phrase = http.HTTPStatus(status).phrase.encode()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    lines += [name + b": " + value + b"\r\n" for name, value in [*default_headers, *headers]]
    lines += [b"\r\n", body]
    return b"".join(lines)


class HeadGuard:
    """Per-connection guards; the concrete protocols call the ``_guard_*`` hooks."""

    limits: HeadLimits = HeadLimits()
    # limits.max_*, as plain class attributes for the per-header checks (set by protocol_class)
    _max_line = limits.max_line
    _max_field = limits.max_field
    _max_fields = limits.max_fields
    _max_head = limits.max_head
    #: Class-wide (per server process): when the cap was last reported.
    _cap_warned_at = 0.0

    # set by uvicorn's protocol classes
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    server_state: Any
    cycle: Any
    flow: Any  # (from connection_made on)

    _rejected = False  # closed at accept (over the connection cap)
    _refused = False  # answered 4xx: only draining until the close
    _deferred: tuple[int, str] | None = None  # a refusal owed once the responses in flight are out
    _header_timer: asyncio.TimerHandle | None = None
    _linger_timer: asyncio.TimerHandle | None = None
    _send_timer: asyncio.TimerHandle | None = None
    _unsent = 0  # bytes the client had not accepted at the last look
    _unsent_since = 0.0  # loop time of the last byte it accepted
    _heard = False  # bytes of the next request head have arrived
    _head_since: float | None = None  # loop time the current head began (None: no head under way)
    _tail = 0  # bytes since the last LF while reading a head

    # ------------------------------------------------------------ accept

    def connection_made(self, transport: asyncio.Transport) -> None:
        if not self._guard_accept(transport):
            return
        super().connection_made(transport)  # type: ignore[misc]  # uvicorn's protocol, next in the MRO
        self._start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._rejected:
            return
        self._disarm_all()
        super().connection_lost(exc)  # type: ignore[misc]

    def _guard_accept(self, transport: asyncio.Transport) -> bool:
        """False (and the connection closed) when the server holds ``limits.connections`` already."""
        cap = self.limits.connections
        if not cap or len(self.server_state.connections) < cap:
            return True
        self._rejected = True
        transport.close()
        now = time.monotonic()
        if now - HeadGuard._cap_warned_at > WARN_EVERY:
            HeadGuard._cap_warned_at = now
            logger.warning("connection limit (%d) reached: new connections are closed at once", cap)
        return False

    # ------------------------------------------------------------ header timeout

    # One timer per connection, re-armed only when it fires: a request costs
    # a ``loop.time()`` when its head starts, not a timer of its own.

    def _start_header_clock(self) -> None:
        """At accept: the first head's clock starts now (an idle connection is a slow head)."""
        self._head_since = self.loop.time()
        timeout = self.limits.header_timeout
        if timeout:
            self._header_timer = self.loop.call_later(timeout, self._on_header_timeout)

    def _head_started(self) -> None:
        """Bytes of a head arrived: its clock runs from the first of them."""
        if self._head_since is None:
            self._head_since = self.loop.time()
        self._heard = True

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _head_done(self) -> None:
        """A whole head arrived: its clock stops (the body has none; keep-alive is uvicorn's)."""
        self._head_since = None
        self._heard = False
        self._tail = 0

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._refused:
            return
        timeout = self.limits.header_timeout
        since = self._head_since
        cycle = self.cycle
        left = timeout if since is None else since + timeout - self.loop.time()
        if left > 0.001 or (cycle is not None and not cycle.response_complete):
            # No head under way (between requests, or in a body), or not late
            # yet, or we owe the client a response: look again later.
            self._header_timer = self.loop.call_later(left if left > 0.001 else timeout, self._on_header_timeout)
            return
        if self._heard:
            self._refuse(408, "Request Timeout: the request head took too long")
        else:  # never sent a byte (of this request): like nginx, just close
            self._disarm_all()
            self.transport.close()

    # ------------------------------------------------------------ refusing

    def _refuse(self, status: int, text: str) -> None:
        """Answer ``status`` and close; keep reading (and dropping) briefly so the
        client sees the answer rather than a reset."""
        if self._refused:
            return
        self._refused = True
        self._disarm_header_timer()
        self._record_refusal(status, text)
        if self._response_out():
            # A request read before this head is still being answered: it gets
            # its response first, then the refusal (as gunicorn does).  Nothing
            # more is read meanwhile; on_response_complete sends the refusal.
            self._deferred = (status, text)
            self.flow.pause_reading()
            return
        self._answer_refusal(status, text)

    def _answer_refusal(self, status: int, text: str) -> None:
        transport = self.transport
        self._unset_keepalive_if_required()  # type: ignore[attr-defined]  # uvicorn's
        transport.write(plain_response(status, text, self.server_state.default_headers))
        flow = getattr(self, "flow", None)
        if flow is not None:
            flow.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    def _response_out(self) -> bool:
        """A response is still owed on this connection (the last request read is unanswered)."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # uvicorn's: starts a pipelined request, if any
        deferred = self._deferred
        if deferred is not None and not self._response_out() and not self.transport.is_closing():
            self._deferred = None
            self._answer_refusal(*deferred)

    # ------------------------------------------------------------ send timeout

    # nginx's send_timeout: "if the client does not receive anything within
    # this time, the connection is closed".  Only a connection whose transport
    # stopped taking writes (past its high-water mark) is watched, by one timer
    # while it is paused; "received" is the bytes not yet acknowledged by the
    # client (the transport's buffer plus the socket's send queue) going down.

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        timeout = self.limits.send_timeout
        if timeout and self._send_timer is None and not self.transport.is_closing():
            self._unsent = self._unacknowledged()
            self._unsent_since = self.loop.time()
            self._send_timer = self.loop.call_later(min(SEND_CHECK, timeout / 4), self._check_send)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self._disarm_send_timer()

    def _disarm_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _check_send(self) -> None:
        """Still paused: has the client accepted a byte since the last look?"""
        self._send_timer = None
        transport = self.transport
        timeout = self.limits.send_timeout
        unsent = self._unacknowledged()
        now = self.loop.time()
        if unsent < self._unsent:
            self._unsent, self._unsent_since = unsent, now
        elif now - self._unsent_since >= timeout:
            client = getattr(self, "client", None)
            logger.warning("%s - send timeout: the client accepted no byte for %g s; connection closed",
                           "%s:%d" % tuple(client) if client else "-", timeout)
            transport.abort()  # (close() would wait for the client to read what is buffered)
            return
        self._send_timer = self.loop.call_later(min(SEND_CHECK, timeout / 4), self._check_send)

    def _unacknowledged(self) -> int:
        """Response bytes the client has not accepted yet: ours, and the kernel's (Linux: SIOCOUTQ)."""
        transport = self.transport
        pending = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                pending += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            except (OSError, ValueError, AttributeError):
                pass
        return pending

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request: recorded like our refusals."""
        self._record_refusal(400, msg)
        super().send_400_response(msg)  # type: ignore[misc]

    def _record_refusal(self, status: int, text: str) -> None:
        """The refusal's access-log line and metrics (see :mod:`a2wsgi_mp.record`)."""
        since = self._head_since
        record.refused(getattr(self, "client", None), status, text,
                       self.loop.time() - since if since is not None else 0.0)

    def _disarm_all(self) -> None:
        self._disarm_send_timer()
        self._disarm_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    # ------------------------------------------------------------ line meter

    def _measure(self, data: bytes) -> int:
        """Bytes since the last LF once ``data`` is added (not stored)."""
        i = data.rfind(b"\n")
        return self._tail + len(data) if i < 0 else len(data) - i - 1

    def _field_too_long(self, tail: int) -> bool:
        return tail > self._max_field
