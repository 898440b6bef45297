"""framing.frame_head: the bytes a client parser sees, checked by h11 and httptools (nothing here parses)."""

from __future__ import annotations

import h11
import httptools
import pytest

from a2wsgi_mp.framing import MAX_BODY, frame_head, status_line

from .wire import h11_responses

DEFAULTS = [(b"date", b"Mon, 07 Dec 2026 10:00:00 GMT"), (b"server", b"uvicorn")]


def _h11(raw: bytes, method: str = "GET") -> tuple[h11.Response, bytes, bool]:
    (answer,) = h11_responses(raw, [method])
    return answer.response, answer.body, answer.closes


class _Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False
        self.keep_alive: bool | None = None
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()  # (meaningful here, not once complete)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _httptools(raw: bytes) -> tuple[_Collect, httptools.HttpResponseParser]:
    sink = _Collect()
    parser = sink.parser = httptools.HttpResponseParser(sink)
    parser.feed_data(raw)
    assert sink.complete
    return sink, parser


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("with_length", [True, False])
def test_a_complete_response_parses_the_same_in_h11_and_httptools(keep_alive: bool, with_length: bool) -> None:
    body = b'{"ok": true}'
    headers = [(b"content-type", b"application/json"), (b"set-cookie", b"a=1; Path=/"),
               (b"set-cookie", b"b=2; Path=/")]
    if with_length:
        headers.append((b"content-length", str(len(body)).encode()))
    framed = frame_head(201, headers, len(body), keep_alive, DEFAULTS)
    assert framed is not None
    head, stays_open = framed
    assert stays_open is keep_alive
    raw = head + body
    response, got, closes = _h11(raw)
    assert response.status_code == 201 and got == body and closes is not keep_alive
    names = [n for n, _ in response.headers]
    assert names[:2] == [b"date", b"server"] and names.count(b"set-cookie") == 2
    assert names.count(b"content-length") == 1
    sink, parser = _httptools(raw)
    assert parser.get_status_code() == 201 and sink.body == body
    assert sink.keep_alive is keep_alive
    assert dict(sink.headers)[b"content-length"] == str(len(body)).encode()


def test_connection_close_from_the_app_is_kept_once_and_closes() -> None:
    framed = frame_head(200, [(b"connection", b"Close"), (b"content-length", b"2")], 2, True, DEFAULTS)
    assert framed is not None
    head, stays_open = framed
    assert not stays_open and head.lower().count(b"connection: close") == 1
    _, _, closes = _h11(head + b"ok")
    assert closes


@pytest.mark.parametrize("status, headers, length", [
    (204, [], 0),  # bodiless statuses: uvicorn's send() knows their rules
    (304, [], 0),
    (101, [], 0),
    (200, [(b"content-length", b"5")], 4),  # a Content-Length the body does not match: the relay cuts it
    (200, [], MAX_BODY + 1),  # large bodies: the relay, in pieces
])
def test_what_the_relay_keeps(status: int, headers: list, length: int) -> None:
    assert frame_head(status, headers, length, True, DEFAULTS) is None


def test_status_lines_have_uvicorns_reason_phrases() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(599) == b"HTTP/1.1 599 \r\n"
    response, _, _ = _h11(frame_head(599, [], 0, True, [])[0])  # type: ignore[index]
    assert response.status_code == 599


def test_the_default_headers_are_those_of_each_call() -> None:
    """The framed default headers are kept between calls (uvicorn replaces its list when the date
    changes): a new list, or another server's, is framed anew."""
    later = [(b"date", b"Mon, 07 Dec 2026 10:00:01 GMT"), (b"server", b"uvicorn")]
    first = frame_head(200, [], 0, True, DEFAULTS)
    second = frame_head(200, [], 0, True, later)
    third = frame_head(200, [], 0, True, [])
    assert first is not None and second is not None and third is not None
    assert b"date: Mon, 07 Dec 2026 10:00:00 GMT\r\nserver: uvicorn\r\n" in first[0]
    assert b"date: Mon, 07 Dec 2026 10:00:01 GMT\r\nserver: uvicorn\r\n" in second[0]
    assert third[0] == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    assert frame_head(200, [], 0, True, DEFAULTS) == first
