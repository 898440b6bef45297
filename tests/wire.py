"""Responses read off the wire by h11, the strictest parser we embed: tests that
check the bytes a server wrote (pipelining, framing, keep-alive) let h11 judge them."""

from __future__ import annotations

from typing import NamedTuple

import h11


class Answer(NamedTuple):
    response: h11.Response
    body: bytes
    #: The connection must close after it (h11's MUST_CLOSE on either side).
    closes: bool


def h11_responses(raw: bytes, methods: list[str]) -> list[Answer]:
    """``raw`` parsed as the responses to requests of ``methods``, in order, up to the
    first that closes the connection; anything but a well-framed response raises."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    out: list[Answer] = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        response, body = None, bytearray()
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}: the framing is broken")
        assert response is not None
        closes = conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE
        out.append(Answer(response, bytes(body), closes))
        if closes:
            break
        conn.start_next_cycle()
    return out
