"""The one plain-text reply helper (a2wsgi_mp.replies), in each of the forms it is sent in."""

from __future__ import annotations

import asyncio
from typing import Any

from a2wsgi_mp.headlimits.guard import plain_response
from a2wsgi_mp.replies import CLOSE, plain_headers, plain_reply, send_plain
from a2wsgi_mp.response import INTERNAL_ERROR_BODY, INTERNAL_ERROR_HEADERS


def test_plain_reply_is_the_text_a_newline_and_its_length() -> None:
    body, headers = plain_reply("Gateway Timeout", [(b"retry-after", b"1")])
    assert body == b"Gateway Timeout\n"
    assert headers == [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"16"),
                       (b"retry-after", b"1")]
    assert plain_reply("é")[0] == "é\n".encode()
    assert plain_reply("\udcff")[0] == b"?\n"  # a lone surrogate (from an exception's text) cannot fail the reply


def test_internal_error_headers_keep_their_shape() -> None:
    assert INTERNAL_ERROR_HEADERS == [(b"content-type", b"text/plain; charset=utf-8"),
                                      (b"content-length", b"%d" % len(INTERNAL_ERROR_BODY)), CLOSE]
    assert plain_headers(b"") == [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"0")]


def test_send_plain_sends_one_whole_response() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(send_plain(send, 503, "Service Unavailable", [(b"retry-after", b"1")]))
    assert sent == [
        {"type": "http.response.start", "status": 503,
         "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"20"),
                     (b"retry-after", b"1")]},
        {"type": "http.response.body", "body": b"Service Unavailable\n", "more_body": False},
    ]


def test_the_head_guard_writes_it_raw_after_the_server_headers() -> None:
    raw = plain_response(431, "Request Header Fields Too Large", [(b"server", b"uvicorn")])
    assert raw == (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                   b"server: uvicorn\r\n"
                   b"content-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\n\r\n"
                   b"Request Header Fields Too Large\n")
