"""The CLI's own HTTP/1.1 protocol for the common request; uvicorn's for the rest.

Measured (docs/performance.md, "What an own protocol would buy"): uvicorn's
protocol and cycle cost a quarter of the front's CPU per request even on the
fast path.  This protocol serves, by itself, the request most traffic is: a
body-less GET (or OPTIONS, DELETE...) without ``Expect`` or upgrade headers,
alone in its read, whose answer the worker sends complete in its first frame
(a proxy's ``X-Forwarded-*`` headers are applied to the scope as the middleware
would: :class:`~..pool.fastpath.ScopePass`).  It parses with httptools,
dispatches straight to the pool, writes the
answer in one ``write`` and carries the duties such a request has inline: the
head limits' counts, one timer for the header and keep-alive timeouts, the
record (metrics, access log), uvicorn's access log line and its request count.

Anything else **hands the connection over** to :class:`LimitedHttpToolsProtocol`
(as uvicorn hands a WebSocket upgrade to its WebSocket protocol): a fresh one is
made for the transport and fed the raw bytes since the last answered request, so
a body, a refusal (the same limits give the same 4xx), a malformed head, HEAD,
a pipelined mix, TLS, the metrics path, a full queue... are handled by the code
that handles them today, which hands the connection back once it is idle with
nothing half done (``LimitedHttpToolsProtocol._hand_back``).  A request
already at a worker whose answer turns out to stream (or to be a 502, a 504, a
file...) is *adopted* by the new protocol's first request: its relay picks up
the same exchange, instead of sending the request again.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from time import perf_counter
from typing import Any

import httptools
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from ..framing import frame_head
from ..ipc.protocol import Start
from ..pool import fastpath
from ..pool.app import _cancel
from ..record import Record
from . import HeadLimits
from .guard import HeadGuard
from .httptools_proto import _NOT_PLAIN, _fast_pool, _rules_out, _scope_pass, line_too_long

__all__ = ["LeanProtocol"]


#: Header names as they come (``Host``, ``User-Agent``...) -> lower-cased, for the names that never
#: rule a request out: one dict look-up per header instead of lower() and two tests.  Bounded:
#: a client inventing names fills it once, then they are lower-cased as before.
_PLAIN: dict[bytes, bytes] = {}
_PLAIN_MAX = 512


#: A connection taken back that is handed over again before this many requests were served
#: here bounced: the next hand-back waits twice as long (``LeanProtocol._next_hand_back``) ...
BOUNCE = 16
#: ... up to this many fast-path requests in a row.
MAX_WAIT = 256


class _HandOver(Exception):
    """Raised from a parser callback: this connection is the other protocol's from here on."""


class LeanProtocol(asyncio.Protocol):
    """One connection of the CLI's plain-TCP front (see the module's docstring)."""

    # Set by headlimits.protocol_class: the limits, and the protocol that takes over.
    limits: HeadLimits = HeadLimits()
    _max_line = limits.max_line
    _max_field = limits.max_field
    _max_fields = limits.max_fields
    _max_head = limits.max_head
    handover_class: Any = None

    transport: asyncio.Transport
    _timer: asyncio.TimerHandle | None = None
    _rejected = False  # closed at accept (over the connection cap)
    _gone = False  # handed over or lost: nothing here acts any more
    _busy = False  # a request is at the pool (queued, or at a worker), unanswered
    _lost = False  # the client left while a request was at the pool
    _closing = False  # the server shuts down: the answer in flight is the last
    _write_paused = False
    _parsed = False  # a whole request was parsed in this read
    _heard = False  # bytes of the head under way arrived (408 rather than a silent close)
    _forwarded = False  # the head under way has X-Forwarded-* headers (see _request)
    _served = 0  # requests answered by this protocol object
    _taken_back = False  # made by _take_back (not at accept)
    _back_after = 1  # the hand-back wait of the protocol it was taken back from (_next_hand_back)
    #: Loop time the head under way began (at accept: the first head's clock runs); None: no head under way.
    _head_since: float | None = None
    #: Loop time the connection became idle after a response; None: not idle.
    _idle_since: float | None = None

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        self.timeout_keep_alive = config.timeout_keep_alive
        self.root_path = config.root_path
        self._period = min(t for t in (self.limits.header_timeout, self.timeout_keep_alive, 3600.0) if t > 0)
        #: The raw bytes since the last answered request (what a hand-over replays).
        self._raw = b""
        #: Bytes read while a request is at the pool (reading is paused meanwhile).
        self._pending: list[bytes] = []
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._fields = self._head_bytes = self._url_len = 0
        self.pool: Any = None
        self.exchange: Any = None
        self.record: Any = None
        self.scope: dict[str, Any] | None = None
        self._keep_alive = True
        self._method = b""
        self._http_version = "1.1"
        self._upgrade = False
        self._queued_at = 0.0

    # ------------------------------------------------------------ the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        config = self.config
        pool = self.pool = _fast_pool(config, config.loaded_app)
        if pool is None or transport.get_extra_info("sslcontext") is not None:
            self._hand_over()  # (no fast path, TLS: uvicorn's from the start)
            return
        if not HeadGuard._guard_accept(self, transport):  # type: ignore[arg-type]  # (what it uses, we have)
            self._rejected = True
            return
        self.server_state.connections.add(self)
        self.server = get_local_addr(transport)  # type: ignore[arg-type]
        self.client = get_remote_addr(transport)  # type: ignore[arg-type]
        self._head_since = self.loop.time()  # an idle new connection is a slow head (HeadGuard's rule)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._rejected or self._gone:
            return
        self.server_state.connections.discard(self)
        self._disarm()
        self._gone = True
        if self._busy:
            self._lost = True  # the answer, when it comes, is dropped (or its stream cancelled)
            if self.exchange is None:  # queued: its place is freed now (as the ASGI path's task does)
                waiters = self.pool.dispatcher._waiters
                if self in waiters:  # (else it is being handed a slot, or refused, right now)
                    waiters.remove(self)
                    self._busy = False
                    self._add_queued()
                    self.record.reason = "client left while queued"
                    self.pool._finish(self.record)
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass  # (as uvicorn: the transport closes)

    def pause_writing(self) -> None:
        self._write_paused = True  # (only our own write does it: _answer hands the slow reader over)

    def resume_writing(self) -> None:
        self._write_paused = False

    def shutdown(self) -> None:
        """uvicorn's Server is shutting down: close when idle, else after the answer in flight."""
        if self._busy:
            self._closing = True
        elif not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._gone:
            return
        if self._busy:
            self._pending.append(data)  # (a pipelining client: read again once answered)
            self.transport.pause_reading()
            return
        self._idle_since = None
        self._heard = True
        raw = self._raw = self._raw + data if self._raw else data
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # (a refusal, a malformed head, a body, a second request, an upgrade: the hand-over's new
            # protocol starts its head clock on these bytes, now, as this one would have)
            self._hand_over()
            return
        if self._parsed:
            self._parsed = False
            self._request()
            return
        if self._head_since is None:  # a head under way (bare CRLFs too): its clock starts with this read
            self._head_since = self.loop.time()
        if len(raw) > self._max_head + self._max_line:  # a head longer than the limits allow, still coming
            self._hand_over()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self._parsed:
            raise _HandOver  # a second request in the same read: pipelined
        self._url = []
        self._headers = []
        self._fields = self._head_bytes = self._url_len = 0
        self._forwarded = False

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        url_len = self._url_len = self._url_len + len(url)
        if url_len + 42 > self._max_line and line_too_long(url_len, self._max_line, self.parser):  # (rarely asked)
            raise _HandOver  # 414: LimitedHttpToolsProtocol says so

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields = self._fields + 1
        size = len(name) + len(value) + 4
        head_bytes = self._head_bytes = self._head_bytes + size
        if size > self._max_field or fields > self._max_fields or head_bytes > self._max_head:
            raise _HandOver  # 431: LimitedHttpToolsProtocol says so
        low = _PLAIN.get(name)
        if low is None:  # a name not seen yet (or one that may rule the request out, or a proxy's)
            low = name.lower()
            if low.startswith(b"x-forwarded-"):
                self._forwarded = True  # (the scope pass in _request)
            elif low in _NOT_PLAIN:
                if _rules_out(low, value):
                    raise _HandOver  # a body, Expect, RFC 7239's Forwarded
            elif len(_PLAIN) < _PLAIN_MAX:
                _PLAIN[name] = low
        self._headers.append((low, value.rstrip(b" \t")))

    def on_body(self, body: bytes) -> None:
        raise _HandOver

    def on_message_complete(self) -> None:
        # (llhttp's flags are the next message's once this returns: read them now)
        parser = self.parser
        self._method = parser.get_method()
        self._http_version = http_version = parser.get_http_version()
        self._keep_alive = http_version != "1.0" and parser.should_keep_alive()
        self._upgrade = parser.should_upgrade()
        self._parsed = True
        self._head_since = None  # (a body-less message: its head ended just now; no on_headers_complete)

    # ------------------------------------------------------------ the request

    def _request(self) -> None:
        """A whole body-less request, alone in its read: to the pool, or handed over."""
        method = self._method
        if method == b"HEAD" or self._upgrade:
            self._hand_over()
            return
        try:
            parsed = httptools.parse_url(b"".join(self._url))
            raw_path = parsed.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserError, UnicodeDecodeError):
            self._hand_over()  # (uvicorn answers 400)
            return
        if "%" in path:
            path = urllib.parse.unquote(path)
        http_version = self._http_version
        root_path = self.root_path
        scope = self.scope = {
            "type": "http", "http_version": http_version, "server": self.server, "client": self.client,
            "scheme": "http", "root_path": root_path, "headers": self._headers, "method": method.decode("ascii"),
            "path": root_path + path, "raw_path": root_path.encode("ascii") + raw_path if root_path else raw_path,
            "query_string": parsed.query or b"",
        }
        pool = self.pool
        limit = self.config.limit_concurrency  # (--limit-concurrency, gunicorn's worker_connections)
        if not fastpath.eligible(scope, pool, True, self._head_bytes + self._url_len) or (
                limit is not None and (len(self.server_state.connections) >= limit
                                       or len(self.server_state.tasks) >= limit)):
            self._hand_over()  # (over the limit: uvicorn's protocol answers its 503)
            return
        if self._forwarded:  # what the proxy-headers middleware (and gunicorn's front) make of it
            scope_pass = _scope_pass(self.config, self.config.loaded_app)
            passed = scope_pass(scope) if scope_pass is not None else None
            if passed is None:
                self._hand_over()
                return
            scope = self.scope = passed
        self.record = Record(scope, perf_counter())
        self._busy = True
        slot = pool.dispatcher.take_or_wait(self)
        if slot is None:
            self._queued_at = perf_counter()  # (queued: set_result comes later, never from in there)
        else:
            self._dispatch(slot)

    # The stand-in for the dispatcher's future (a slot) and the exchange's (the first frame).

    #: Never done (a future's ``done()``, asked by the dispatcher and the exchange at every request):
    #: ``bool()`` is False, called in C, no Python frame.
    done = staticmethod(bool)

    def set_result(self, value: Any) -> None:
        if self.exchange is None:
            self._dispatch(value)
        else:
            self._answer()

    def set_exception(self, exc: BaseException) -> None:
        """Queued when the pool gave up on its waiters: the 503 they all get, by uvicorn's protocol."""
        self._add_queued()
        if self._lost:
            self._busy = False
            self.record.reason = "client left while queued"
            self.pool._finish(self.record)
            return
        self._hand_over(refused=exc)

    def cancel(self) -> None:
        pass

    def _add_queued(self) -> None:
        if self._queued_at:
            self.record.queued += perf_counter() - self._queued_at
            self._queued_at = 0.0

    def _dispatch(self, slot: Any) -> None:
        pool = self.pool
        record = self.record
        if self._queued_at:  # (_add_queued(), inline)
            record.queued += perf_counter() - self._queued_at
            self._queued_at = 0.0
        if self._lost:  # the client left while queued: no worker runs it
            self._busy = False
            pool.dispatcher.give_back(slot)
            record.reason = "client left while queued"
            pool._finish(record)
            return
        record.pid = slot.worker.pid
        scope = self.scope
        self.exchange = fastpath.send(pool, slot, scope, pool._worker_fields(scope), self)
        if self.exchange is None:  # (not sent: uvicorn's protocol dispatches it again)
            self._hand_over()

    def _answer(self) -> None:
        exchange = self.exchange
        exchange._waiter = None  # (whatever comes next is the relay's, if any)
        events = exchange._events
        event = events[0]
        if self._lost:
            self._drop(exchange)
            return
        if event.__class__ is Start and event.done and not self._write_paused and not self.transport.is_closing():
            body = event.body
            framed = frame_head(event.status, event.headers, len(body), self._keep_alive and not self._closing,
                                self.server_state.default_headers)
            if framed is not None:
                head, keep_alive = framed
                self.transport.write(head + body)
                events.popleft()
                # (No exchange.close() nor stop_clock(): a done START ended the exchange as it came --
                # its clock stopped there -- and a first frame leaves nothing in a spill file.)
                self.exchange = None
                record = self.record
                record.status, record.headers = event.status, event.headers
                record.bytes_out += len(body)
                self.pool._finish(record)
                if self.access_log:
                    fastpath.log_access(self.access_logger, self.scope, event.status)
                self._answered(keep_alive)
                return
        self._hand_over(adopt=exchange)  # the relay picks it up from this event on

    def _answered(self, keep_alive: bool) -> None:
        self._served += 1
        self.server_state.total_requests += 1
        self._busy = False
        self._heard = False
        self._raw = b""
        keep_alive = keep_alive and self.timeout_keep_alive > 0
        if self._write_paused:
            # A client that does not read: the send timeout is uvicorn's protocol's, closing or not
            # (a transport closed with its buffer full would otherwise wait for the client forever).
            if keep_alive:
                self._idle_since = self.loop.time()
            else:
                self._pending.clear()
            self._hand_over()
            if not keep_alive:
                self.transport.close()
            return
        if not keep_alive:
            self.transport.close()
            return
        self._idle_since = self.loop.time()
        pending = self._pending
        if pending:
            data = b"".join(pending)
            pending.clear()
            self.transport.resume_reading()
            self.data_received(data)

    def _drop(self, exchange: Any) -> None:
        """The client left while its request was at a worker: end the exchange as the relay would."""
        self._busy = False
        self.exchange = None
        record = self.record
        record.reason = "client gone"
        pool = self.pool
        if exchange.finished:
            exchange.close()
            exchange.stop_clock()
        else:
            _cancel(exchange)
            pool.dispatcher.background(pool._drain(exchange))
        pool._finish(record)

    # ------------------------------------------------------------ the timer

    # One timer per connection, re-armed only when it fires: a request costs two
    # attribute writes (head started, idle since), not a timer of its own.

    def _arm(self, delay: float | None = None) -> None:
        # Never later than either timeout away: a connection that goes idle, or starts a head, needs
        # no re-arming (the tick that finds it so arms the exact rest).
        period = self._period
        self._timer = self.loop.call_later(period if delay is None or delay > period else delay, self._tick)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self._gone:
            return
        now = self.loop.time()
        header_timeout = self.limits.header_timeout
        left = None
        if self._busy:
            pass  # (the request's own clock is the pool's)
        elif self._head_since is not None:
            if header_timeout:
                left = self._head_since + header_timeout - now
                if left <= 0.001:
                    if self._heard:
                        self._hand_over(refuse=(408, "Request Timeout: the request head took too long"))
                    else:  # never sent a byte: like nginx, just close
                        self._close()
                    return
        elif self._idle_since is not None:
            left = self._idle_since + self.timeout_keep_alive - now
            if left <= 0.001:
                self._close()  # uvicorn's keep-alive timeout
                return
        self._arm(left)

    def _close(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------ the hand-over

    def _hand_over(self, adopt: Any = None, refused: BaseException | None = None,
                   refuse: tuple[int, str] | None = None) -> None:
        """From here on the connection is ``handover_class``'s: fed the raw bytes since the
        last answered request (and what came after), it takes up what this protocol would
        not; ``adopt``: the exchange of the request those bytes begin with, already at a
        worker, which its relay picks up instead of sending the request again;
        ``refused``: that request, queued, gets the 503 of a pool that gave up on its waiters;
        ``refuse``: the head under way is refused (the header timeout)."""
        transport = self.transport
        connections = self.server_state.connections
        was_ours = self in connections
        if was_ours:
            self.pool.dispatcher.counters["handed_over"] += 1
        connections.discard(self)
        self._disarm()
        self._gone = True
        self.parser = None  # type: ignore[assignment]
        data = self._raw
        if self._pending:
            data += b"".join(self._pending)
            self._pending.clear()
            transport.resume_reading()
        new = self.handover_class(config=self.config, server_state=self.server_state, app_state=self.app_state,
                                  _loop=self.loop)
        if adopt is not None or refused is not None:
            new._adopt = _Adoption(self, adopt, refused)
        if was_ours:
            new._hand_back_to = type(self)  # (it hands the connection back once idle: _take_back)
            new._hand_back_after = self._next_hand_back()
        transport.set_protocol(new)
        new.connection_made(transport)
        if not was_ours and transport.is_closing():  # (closed at accept, over the connection cap)
            return
        if was_ours and refuse is None:
            self._carry_clocks(new, data)
        if self._write_paused:
            new.pause_writing()
        if refuse is not None:
            if data:
                new.data_received(data)
            new._head_since = self._head_since
            if not transport.is_closing():
                new._refuse(*refuse)
            return
        if data:
            new.data_received(data)
        if self._closing:
            new.shutdown()  # (uvicorn's Server asked this protocol, which it no longer sees)
        if new._adopt is not None:  # not adopted (refused, or the client gone): end its exchange here
            new._adopt = None
            if adopt is not None:
                self._drop(adopt)
            else:
                self.record.reason = "client gone"
                self.pool._finish(self.record)

    def _next_hand_back(self) -> int:
        """How many fast-path requests in a row the protocol this one hands the connection to
        serves before it hands it back: 1, unless this protocol took the connection back and
        served fewer than ``BOUNCE`` requests before handing it over again -- then twice as many as
        the last time (at most ``MAX_WAIT``): a connection that sends bodies often (an API's POSTs)
        stays with uvicorn's protocol instead of paying two hand-overs for every body (~75 us a
        body on hello, measured: more than ``BOUNCE`` lean requests save)."""
        if self._taken_back and self._served < BOUNCE:
            return min(self._back_after * 2, MAX_WAIT)
        return 1

    @classmethod
    def _take_back(cls, old: Any) -> None:
        """The connection this class handed ``old`` (a LimitedHttpToolsProtocol) is idle again
        (``old`` checked that nothing is half done and stopped its clocks): this class's from here,
        its keep-alive clock still running from the last answer."""
        transport = old.transport
        lean = cls(old.config, old.server_state, old.app_state, _loop=old.loop)
        lean.transport = transport
        lean.pool = _fast_pool(lean.config, lean.config.loaded_app)
        lean.server, lean.client = old.server, old.client
        lean.server_state.connections.add(lean)
        lean._head_since = None
        lean._idle_since = old._idle_since
        lean._taken_back, lean._back_after = True, old._hand_back_after
        lean._arm()
        transport.set_protocol(lean)

    def _carry_clocks(self, new: Any, data: bytes) -> None:
        """The new protocol's clocks where this one's stood: a head under way keeps the time its
        first byte came (not the hand-over's: a slow head is not given a second header timeout);
        an idle connection (nothing to replay) keeps its keep-alive timeout, not a new head's."""
        loop = self.loop
        now = loop.time()
        since = self._head_since
        if since is not None:
            timeout = self.limits.header_timeout
            if timeout and new._head_since is not None:
                new._head_since = since
                new._disarm_header_timer()
                new._header_timer = loop.call_later(max(since + timeout - now, 0.0), new._on_header_timeout)
        elif self._idle_since is not None and not data:
            new._head_since = None
            new._idle_since = self._idle_since
            if new.timeout_keep_alive_task is None:
                new.timeout_keep_alive_task = loop.call_later(
                    max(self._idle_since + self.timeout_keep_alive - now, 0.0), new._keep_alive_expired)


class _Adoption:
    """What the new protocol's first request takes over from this one (see ``_hand_over``)."""

    __slots__ = ("exchange", "lean", "refused")

    def __init__(self, lean: LeanProtocol, exchange: Any, refused: BaseException | None) -> None:
        self.lean = lean
        self.exchange = exchange
        self.refused = refused

    def __call__(self, protocol: Any, cycle: Any) -> None:
        """``protocol``'s first request (``cycle``) is the lean protocol's: its relay (or 503) from here."""
        lean = self.lean
        request = fastpath.FastRequest(lean.pool, protocol, cycle, lean.scope)
        request.record = lean.record
        request.exchange = self.exchange
        lean._busy = False
        lean.exchange = None
        request._hand_back(self.exchange, refused=self.refused)  # type: ignore[arg-type]  # (an Unavailable)

