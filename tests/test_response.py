"""response.run_wsgi against a recording sink: PEP 3333 semantics, no transport."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from a2wsgi_mp.response import INTERNAL_ERROR_BODY, SinkGone, run_wsgi

ENVIRON: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}


class Sink:
    def __init__(self, cancel_after_chunks: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.cancel_after_chunks = cancel_after_chunks

    def start(self, status, headers, body, done):
        assert not self.calls, f"start after {self.calls}"
        self.calls.append(("start", status, list(headers), body, done))

    def body(self, chunk):
        assert self.calls and self.calls[0][0] == "start" and not self.closed
        assert chunk, "the sink must only get non-empty chunks"
        self.calls.append(("body", chunk))

    def end(self):
        assert self.calls and not self.closed
        self.calls.append(("end",))

    def abort(self, reason):
        assert self.calls and not self.closed, "abort before start"
        self.calls.append(("abort", reason))

    def cancelled(self):
        if self.cancel_after_chunks is None:
            return False
        return sum(1 for c in self.calls if c[0] in ("start", "body")) >= self.cancel_after_chunks

    @property
    def closed(self) -> bool:
        return bool(self.calls) and (self.calls[-1][0] in ("end", "abort") or
                                     (self.calls[-1][0] == "start" and self.calls[-1][4]))

    @property
    def status(self) -> int:
        return self.calls[0][1]

    @property
    def headers(self) -> dict:
        return dict(self.calls[0][2])

    @property
    def body_bytes(self) -> bytes:
        out = b""
        for c in self.calls:
            if c[0] == "start":
                out += c[3]
            elif c[0] == "body":
                out += c[1]
        return out

    @property
    def complete(self) -> bool:
        """The response ended normally (not aborted)."""
        last = self.calls[-1]
        return last[0] == "end" or (last[0] == "start" and last[4])

    @property
    def aborted(self) -> bool:
        return self.calls[-1][0] == "abort"


def run(app, sink=None, method="GET"):
    sink = sink or Sink()
    errors: list[str] = []
    run_wsgi(app, dict(ENVIRON, REQUEST_METHOD=method), sink, errors.append)
    return sink, errors


class Closing:
    """An iterable recording close()."""

    def __init__(self, chunks, fail_at=None):
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0
        self.yielded = 0

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("iteration failed")
            self.yielded += 1
            yield chunk
        if self.fail_at == len(self.chunks):
            raise RuntimeError("iteration failed at the end")

    def close(self):
        self.closed += 1


# ---------------------------------------------------------------- normal responses


def test_simple_list_response_goes_out_in_one_start() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-A", "1")])
        return [b"hello"]

    sink, errors = run(app)
    assert sink.calls == [("start", 200, [(b"content-type", b"text/plain"), (b"x-a", b"1")], b"hello", True)]
    assert errors == []


def test_status_without_reason_phrase() -> None:
    def app(environ, start_response):
        start_response("204", [])
        return []

    sink, _ = run(app)
    assert sink.calls == [("start", 204, [], b"", True)]


def test_headers_deferred_until_first_non_empty_chunk() -> None:
    sink = Sink()
    seen_before_data = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b""
            seen_before_data.append(list(sink.calls))
            yield b""
            seen_before_data.append(list(sink.calls))
            yield b"data"
            yield b"more"
        return gen()

    run(app, sink)
    assert seen_before_data == [[], []]
    assert sink.calls == [
        ("start", 200, [(b"content-type", b"text/plain")], b"data", False),
        ("body", b"more"),
        ("end",),
    ]


def test_empty_generator_response_is_complete_with_empty_body() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        yield from ()

    sink, _ = run(app)
    assert sink.calls == [("start", 200, [], b"", True)]


def test_start_response_inside_generator() -> None:
    def app(environ, start_response):
        start_response("201 Created", [("Location", "/x")])
        yield b"a"
        yield b"b"

    sink, _ = run(app)
    assert sink.status == 201
    assert sink.body_bytes == b"ab"
    assert sink.complete


def test_exc_info_replaces_headers_before_anything_was_sent() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html"), ("X-Was", "ok")])
        try:
            raise ValueError("render failed")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    sink, errors = run(app)
    assert sink.calls == [("start", 503, [(b"content-type", b"text/plain")], b"sorry", True)]


def test_exc_info_after_empty_chunks_still_replaces_headers() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-Was", "ok")])
        yield b""
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Oops", [("X-Now", "err")], sys.exc_info())
        yield b"err"

    sink, _ = run(app)
    assert sink.status == 500
    assert sink.headers == {b"x-now": b"err"}
    assert sink.body_bytes == b"err"


def test_exc_info_after_headers_were_sent_reraises_and_aborts() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())
        yield b"never"

    sink, errors = run(app)
    assert sink.calls[0] == ("start", 200, [], b"partial", False)
    assert sink.aborted
    assert b"never" not in sink.body_bytes
    assert any("too late" in e for e in errors)


def test_second_start_response_without_exc_info_is_an_error() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"x"]

    sink, errors = run(app)
    assert sink.status == 500
    assert errors


def test_write_callable() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one;")
        write(b"two;")
        return [b"three"]

    sink, _ = run(app)
    assert sink.calls == [
        ("start", 200, [(b"content-type", b"text/plain")], b"one;", False),
        ("body", b"two;"),
        ("body", b"three"),
        ("end",),
    ]


def test_write_callable_sends_before_returning() -> None:
    sink = Sink()
    observed = []

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"now")
        observed.append(sink.body_bytes)
        return []

    run(app, sink)
    assert observed == [b"now"]
    assert sink.complete


# ---------------------------------------------------------------- Content-Length


def test_content_length_is_never_exceeded_in_a_stream() -> None:
    it = Closing([b"12345", b"67890", b"extra"])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "7")])
        return it

    sink, _ = run(app)
    assert sink.body_bytes == b"1234567"
    assert sink.complete
    assert it.closed == 1


def test_content_length_is_never_exceeded_in_a_list() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "3")])
        return [b"abcdef"]

    sink, _ = run(app)
    assert sink.body_bytes == b"abc"
    assert sink.complete


def test_content_length_is_never_exceeded_by_write() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "4")])
        write(b"abc")
        write(b"def")
        return [b"ghi"]

    sink, _ = run(app)
    assert sink.body_bytes == b"abcd"
    assert sink.complete


def test_content_length_zero() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "0")])
        return iter([b"ignored"])

    sink, _ = run(app)
    assert sink.body_bytes == b""
    assert sink.complete


def test_short_body_in_a_stream_is_aborted() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"abc", b"de"])

    sink, _ = run(app)
    assert sink.body_bytes == b"abcde"
    assert sink.aborted, sink.calls


def test_short_body_in_a_one_element_list_is_aborted() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return [b"abc"]

    sink, _ = run(app)
    assert sink.body_bytes == b"abc"
    assert not sink.complete, f"a 3-byte body declared as 10 bytes was reported complete: {sink.calls}"
    assert sink.aborted


def test_short_body_with_nothing_sent_and_no_chunks() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return []

    sink, _ = run(app)
    # Nothing went out yet: it may become a 500 or a cut response, never a complete 200.
    assert not (sink.complete and sink.status == 200), sink.calls


def test_head_response_with_content_length_and_no_body_is_complete() -> None:
    # HEAD: the declared length is the GET body's; no body follows, and that is not short.
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return []

    sink, _ = run(app, method="HEAD")
    assert sink.calls == [("start", 200, [(b"content-length", b"10")], b"", True)]


def test_304_with_content_length_and_no_body_is_complete() -> None:
    def app(environ, start_response):
        start_response("304 Not Modified", [("Content-Length", "10")])
        return [b""]

    sink, _ = run(app)
    assert sink.status == 304
    assert sink.complete


def test_invalid_content_length_is_500() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "lots")])
        return [b"x"]

    sink, errors = run(app)
    assert sink.status == 500
    assert errors


# ---------------------------------------------------------------- errors


def test_missing_start_response_is_500() -> None:
    def app(environ, start_response):
        return [b"body without status"]

    sink, errors = run(app)
    assert sink.calls == [("start", 500, sink.calls[0][2], INTERNAL_ERROR_BODY, True)]
    assert errors and "start_response" in errors[0]


def test_missing_start_response_with_empty_body_is_500() -> None:
    def app(environ, start_response):
        return []

    sink, errors = run(app)
    assert sink.status == 500
    assert sink.complete
    assert errors


def test_error_before_start_is_500_with_a_plain_body() -> None:
    def app(environ, start_response):
        raise KeyError("nope")

    sink, errors = run(app)
    assert sink.status == 500
    assert sink.body_bytes == INTERNAL_ERROR_BODY
    assert sink.headers[b"content-length"] == str(len(INTERNAL_ERROR_BODY)).encode()
    assert sink.complete
    assert any("KeyError" in e for e in errors)


def test_error_in_iteration_before_first_chunk_is_500_and_closes() -> None:
    it = Closing([b"a"], fail_at=0)

    def app(environ, start_response):
        start_response("200 OK", [("X-A", "1")])
        return it

    sink, errors = run(app)
    assert sink.status == 500
    assert b"x-a" not in sink.headers
    assert it.closed == 1


def test_error_after_start_aborts_and_closes() -> None:
    it = Closing([b"a", b"b", b"c"], fail_at=2)

    def app(environ, start_response):
        start_response("200 OK", [])
        return it

    sink, errors = run(app)
    assert sink.body_bytes == b"ab"
    assert sink.aborted
    assert it.closed == 1
    assert any("iteration failed" in e for e in errors)


def test_error_at_the_very_end_aborts() -> None:
    it = Closing([b"a", b"b"], fail_at=2)

    def app(environ, start_response):
        start_response("200 OK", [])
        return it

    sink, _ = run(app)
    assert sink.aborted
    assert it.closed == 1


def test_close_is_called_on_success() -> None:
    it = Closing([b"a", b"b"])

    def app(environ, start_response):
        start_response("200 OK", [])
        return it

    sink, _ = run(app)
    assert sink.complete and it.closed == 1


def test_close_is_called_when_content_length_is_reached_early() -> None:
    it = Closing([b"abc", b"def", b"ghi"])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "3")])
        return it

    sink, _ = run(app)
    assert sink.complete and it.closed == 1
    assert it.yielded == 1  # not iterated past the declared length


def test_close_is_called_when_the_client_is_gone() -> None:
    it = Closing([b"%d" % i for i in range(100)])

    def app(environ, start_response):
        start_response("200 OK", [])
        return it

    sink, _ = run(app, Sink(cancel_after_chunks=2))
    assert it.closed == 1
    assert it.yielded < 100
    assert not sink.complete


def test_error_in_close_after_success_is_logged_response_stays_complete() -> None:
    class BadClose(Closing):
        def close(self):
            super().close()
            raise OSError("close failed")

    it = BadClose([b"a"])

    def app(environ, start_response):
        start_response("200 OK", [])
        return it

    sink, errors = run(app)
    assert sink.complete and it.closed == 1
    assert any("close failed" in e for e in errors)


def test_error_in_close_before_start_gives_500() -> None:
    class BadClose(Closing):
        def close(self):
            super().close()
            raise OSError("close failed")

    def app(environ, start_response):
        return BadClose([])  # and never called start_response

    sink, errors = run(app)
    assert sink.status == 500


def test_non_latin1_header_value_is_500() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-Name", "日本")])
        return [b"x"]

    sink, errors = run(app)
    assert sink.status == 500
    assert b"x-name" not in sink.headers
    assert any("UnicodeEncodeError" in e for e in errors)


def test_non_latin1_header_name_is_500() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-Ünï€", "v")])
        return [b"x"]

    sink, _ = run(app)
    assert sink.status == 500


def test_latin1_header_value_passes() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-Name", "café")])
        return [b"x"]

    sink, _ = run(app)
    assert sink.headers[b"x-name"] == "café".encode("latin-1")


@pytest.mark.parametrize("status", ["OK", "20 OK", "2000 OK", "abc", 200, "200OK"])
def test_invalid_status_is_500(status) -> None:
    def app(environ, start_response):
        start_response(status, [])
        return [b"x"]

    sink, _ = run(app)
    assert sink.status == 500


@pytest.mark.parametrize("header", [("X-A", "a\r\nInjected: 1"), ("X-A\n", "v"), ("X-A", "nul\0"),
                                    (b"X-A", "v"), ("X-A", 1)])
def test_bad_headers_are_500(header) -> None:
    def app(environ, start_response):
        start_response("200 OK", [header])
        return [b"x"]

    sink, _ = run(app)
    assert sink.status == 500


def test_non_bytes_chunk_before_start_is_500() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return ["text, not bytes"]

    sink, _ = run(app)
    assert sink.status == 500


def test_non_bytes_chunk_after_start_aborts() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"ok"
        yield "text"

    sink, _ = run(app)
    assert sink.aborted


def test_sink_gone_propagates_and_still_closes() -> None:
    class GoneSink(Sink):
        def body(self, chunk):
            raise SinkGone("peer vanished")

    it = Closing([b"a", b"b", b"c"])

    def app(environ, start_response):
        start_response("200 OK", [])
        return it

    with pytest.raises(SinkGone):
        run(app, GoneSink())
    assert it.closed == 1


# ---------------------------------------------------------------- header hygiene (issue 10)


def _start(headers, status="200 OK"):
    def app(environ, start_response):
        start_response(status, headers)
        return [b"body"]

    return run(app)


def test_django_set_cookie_leading_space_is_stripped() -> None:
    # django.core.handlers.wsgi emits cookie.output(header="") values: " csrftoken=...".
    sink, errors = _start([("Content-Type", "text/html"), ("Set-Cookie", " csrftoken=abc; Path=/; SameSite=Lax")])
    assert sink.status == 200 and not errors
    assert sink.calls[0][2] == [(b"content-type", b"text/html"),
                                (b"set-cookie", b"csrftoken=abc; Path=/; SameSite=Lax")]


def test_optional_whitespace_around_names_and_values_is_stripped_inner_kept() -> None:
    sink, _ = _start([(" X-A\t", "\t a \t b  "), ("X-Empty", "   ")])
    assert sink.calls[0][2] == [(b"x-a", b"a \t b"), (b"x-empty", b"")]


def test_headers_reach_the_sink_as_tuples_of_bytes() -> None:
    sink, _ = _start([("X-A", "1"), ("X-B", "2")])
    assert all(type(h) is tuple and type(h[0]) is bytes and type(h[1]) is bytes for h in sink.calls[0][2])


@pytest.mark.parametrize("value", ["a\x01b", "a\x7fb", "a\x0bb", "a\x0cb", "a\rb", "a\nb", "a\x00b", "\x1f"])
def test_control_characters_in_values_are_500_naming_the_header(value) -> None:
    sink, errors = _start([("X-Bad", value)])
    assert sink.status == 500
    assert b"x-bad" not in sink.headers
    assert any("'X-Bad'" in e and "InvalidHeader" in e for e in errors), errors


@pytest.mark.parametrize("name", ["X A", "X:A", "X(A)", "", "X\x00", "Ä", "X-A\r", "X\"A"])
def test_names_that_are_not_tokens_are_500(name) -> None:
    sink, errors = _start([(name, "v")])
    assert sink.status == 500
    assert any("invalid header name" in e for e in errors), errors


@pytest.mark.parametrize("value", ["+5", "1_0", "-1", "0x10", "5 5", "²"])
def test_invalid_content_length_values_are_500(value) -> None:
    sink, _ = _start([("Content-Length", value)])
    assert sink.status == 500


def test_content_length_with_ows_passes_and_conflicts_are_500() -> None:
    sink, _ = _start([("Content-Length", " 4 ")])
    assert sink.status == 200 and sink.headers[b"content-length"] == b"4" and sink.body_bytes == b"body"
    sink, _ = _start([("Content-Length", "4"), ("Content-Length", "4")])
    assert sink.calls[0][2] == [(b"content-length", b"4")]
    sink, _ = _start([("Content-Length", "4"), ("Content-Length", "5")])
    assert sink.status == 500


def test_transfer_encoding_from_the_app_is_dropped() -> None:
    sink, _ = _start([("Transfer-Encoding", "gzip"), ("X-A", "1")])
    assert sink.status == 200 and sink.calls[0][2] == [(b"x-a", b"1")]


@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols", "199 X", "600 Nope", "099 X",
                                    "200 OK\r\nX-Injected: 1", "200 OK\n", "200\tOK", " 200 OK"])
def test_non_final_or_malformed_status_is_500(status) -> None:
    sink, errors = _start([], status=status)
    assert sink.status == 500
    assert any("status" in e for e in errors)


@pytest.mark.parametrize("status", ["200 OK", "204", "404 Not Found", "599 Custom\treason", "200 Ünïcode reason"])
def test_valid_statuses_pass(status) -> None:
    sink, _ = _start([], status=status)
    assert sink.status == int(status[:3])


def test_str_subclasses_are_accepted() -> None:
    class S(str):
        pass

    sink, _ = _start([(S("X-A"), S("v"))])
    assert sink.calls[0][2] == [(b"x-a", b"v")]


def test_run_wsgi_returns_the_first_app_error_and_names_the_request() -> None:
    it = Closing([b"a"], fail_at=0)

    def app(environ, start_response):
        start_response("200 OK", [])
        return it

    sink, errors = Sink(), []
    returned = run_wsgi(app, dict(ENVIRON, PATH_INFO="/p", QUERY_STRING="q=1"), sink, errors.append)
    assert isinstance(returned, RuntimeError) and str(returned) == "iteration failed"
    assert errors[0].startswith("Error in WSGI application (GET /p?q=1):\nTraceback")


def test_run_wsgi_returns_a_handled_exc_info_without_logging_it() -> None:
    def app(environ, start_response):
        try:
            raise KeyError("handled")
        except KeyError:
            start_response("500 Oops", [], sys.exc_info())
        return [b"page"]

    sink, errors = Sink(), []
    returned = run_wsgi(app, dict(ENVIRON), sink, errors.append)
    assert isinstance(returned, KeyError) and not errors and sink.body_bytes == b"page"
    assert run_wsgi(lambda e, s: (s("200 OK", []), [b""])[1], dict(ENVIRON), Sink(), errors.append) is None


def test_header_name_cache_keeps_invalid_names_out_and_maps_spellings() -> None:
    from a2wsgi_mp import response

    for _ in range(2):  # the second round is served from the cache
        sink, _ = _start([(" Set-Cookie", "a=1"), ("SET-COOKIE", "b=2")])
        assert sink.calls[0][2] == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
        sink, _ = _start([("Bad Name", "v")])
        assert sink.status == 500
    assert "Bad Name" not in response._NAMES


def test_a_refused_status_stays_refused_and_a_valid_one_keeps_its_code() -> None:
    # Status lines are remembered once checked: only valid ones, each with its own code.
    for _ in range(2):
        assert _start([], status="200 OK\r\nX-Injected: 1")[0].status == 500
        assert _start([], status="404 Not Found")[0].status == 404
        assert _start([], status="404 Not Foundx")[0].status == 404
        assert _start([], status="100 Continue")[0].status == 500


@pytest.mark.parametrize("value, wire", [("a\tb", b"a\tb"), ("caf\xe9", b"caf\xe9"), ("~ !", b"~ !"),
                                         ("", b"")])
def test_values_beyond_printable_ascii_are_checked_in_full(value, wire) -> None:
    # Printable ASCII takes a shortcut past the control-character check; HTAB and latin-1
    # are valid yet not in it, and must still pass, byte for byte.
    sink, errors = _start([("X-A", value)])
    assert sink.status == 200 and not errors
    assert sink.headers[b"x-a"] == wire
