"""The short plain-text replies the package writes itself (refusals, errors).

One shape for every entry point and both sides of the pipe: ``text`` and a
newline, as ``text/plain; charset=utf-8`` with its Content-Length, plus the
caller's extra headers (``connection: close``, ``retry-after``...).  The
worker sends it over IPC, the front and the gunicorn hooks as ASGI messages,
the head guard as raw bytes, :class:`~a2wsgi_mp.asgi.ASGIMiddleware` through
``start_response``.
"""

from __future__ import annotations

from typing import Iterable

from .types import Send

Headers = list[tuple[bytes, bytes]]

CONTENT_TYPE = (b"content-type", b"text/plain; charset=utf-8")
CLOSE = (b"connection", b"close")


def plain_headers(body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> Headers:
    """Content-Type and Content-Length for ``body``, then ``extra``."""
    return [CONTENT_TYPE, (b"content-length", b"%d" % len(body)), *extra]


def plain_reply(text: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> tuple[bytes, Headers]:
    """The body (``text`` and a newline) and headers of a plain-text reply."""
    body = text.encode("utf-8", "replace") + b"\n"
    return body, plain_headers(body, extra)


async def send_plain(send: Send, status: int, text: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a whole plain-text response through an ASGI ``send``."""
    body, headers = plain_reply(text, extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
