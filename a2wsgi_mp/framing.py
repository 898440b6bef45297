"""A complete response's head, framed as uvicorn's httptools protocol frames it (sans-IO).

Used where a2wsgi_mp writes a whole response to the client itself instead of
handing it to the ASGI server message by message (``pool/direct.py``): the
front's own uvicorn protocol, plain HTTP/1.1.  The bytes are checked against
the h11 and httptools parsers in ``tests/test_framing.py``; nothing here parses.
"""

from __future__ import annotations

import http
from collections.abc import Sequence

#: Bodies larger than this go through the ASGI server's ``send()`` as before.
MAX_BODY = 1024 * 1024

_STATUS_LINES: dict[int, bytes] = {}
#: The server's default headers (uvicorn's ``server_state.default_headers``, a list it replaces
#: when the date changes) last framed, and their bytes.
_DEFAULTS: list = [None, b""]
#: Whole heads framed with those defaults: (status, headers, body length, keep-alive) -> what
#: :func:`frame_head` returned.  Most responses of a site are the same few heads (hello's is one);
#: emptied with each new defaults list (once a second), and filled no further than this many
#: (a site whose every head differs -- a cookie per response -- pays one dict look-up more).
_HEADS: dict[tuple, tuple[bytes, bool]] = {}
HEADS_MAX = 64


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return line


def frame_head(status: int, headers: Sequence[tuple[bytes, bytes]], body_length: int, keep_alive: bool,
               default_headers: Sequence[Sequence[bytes]]) -> tuple[bytes, bool] | None:
    """The response head as uvicorn's httptools protocol writes it, and whether the
    connection stays open; None if this response must go through the relay.

    ``headers`` are the app's, already checked and lower-cased by
    :mod:`a2wsgi_mp.response` (no Transfer-Encoding).  The body is complete and
    ``body_length`` long, so a missing Content-Length is added (uvicorn would
    chunk it: both are valid framing of a complete body).
    """
    key = (status, tuple(headers), body_length, keep_alive)
    if default_headers is _DEFAULTS[0]:
        framed = _HEADS.get(key)
        if framed is not None:
            return framed
    else:  # (a new list once a second, uvicorn's date: framed once, and the heads framed anew)
        _DEFAULTS[:] = default_headers, b"".join(b"%s: %s\r\n" % (name, value) for name, value in default_headers)
        _HEADS.clear()
    if status < 200 or status == 204 or status == 304 or body_length > MAX_BODY:
        return None
    parts = [_STATUS_LINES.get(status) or status_line(status), _DEFAULTS[1]]
    has_length = close = False
    for name, value in headers:
        if name == b"content-length":
            if int(value) != body_length:
                return None  # the relay's checks cut or refuse it
            has_length = True
        elif name == b"connection" and b"close" in [t.strip().lower() for t in value.split(b",")]:
            close = True
        parts += (name, b": ", value, b"\r\n")
    if not has_length:
        parts.append(b"content-length: %d\r\n" % body_length)
    if not keep_alive and not close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    framed = b"".join(parts), keep_alive and not close
    if len(_HEADS) < HEADS_MAX:
        _HEADS[key] = framed
    return framed


