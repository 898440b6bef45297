"""uvicorn's httptools protocol, with the request head bounded while it is read.

httptools hands uvicorn the URL in pieces (``on_url``) and each header only when
it is complete (``on_header``), after concatenating its pieces itself.  So:

* the URL's length is counted piece by piece (414 past ``limits.line``), and its
  pieces are joined once, not concatenated one by one;
* each complete field is counted and measured (431);
* the field still being received is measured by the bytes since the last LF in
  the stream (431 past ``limits.field_size``), checked after every read, so
  httptools never holds more than one read beyond the limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..environ import head_size
from .guard import HeadGuard, Refused
from .trickle import TrickleGate

__all__ = ["LimitedHttpToolsProtocol"]


class _LazyKeepAlive(TrickleGate, HttpToolsProtocol):
    """uvicorn's keep-alive timeout, with one timer per connection re-armed only
    when it fires (as the header clock, :class:`~.guard.HeadGuard`).

    uvicorn arms a timer when a response completes and cancels it when the next
    bytes arrive: a ``call_later`` and a ``cancel`` per request on a keep-alive
    connection (~0.8 us, measured).  Here a response's end costs a ``loop.time()``
    and the next bytes an attribute write; when the timer fires it closes the
    connection only if it has been idle for ``timeout_keep_alive`` seconds, and
    otherwise looks again when that time is up.  The connection closes when
    uvicorn's would (within a millisecond); nothing else changes.
    """

    #: Loop time the connection became idle (its last response out, nothing pipelined); None: busy.
    _idle_since: float | None = None

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # (the timer, if armed, finds the connection busy and lets it be)

    def on_response_complete(self) -> None:
        if self.pipeline or self.transport.is_closing():
            super().on_response_complete()  # uvicorn's: it starts the next pipelined request (arming nothing)
            return
        # uvicorn's (0.30 to 0.55) when nothing is pipelined, the timer aside.
        self.server_state.total_requests += 1
        if self._gated:  # answered before its trickled body was whole (a 408, a 413): read what is left now
            self._trickle_end()
        self.flow.resume_reading()
        loop = self.loop
        self._idle_since = loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = loop.call_later(self.timeout_keep_alive, self._keep_alive_expired)

    def _keep_alive_expired(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:
            return  # busy: armed again when its response is out
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0.001:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_expired)
            return
        self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        task = self.timeout_keep_alive_task
        if task is not None:
            task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)


class LimitedHttpToolsProtocol(HeadGuard, _LazyKeepAlive):
    #: uvicorn's hook the fast path overrides (``_start_asgi_task``, uvicorn >= 0.45). Without it
    #: every request would quietly take the ASGI path: the CLI warns at start-up (cli._log_start).
    fast_path_hook = hasattr(HttpToolsProtocol, "_start_asgi_task")
    _in_head = False
    _completed = 0  # messages completed on this connection
    _fields = 0
    _head_bytes = 0
    _url_len = 0
    _verdict: Refused | None = None
    _plain = True  # no header seen that rules the fast path out (see on_header)
    _forwarded = False  # an X-Forwarded-* header seen: the fast path needs the scope pass (fastpath.ScopePass)
    #: Set by the lean protocol that handed this connection over: takes up its first request.
    _adopt: Any = None
    #: Set by the lean protocol that handed this connection over: it takes the connection back
    #: once idle (``_hand_back``) after ``_hand_back_after`` requests in a row of the kind it serves.
    _hand_back_to: Any = None
    _hand_back_after = 1
    _lean_streak = 0  # requests in a row that took the fast path (the kind the lean protocol serves)
    _between = True  # no byte of a next message is in the parser (its last message complete)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._url_parts: list[bytes] = []
        super().connection_made(transport)  # HeadGuard's: the cap, then uvicorn's, then the header clock

    def data_received(self, data: bytes) -> None:
        if self._refused or self.parser is None:
            return  # draining a refused connection
        self._unset_keepalive_if_required()
        if self._head_since is None and not self._in_body():
            self._head_started()  # a head starts (bare CRLFs too)
        tail = self._measure(data)
        completed = self._completed
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            verdict = self._verdict or (exc.__context__ if isinstance(exc.__context__, Refused) else None)
            if verdict is not None:
                self._refuse(verdict.status, verdict.text)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                if self._response_out():  # a valid request came before the garbage: answer it first
                    self._refuse(400, msg)
                    return
                self._refused = True
                self._disarm_header_timer()
                self.send_400_response(msg)
            return
        if self._in_head:
            self._head_started()  # (a pipelined head may have begun in this read)
            # Another message ended in this same read: where its head began is
            # not known, so measure from here on (one read of slack).
            self._tail = tail if completed == self._completed else 0
            if self._field_too_long(self._tail):
                self._refuse(431, "Request Header Fields Too Large: a header field is too long")
        else:
            self._tail = 0  # no head under way: the next one starts afresh (a body's bytes are no line)
            cycle = self.cycle
            if cycle is not None and cycle.more_body and not cycle.response_complete:
                self._body_read(len(data))  # (trickle.py: a body trickled in tiny pieces is read in batches)

    def _in_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._between = False
        self._in_head = self._heard = True
        self._fields = self._head_bytes = self._url_len = 0
        self._url_parts = []
        self._plain = True
        self._forwarded = False

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)
        url_len = self._url_len = self._url_len + len(url)
        if line_too_long(url_len, self._max_line, self.parser):
            raise self._stop(414, "URI Too Long")

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields = self._fields + 1
        size = len(name) + len(value) + 4  # "Name: value\r\n", gunicorn's measure
        head_bytes = self._head_bytes = self._head_bytes + size
        if size > self._max_field or fields > self._max_fields or head_bytes > self._max_head:
            if fields > self._max_fields:
                raise self._stop(431, "Request Header Fields Too Large: too many header fields")
            if size > self._max_field:
                raise self._stop(431, "Request Header Fields Too Large: a header field is too long")
            raise self._stop(431, "Request Header Fields Too Large")
        # uvicorn 0.55's on_header, inlined: this runs for every header of every request.
        name = name.lower()
        # llhttp keeps a value's trailing OWS, which RFC 9110 §5.5 excludes from it (and h11 strips).
        value = value.rstrip(b" \t")
        if name in _NOT_PLAIN or name.startswith(b"x-forwarded-"):  # (the rare headers: one set lookup for the rest)
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            if name.startswith(b"x-forwarded-"):
                self._forwarded = True
            elif _rules_out(name, value):
                self._plain = False
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_done()
        self.url = b"".join(self._url_parts)
        self._url_parts = []
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._completed += 1
        self._between = True
        if self._trickle_streak or self._gated:
            self._trickle_end()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._hand_back_to is not None and self._idle_since is not None and \
                self._lean_streak >= self._hand_back_after:
            self._hand_back()

    def _hand_back(self) -> None:
        """The connection is idle, as the lean protocol that handed it over left it at each of
        its answers: back to it, so a keep-alive connection that once sent a body (or HEAD, or a
        pipelined pair) is not served by this protocol for the rest of its life.  Only when nothing
        is half done: no byte of a next request read (the parser holds none), nothing pipelined,
        no refusal owed, the client reading what it was sent, keep-alive on."""
        if (self._between and not self.pipeline and self._deferred is None and not self._refused
                and not self.flow.write_paused and not self.transport.is_closing()
                and self.timeout_keep_alive > 0):  # (0: uvicorn's timer, armed just now, closes it at once)
            self.connections.discard(self)
            self._disarm_all()
            task = self.timeout_keep_alive_task
            if task is not None:
                task.cancel()
                self.timeout_keep_alive_task = None
            self._hand_back_to._take_back(self)

    # ------------------------------------------------------------ the fast path (pool/fastpath.py)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        adopt = self._adopt
        if adopt is not None:  # the first request, already at a worker by the lean protocol (headlimits.lean)
            self._adopt = None
            adopt(self, cycle)
            return
        # (--limit-concurrency counts tasks: with it, every request keeps its task.)
        if app is self.app and self.limit_concurrency is None:
            pool = _fast_pool(self.config, app)
            if pool is not None:
                fastpath = _FAST[0]
                scope = cycle.scope
                if scope is self.scope:  # (the head just parsed: the notes taken on the way are its)
                    plain, forwarded, head_bytes = self._plain, self._forwarded, self._head_bytes + self._url_len
                else:  # a pipelined request, started after another head was parsed
                    plain, forwarded, head_bytes = _notes(scope)
                if fastpath.eligible(scope, pool, plain, head_bytes):
                    if forwarded:  # what the proxy-headers middleware would make of it
                        scope_pass = _scope_pass(self.config, app)
                        scope = scope_pass(scope) if scope_pass is not None else None
                    if scope is not None:
                        self._lean_streak += 1
                        fastpath.FastRequest(pool, self, cycle, scope).start()
                        return
        self._lean_streak = 0
        super()._start_asgi_task(cycle, app)

    def _run_asgi_task(self, cycle: Any, app: Any) -> None:
        """The usual task, for a request the fast path hands back."""
        super()._start_asgi_task(cycle, app)

    def _stop(self, status: int, text: str) -> Refused:
        self._verdict = Refused(status, text)
        return self._verdict


#: Headers that keep a request off the fast path (``content-length: 0`` aside).  (``x-forwarded-*``
#: headers do not: the layers they are for are run on the scope, :class:`~..pool.fastpath.ScopePass`;
#: RFC 7239's ``Forwarded`` still does, as nothing of ours reads it and it is rare.)
_NOT_PLAIN = frozenset((b"content-length", b"transfer-encoding", b"expect", b"forwarded"))


def _rules_out(name: bytes, value: bytes) -> bool:
    """The header keeps its request off the fast path: a body's framing (``content-length: 0``
    aside), ``Expect``, or RFC 7239's ``Forwarded``."""
    return name in _NOT_PLAIN and (name != b"content-length" or value.strip() != b"0")


def line_too_long(url_len: int, max_line: int, parser: Any) -> bool:
    """The request line ("METHOD SP target SP HTTP/x.y") is past ``max_line`` with a target of
    ``url_len`` bytes so far (gunicorn's measure).  (llhttp's methods are at most 32 bytes:
    below that, the method need not be asked for.)"""
    return url_len + 42 > max_line and url_len + 10 + len(parser.get_method() or b"") > max_line


def _notes(scope: Any) -> tuple[bool, bool, int]:
    """The notes ``on_header`` takes for the fast path, taken again from a request's scope."""
    headers = scope["headers"]
    return (not any(_rules_out(name, value) for name, value in headers),
            any(name.startswith(b"x-forwarded-") for name, _ in headers), head_size(scope))


#: [the fastpath module], imported on first use (importing pool/ at the top would make
#: an import cycle).
_FAST: list[Any] = []


def _fast_pool(config: Any, app: Any) -> Any:
    """The WSGIPool behind ``app`` if its ``fast_path`` option is on (looked up once
    per uvicorn config), or None."""
    pool = getattr(config, "_a2wsgi_mp_fast_pool", False)
    if pool is False:
        if not _FAST:
            from ..pool import fastpath

            _FAST.append(fastpath)
        pool = _FAST[0].find_pool(app)
        if pool is not None and not pool.config.fast_path:
            pool = None
        try:
            config._a2wsgi_mp_fast_pool = pool
        except AttributeError:
            pass
    return pool


def _scope_pass(config: Any, app: Any) -> Any:
    """The fast path's :class:`~..pool.fastpath.ScopePass` for ``app``'s layers (once per
    uvicorn config; after :func:`_fast_pool`), or None: forwarded requests keep the ASGI path."""
    scope_pass = getattr(config, "_a2wsgi_mp_scope_pass", False)
    if scope_pass is False:
        scope_pass = _FAST[0].ScopePass.of(app)
        try:
            config._a2wsgi_mp_scope_pass = scope_pass
        except AttributeError:
            pass
    return scope_pass
