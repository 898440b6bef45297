"""uvicorn's h11 protocol, with gunicorn's request-head limits.

h11 already bounds the bytes it buffers for an incomplete head
(``max_incomplete_event_size``, set here to the largest head the limits allow,
answered 431).  What it does not do is count fields or measure the request
line and each field: :class:`LimitedConnection` checks the parsed head, and
the protocol measures the field being received (bytes since the last LF) as
it arrives, so a single huge field is refused before the whole head bound.
"""

from __future__ import annotations

from typing import Any, Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import HeadLimits
from .guard import HeadGuard
from .trickle import TrickleGate

__all__ = ["LimitedConnection", "LimitedH11Protocol"]


class LimitedConnection(h11.Connection):
    """An h11 server connection that checks each head against ``limits``.

    A head past them (or past h11's own buffer bound, its 431) goes to
    ``refuse(status, text)`` and reads as ``NEED_DATA``, so uvicorn neither
    logs it as an invalid request nor answers 400 itself."""

    def __init__(self, limits: HeadLimits, refuse: Callable[[int, str], None]) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_head)
        self.limits = limits
        self.refuse = refuse

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if type(event) is h11.Request:
                self._check(event)
            return event
        except h11.RemoteProtocolError as exc:
            hint = exc.error_status_hint
            if hint not in (414, 431):
                raise
            text = str(exc)
            if hint == 431 and "Too Large" not in text:  # h11's own "Receive buffer too long"
                text = "Request Header Fields Too Large"
            self.refuse(hint, text)
            return h11.NEED_DATA

    def _check(self, event: h11.Request) -> None:
        limits = self.limits
        if len(event.method) + len(event.target) + 10 > limits.max_line:
            raise h11.RemoteProtocolError("URI Too Long", error_status_hint=414)
        headers = event.headers
        if len(headers) > limits.max_fields:
            raise h11.RemoteProtocolError("Request Header Fields Too Large: too many header fields",
                                          error_status_hint=431)
        longest = limits.max_field - 4
        for name, value in headers:
            if len(name) + len(value) > longest:
                raise h11.RemoteProtocolError("Request Header Fields Too Large: a header field is too long",
                                              error_status_hint=431)


# (HeadGuard.connection_made takes an asyncio.Transport, as H11Protocol's does, not a BaseTransport)
class LimitedH11Protocol(TrickleGate, HeadGuard, H11Protocol):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = LimitedConnection(self.limits, self._refuse)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # draining a refused connection
        conn = self.conn
        reading_head = conn.their_state is h11.IDLE and conn.our_state is h11.IDLE
        if reading_head:
            self._head_started()
            tail = self._measure(data)
        super().data_received(data)
        if not reading_head:
            if not self._refused:  # (trickle.py: a body trickled in tiny pieces is read in batches)
                if conn.their_state is h11.SEND_BODY:
                    self._body_read(len(data))
                elif self._trickle_streak or self._gated:
                    self._trickle_end()
            return
        if self._refused:
            return
        if conn.their_state is not h11.IDLE:
            self._head_done()  # (the read may go on into the body: its bytes are not a header line)
        elif self._field_too_long(tail):  # h11 buffers the head until it is whole: judge it by the read
            self._refuse(431, "Request Header Fields Too Large: a header field is too long")
        else:
            self._tail = tail

    def on_response_complete(self) -> None:
        if self._trickle_streak or self._gated:  # answered before its body was whole: read what is left now
            self._trickle_end()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        self._refused = True
        self._disarm_header_timer()
        super().send_400_response(msg)
