"""framing.frame_head: the bytes a client parser sees, checked by h11 and httptools (nothing here parses)."""

from __future__ import annotations

import h11
import httptools
import pytest

from a2wsgi_mp import framing
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


def _uncached(*args: object) -> tuple[bytes, bool] | None:
    framing._HEADS.clear()
    framing._DEFAULTS[:] = None, b""
    return frame_head(*args)  # type: ignore[arg-type]


def test_a_head_framed_again_is_the_cached_one_and_the_same_bytes() -> None:
    defaults = list(DEFAULTS)
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
    first = _uncached(200, headers, 13, True, defaults)
    again = frame_head(200, [tuple(h) for h in headers], 13, True, defaults)  # (equal headers, other objects)
    assert again is first  # (framed once: the cache's)
    assert first is not None and first[0].startswith(b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 10:00:00 GMT\r\n")


@pytest.mark.parametrize("status, headers, length, keep_alive", [
    (404, [(b"content-type", b"text/plain"), (b"content-length", b"13")], 13, True),  # another status
    (200, [(b"content-type", b"text/html"), (b"content-length", b"13")], 13, True),  # another header value
    (200, [(b"content-length", b"13"), (b"content-type", b"text/plain")], 13, True),  # another order
    (200, [(b"content-type", b"text/plain"), (b"content-length", b"13")], 13, False),  # closing
    (200, [(b"content-type", b"text/plain"), (b"content-length", b"13"), (b"connection", b"close")], 13, True),
    (200, [(b"content-type", b"text/plain")], 12, True),  # no length: the body's
    (200, [(b"content-type", b"text/plain"), (b"content-length", b"13")], 12, True),  # a mismatch: the relay's
    (204, [(b"content-type", b"text/plain")], 0, True),  # no body: the relay's
])
def test_a_different_head_is_framed_for_itself(status: int, headers: list, length: int, keep_alive: bool) -> None:
    """Each head warms the cache with the hello head first: what comes back is what an empty cache
    frames, whatever was cached before (and asked twice, the same)."""
    defaults = list(DEFAULTS)
    hello = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
    expected = _uncached(status, headers, length, keep_alive, defaults)
    _uncached(200, hello, 13, True, defaults)
    assert frame_head(status, headers, length, keep_alive, defaults) == expected
    assert frame_head(status, headers, length, keep_alive, defaults) == expected
    assert frame_head(200, hello, 13, True, defaults) != expected


def test_the_cached_heads_are_framed_anew_when_the_date_changes() -> None:
    headers = [(b"content-length", b"2")]
    now = [(b"date", b"Mon, 07 Dec 2026 10:00:00 GMT"), (b"server", b"uvicorn")]
    first = _uncached(200, headers, 2, True, now)
    assert frame_head(200, headers, 2, True, now) is first
    later = [(b"date", b"Mon, 07 Dec 2026 10:00:01 GMT"), (b"server", b"uvicorn")]
    second = frame_head(200, headers, 2, True, later)
    assert second is not None and b"date: Mon, 07 Dec 2026 10:00:01 GMT\r\n" in second[0]
    assert second[0] == first[0].replace(b"10:00:00", b"10:00:01")  # type: ignore[index]
    assert frame_head(200, headers, 2, True, later) is second
    equal_again = list(later)  # (another list, equal or not: uvicorn's next second)
    assert frame_head(200, headers, 2, True, equal_again) is not second


def test_every_cached_head_gets_the_new_date() -> None:
    """Heads cached in one second, the first asked in the next: the others too carry its date."""
    now = [(b"date", b"Mon, 07 Dec 2026 10:00:00 GMT")]
    later = [(b"date", b"Mon, 07 Dec 2026 10:00:01 GMT")]
    _uncached(200, [(b"content-length", b"2")], 2, True, now)
    assert frame_head(404, [(b"content-length", b"2")], 2, True, now) is not None
    frame_head(200, [(b"content-length", b"2")], 2, True, later)
    framed = frame_head(404, [(b"content-length", b"2")], 2, True, later)
    assert framed is not None and framed[0] == b"HTTP/1.1 404 Not Found\r\ndate: Mon, 07 Dec 2026 10:00:01 GMT\r\n" \
        b"content-length: 2\r\n\r\n"


def test_the_cache_is_bounded() -> None:
    defaults = list(DEFAULTS)
    _uncached(200, [], 0, True, defaults)
    for i in range(framing.HEADS_MAX * 2):  # (a cookie per response: every head differs)
        framed = frame_head(200, [(b"set-cookie", b"s=%d" % i)], 0, True, defaults)
        assert framed is not None and b"set-cookie: s=%d\r\n" % i in framed[0]
    assert len(framing._HEADS) == framing.HEADS_MAX
