"""The per-request ASGI layers a gunicorn worker puts in front of its pool.

:class:`GunicornFront` enforces gunicorn's ``limit_request_*`` and
``secure_scheme_headers`` (uvicorn has neither), and :class:`HookMiddleware`
calls the ``pre_request``/``post_request`` server hooks.  They live apart
from :mod:`a2wsgi_mp.gunicorn.worker` because they only see ASGI messages
and gunicorn's ``cfg``: the worker's life cycle is none of their business.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ..environ import build_environ
from ..replies import CLOSE, send_plain
from ..types import ASGIApp, Message, Receive, Scope, Send
from .config import request_limits

__all__ = ["ASGIApp", "GunicornFront", "GunicornRequest", "GunicornResponse", "HookMiddleware", "HookedWorker"]



class HookedWorker(Protocol):
    """What :class:`HookMiddleware` uses of the worker (a gunicorn ``Worker``);
    a protocol so this module need not import the worker class."""

    nr: int
    cfg: Any
    log: Any


class GunicornRequest:
    """What ``pre_request``/``post_request`` hooks get as ``req``: the attributes
    of gunicorn's ``http.Request`` that hooks use, built from the ASGI scope.

    ``body`` is ``None``: the body is spooled by the front and read by the
    pool process, after ``pre_request`` ran.
    """

    __slots__ = ("method", "uri", "path", "query", "fragment", "version", "headers", "scheme",
                 "remote_addr", "peer_addr", "body", "trailers", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope.get("method", "GET")
        self.path: str = scope.get("path", "")
        query = scope.get("query_string", b"") or b""
        self.query: str = query.decode("latin-1")
        raw_path = scope.get("raw_path")
        uri = raw_path.decode("latin-1") if raw_path else self.path
        self.uri: str = f"{uri}?{self.query}" if self.query else uri
        self.fragment = ""
        major, _, minor = str(scope.get("http_version", "1.1")).partition(".")
        self.version = (int(major or 1), int(minor or 0))
        self.headers: list[tuple[str, str]] = [
            (name.decode("latin-1").upper(), value.decode("latin-1")) for name, value in scope.get("headers", ())
        ]
        self.scheme: str = scope.get("scheme", "http")
        client = scope.get("client")
        self.remote_addr = tuple(client) if client else None
        self.peer_addr = self.remote_addr
        self.body = None
        self.trailers: list[tuple[str, str]] = []


class GunicornResponse:
    """What ``post_request`` gets as ``resp``: status, headers and bytes sent."""

    __slots__ = ("status", "status_code", "headers", "sent", "response_length")

    def __init__(self) -> None:
        self.status: str | None = None
        self.status_code: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.sent = 0
        self.response_length: int | None = None


def _status_line(code: int) -> str:
    from http import HTTPStatus

    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


class HookMiddleware:
    """Calls gunicorn's ``pre_request(worker, req)`` before and
    ``post_request(worker, req, environ, resp)`` after each HTTP request.

    ``environ`` is rebuilt from the scope in the front (without ``wsgi.input``
    content: the real environ lives in the pool process).  A ``pre_request``
    that raises gets the request a 500, as in gunicorn.
    """

    #: The hooks see every request: none may take the fast path past them (pool/fastpath.find_pool).
    fast_path_opaque = True

    def __init__(self, app: ASGIApp, worker: HookedWorker, pre: bool, post: bool) -> None:
        self.app = app
        self.worker = worker
        self.pre = pre
        self.post = post

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        worker = self.worker
        req = GunicornRequest(scope)
        worker.nr += 1
        if self.pre:
            try:
                worker.cfg.pre_request(worker, req)
            except Exception:
                worker.log.exception("Error handling request %s %s (pre_request hook)", req.method, req.uri)
                await send_plain(send, 500, "Internal Server Error", [CLOSE])
                return
        if not self.post:
            await self.app(scope, receive, send)
            return
        resp = GunicornResponse()

        async def tracking_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                resp.status_code = message["status"]
                resp.status = _status_line(message["status"])
                resp.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", ())]
                for name, value in resp.headers:
                    if name.lower() == "content-length" and value.isdigit():
                        resp.response_length = int(value)
            elif kind == "http.response.body":
                resp.sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            try:
                environ = build_environ(scope, io.BytesIO(), header_map=getattr(worker.cfg, "header_map", None))
                worker.cfg.post_request(worker, req, environ, resp)
            except Exception:
                worker.log.exception("Exception in post_request hook")


class GunicornFront:
    """The outermost ASGI layer of a gunicorn worker: gunicorn's request limits
    and ``secure_scheme_headers``, checked against the real peer address before
    uvicorn's proxy-header handling rewrites it."""

    #: The fast path may run this layer on a request's scope alone (pool/fastpath.ScopePass).
    fast_path_scope_layer = True

    def __init__(self, app: ASGIApp, cfg: Any) -> None:
        self.app = app
        self.max_line, self.max_fields, self.max_field_size = request_limits(cfg)
        self.scheme_headers = {
            k.lower().encode("latin-1"): v for k, v in (cfg.secure_scheme_headers or {}).items()
        }
        # What this layer does to a request the fast path may take is what its copy in the fast path's
        # ScopePass does to the scope (X-Forwarded-* scheme headers; the head limits are the protocol's
        # too), unless a scheme header of the user's is not an X-Forwarded-* one: then every request
        # must come through here (the fast path notes only X-Forwarded-* headers as forwarded).
        self.fast_path_opaque = any(not name.startswith(b"x-forwarded-") for name in self.scheme_headers)
        allowed = cfg.forwarded_allow_ips or []
        # (uvicorn types its app with TypedDict scopes and messages; ours are plain mappings)
        self.trusted = ProxyHeadersMiddleware(app, allowed).trusted_hosts if allowed else None  # type: ignore[arg-type]
        self.always_trust = "*" in allowed if isinstance(allowed, list) else allowed.strip() == "*"

    def _trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if self.always_trust or not client:  # no peer address: a Unix socket, trusted as in gunicorn
            return True
        return self.trusted is not None and client[0] in self.trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Request line: "METHOD SP target SP HTTP/x.y"; uvicorn does not bound it.
        if self.max_line:
            target = len(scope.get("raw_path") or scope.get("path", "").encode())
            query = scope.get("query_string")
            if query:
                target += 1 + len(query)
            if len(scope.get("method", "")) + target + 10 > self.max_line:
                await send_plain(send, 414, "URI Too Long", [CLOSE])
                return
        headers = scope.get("headers", ())
        if len(headers) > self.max_fields:
            await send_plain(send, 431, "Request Header Fields Too Large: too many header fields", [CLOSE])
            return
        limit = self.max_field_size
        scheme_headers = self.scheme_headers
        scheme = None
        if limit or scheme_headers:
            trusted = None
            for name, value in headers:
                if limit and len(name) + len(value) + 2 > limit:
                    await send_plain(send, 431, "Request Header Fields Too Large: a header field is too long", [CLOSE])
                    return
                if name in scheme_headers:
                    if trusted is None:
                        trusted = self._trusted(scope)
                    if not trusted:
                        continue
                    this = "https" if value.decode("latin-1") == scheme_headers[name] else "http"
                    if scheme is not None and this != scheme:
                        await send_plain(send, 400, "Bad Request: contradictory scheme headers", [CLOSE])
                        return
                    scheme = this
        if scheme is not None and scheme != scope.get("scheme"):
            scope = dict(scope)
            scope["scheme"] = scheme
        await self.app(scope, receive, send)
