"""ASGI scope -> PEP 3333 environ, checked with wsgiref.validate's own environ checks."""

from __future__ import annotations

import io
import sys
import warnings
from wsgiref import validate

import msgpack

from a2wsgi_mp.environ import HEAD_KEYS, build_environ, environ_from_head, request_head
from a2wsgi_mp.ipc import protocol


def scope(**overrides):
    base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.com")],
        "client": ("10.1.2.3", 51234),
        "server": ("127.0.0.1", 8000),
        "state": {"not": "shipped"},
        "extensions": {"http.response.trailers": {}},
    }
    base.update(overrides)
    return base


def build(s, body=b"", **kwargs):
    """The worker's view: the scope goes through request_head and a REQUEST frame first (its head
    an array), and the worker's environ is the one an in-process build_environ makes of the scope."""
    request = protocol.Decoder().decode_one(protocol.encode_request(1, request_head(s), b"", 0), protocol.REQUEST)
    assert isinstance(request, protocol.Request)
    errors = io.StringIO()
    env = environ_from_head(request.head, io.BytesIO(body), errors=errors, **kwargs)
    in_process = build_environ(s, env["wsgi.input"], errors=errors, **kwargs)
    assert env == in_process
    with warnings.catch_warnings():
        warnings.simplefilter("error", validate.WSGIWarning)
        validate.check_environ(env)
        validate.check_input(env["wsgi.input"])
        validate.check_errors(env["wsgi.errors"])
    for key, value in env.items():
        if not key.startswith("wsgi."):
            assert type(value) is str, (key, value)  # native strings only
            value.encode("latin-1")  # ...holding bytes
    return env


def test_request_head_is_msgpack_clean_and_minimal() -> None:
    head = request_head(scope(headers=((b"a", b"1"),)))
    assert "state" not in head and "extensions" not in head and "type" not in head
    assert head["headers"] == [(b"a", b"1")]
    msgpack.packb(head, use_bin_type=True)


def test_request_head_keys_are_head_keys_on_both_of_its_paths() -> None:
    """request_head spells the keys out (one dict display) when the scope has them all, and
    falls back to HEAD_KEYS otherwise: both must ship the same keys."""
    full = request_head(scope())
    assert list(full) == list(HEAD_KEYS)
    partial = scope()
    del partial["root_path"]
    assert list(request_head(partial)) == [k for k in HEAD_KEYS if k != "root_path"]


def test_basic_keys() -> None:
    env = build(scope(method="PUT", path="/items/1", query_string=b"a=1&b=%20"))
    assert env["REQUEST_METHOD"] == "PUT"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/items/1"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == "8000"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "10.1.2.3"
    assert env["REMOTE_PORT"] == "51234"
    assert env["HTTP_HOST"] == "example.com"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True


def test_https_and_http2() -> None:
    env = build(scope(scheme="https", http_version="2", server=("example.com", 443)))
    assert env["wsgi.url_scheme"] == "https"
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["SERVER_PORT"] == "443"


def test_multithread_multiprocess_flags() -> None:
    env = build(scope())
    assert env["wsgi.multithread"] is False and env["wsgi.multiprocess"] is True
    env = build(scope(), multithread=True, multiprocess=False)
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False


def test_query_string_is_raw() -> None:
    raw = b"q=caf%C3%A9&x=1+2&y=%2F&z"
    assert build(scope(query_string=raw))["QUERY_STRING"] == raw.decode("latin-1")


def test_path_info_is_latin1_of_utf8() -> None:
    env = build(scope(path="/café/€/日本"))
    assert env["PATH_INFO"] == "/café/€/日本".encode("utf-8").decode("latin-1")
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/€/日本"


def test_root_path_included_in_path_is_removed() -> None:
    # ASGI: path includes root_path.
    env = build(scope(root_path="/mount", path="/mount/x/ü"))
    assert env["SCRIPT_NAME"] == "/mount"
    assert env["PATH_INFO"] == "/x/ü".encode().decode("latin-1")


def test_root_path_not_included_in_path() -> None:
    # Older routers strip root_path from path themselves.
    env = build(scope(root_path="/mount", path="/x"))
    assert env["SCRIPT_NAME"] == "/mount"
    assert env["PATH_INFO"] == "/x"


def test_path_equal_to_root_path() -> None:
    env = build(scope(root_path="/mount", path="/mount"))
    assert env["SCRIPT_NAME"] == "/mount"
    assert env["PATH_INFO"] == ""


def test_non_ascii_root_path() -> None:
    env = build(scope(root_path="/ünï", path="/ünï/a"))
    assert env["SCRIPT_NAME"] == "/ünï".encode().decode("latin-1")
    assert env["PATH_INFO"] == "/a"


def test_root_path_is_removed_only_at_a_segment_boundary() -> None:
    # root_path "/app", path "/appendix" (a router that strips root_path): "/appendix" is not under "/app".
    env = build(scope(root_path="/app", path="/appendix"))
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/appendix"


def test_content_type_and_length_are_not_http_keys() -> None:
    env = build(scope(method="POST", headers=[
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
        (b"host", b"h"),
    ]), body=b"{}")
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_repeated_headers_joined_with_comma() -> None:
    env = build(scope(headers=[
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"accept", b"text/html"),
        (b"x-forwarded-for", b"2.2.2.2"),
        (b"X-Forwarded-For", b"3.3.3.3"),
    ]))
    assert env["HTTP_X_FORWARDED_FOR"] == "1.1.1.1,2.2.2.2,3.3.3.3"
    assert env["HTTP_ACCEPT"] == "text/html"


def test_repeated_cookie_headers_joined_as_one_cookie_string() -> None:
    env = build(scope(headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2")]))
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_header_names_upper_cased_with_underscores_and_values_latin1() -> None:
    env = build(scope(headers=[(b"x-custom-thing", b"caf\xe9")]))
    assert env["HTTP_X_CUSTOM_THING"] == "caf\xe9"


def test_body_length_gives_content_length_for_chunked_requests() -> None:
    env = build(scope(method="POST", headers=[(b"transfer-encoding", b"chunked")]), body=b"abc", body_length=3)
    assert env["CONTENT_LENGTH"] == "3"
    assert env["wsgi.input"].read() == b"abc"


def test_declared_content_length_wins_over_body_length() -> None:
    env = build(scope(method="POST", headers=[(b"content-length", b"3")]), body=b"abc", body_length=3)
    assert env["CONTENT_LENGTH"] == "3"


def test_no_client_no_remote_keys() -> None:
    env = build(scope(client=None))
    assert "REMOTE_ADDR" not in env
    assert "REMOTE_PORT" not in env


def test_unix_socket_server_has_a_port_string() -> None:
    env = build(scope(server=("/tmp/sock", None)))
    assert env["SERVER_NAME"] == "/tmp/sock"
    assert env["SERVER_PORT"] == "80"


def test_missing_server_defaults() -> None:
    s = scope()
    del s["server"]
    env = build(s)
    assert env["SERVER_NAME"] and env["SERVER_PORT"]


def test_errors_default_to_stderr_and_file_wrapper_is_passed() -> None:
    class Wrapper:
        pass

    env = build_environ(request_head(scope()), io.BytesIO(), file_wrapper=Wrapper)
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.file_wrapper"] is Wrapper
    assert "wsgi.file_wrapper" not in build_environ(request_head(scope()), io.BytesIO())


def test_header_keys_cached_by_name_whatever_the_header_map() -> None:
    """The name -> key cache (a lookup per header) keeps every rule of the slow path:
    a name with "_" is never cached, so each request's ``header_map`` decides it."""
    from a2wsgi_mp import environ as environ_module
    from a2wsgi_mp.environ import UnderscoreHeader

    headers = [(b"x_under", b"1"), (b"X-Mixed-Case", b"2"), (b"content-type", b"text/plain")]
    for _ in range(2):  # the second time from the cache
        kept = build_environ(scope(headers=headers), io.BytesIO(), header_map="dangerous")
        assert kept["HTTP_X_UNDER"] == "1" and kept["HTTP_X_MIXED_CASE"] == "2"
        assert kept["CONTENT_TYPE"] == "text/plain" and "HTTP_CONTENT_TYPE" not in kept
        dropped = build_environ(scope(headers=headers), io.BytesIO())
        assert "HTTP_X_UNDER" not in dropped and dropped["HTTP_X_MIXED_CASE"] == "2"
        try:
            build_environ(scope(headers=headers), io.BytesIO(), header_map="refuse")
        except UnderscoreHeader:
            pass
        else:
            raise AssertionError("refuse let an underscore through")
    assert b"x_under" not in environ_module._KEYS
    assert environ_module._KEYS[b"X-Mixed-Case"] == "HTTP_X_MIXED_CASE"


def test_header_key_cache_is_bounded(monkeypatch) -> None:
    from a2wsgi_mp import environ as environ_module

    monkeypatch.setattr(environ_module, "_KEYS", {})
    monkeypatch.setattr(environ_module, "_KEYS_MAX", 3)
    headers = [(b"x-n%d" % i, b"v") for i in range(10)]
    env = build_environ(scope(headers=headers), io.BytesIO())
    assert all(env["HTTP_X_N%d" % i] == "v" for i in range(10))
    assert len(environ_module._KEYS) == 3
