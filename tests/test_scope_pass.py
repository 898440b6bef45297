"""The fast path's scope pass: what the layers above the pool make of a forwarded request.

Pure: the layers are driven in-process on scopes, no server (the servers' tests are in
test_lean, test_fastpath, test_cli_deploy and test_gunicorn_worker)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

from uvicorn.middleware.message_logger import MessageLoggerMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from a2wsgi_mp.pool.fastpath import ScopePass


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the pass never calls what is below the layers")


def _scope(headers: list[tuple[bytes, bytes]], client: tuple[str, int] = ("127.0.0.1", 5000)) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
            "headers": headers, "scheme": "http", "client": client, "server": ("127.0.0.1", 8000),
            "http_version": "1.1"}


def test_the_proxy_middlewares_own_rules_decide() -> None:
    scope_pass = ScopePass([ProxyHeadersMiddleware(_inner, trusted_hosts="127.0.0.1,10.0.0.2")])
    forwarded = [(b"x-forwarded-for", b"198.51.100.1, 203.0.113.9, 10.0.0.2"), (b"x-forwarded-proto", b"https")]
    scope = _scope(forwarded)
    passed = scope_pass(scope)
    assert passed is not None
    # The rightmost untrusted address (10.0.0.2 is a trusted proxy too), and the scheme.
    assert passed["client"][0] == "203.0.113.9" and passed["scheme"] == "https"
    # From a peer that is not trusted: the headers are plain headers, nothing changes.
    untrusted = _scope(forwarded, client=("192.0.2.1", 5000))
    assert scope_pass(untrusted) == _scope(forwarded, client=("192.0.2.1", 5000))
    # A scheme it does not know is ignored; each call gets its own scope back.
    odd = scope_pass(_scope([(b"x-forwarded-proto", b"gopher")]))
    assert odd is not None and odd["scheme"] == "http" and odd["client"] == ("127.0.0.1", 5000)


class _Answers:
    """A layer that answers some requests itself (as gunicorn's front does a contradictory scheme)."""

    fast_path_scope_layer = True

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/refuse":
            await send({"type": "http.response.start", "status": 400, "headers": []})
            return
        if scope["path"] == "/wait":
            await asyncio.sleep(0)
        if scope["path"] == "/read":
            await receive()
        if scope["path"] == "/raise":
            raise ValueError("a layer's own error")
        await self.app(dict(scope, seen_by="answers"), receive, send)


def test_layers_run_in_order_and_what_they_cannot_do_alone_is_the_asgi_paths() -> None:
    scope_pass = ScopePass([ProxyHeadersMiddleware(_inner, trusted_hosts="*"), _Answers(_inner)])
    passed = scope_pass(_scope([(b"x-forwarded-for", b"203.0.113.9")]))
    assert passed is not None and passed["seen_by"] == "answers" and passed["client"][0] == "203.0.113.9"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a coroutine left unclosed would warn when collected)
        for path in ("/refuse", "/wait", "/read", "/raise"):
            scope = _scope([(b"x-forwarded-for", b"203.0.113.9")])
            scope["path"] = path
            assert scope_pass(scope) is None, path
        gc.collect()


def test_only_known_layers_over_a_pool_make_a_pass() -> None:
    from a2wsgi_mp import WSGIPool

    def hello(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    pool = WSGIPool(hello)
    assert ScopePass.of(pool) is not None  # (no layer: the scope as it is)
    assert ScopePass.of(ProxyHeadersMiddleware(MessageLoggerMiddleware(pool))) is not None  # type: ignore[arg-type]

    class Unknown:
        def __init__(self, app: Any) -> None:
            self.app = app

    assert ScopePass.of(ProxyHeadersMiddleware(Unknown(pool))) is None  # type: ignore[arg-type]
    assert ScopePass.of(Unknown(Unknown(Unknown(Unknown(Unknown(pool)))))) is None
