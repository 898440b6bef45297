"""The front's fast path (``--fast-path``, issue 22): body-less requests without ASGI.

Measured (docs/performance.md, "A front without ASGI"): most of the front's CPU
per request is not HTTP nor the IPC but the ASGI machinery around each request —
a task, coroutines awaiting coroutines, message dicts, the proxy-headers
middleware, uvicorn's ``send()`` validating headers the worker already checked
and writing head and body apart.  Here a2wsgi_mp's own uvicorn protocol
(``headlimits``) hands a request that has no body straight to the pool's
dispatcher by callbacks, and a worker's answer that is complete in its first
frame goes out in one write (:mod:`a2wsgi_mp.framing`), the uvicorn cycle then
completed as ``send()`` would (keep-alive, pipelining, access log).

Everything else keeps the ASGI path, decided as late as possible and losing
nothing: a request with a body, ``Expect``, RFC 7239's ``Forwarded``, the metrics path,
a pool that would refuse (503) — the usual task from the start; a response that
streams, a file, HEAD, a 1xx/204/304, a dead worker (502), a timeout (504) —
the usual relay picks up the same exchange where the callback stopped.
"""

from __future__ import annotations

import copy
import time
from time import perf_counter
from typing import Any, cast

from uvicorn.middleware.message_logger import MessageLoggerMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ..framing import frame_head
from ..ipc import protocol
from ..record import Record
from .app import MAX_HEAD, Recording, WSGIPool, _send_unavailable
from .dispatch import Unavailable


def find_pool(app: Any) -> WSGIPool | None:
    """The WSGIPool under uvicorn's wrappers, if the app is one the fast path may call
    past them: a layer that says ``fast_path_opaque`` (it must see every request: the
    gunicorn worker's ``pre_request``/``post_request`` hooks) keeps every request on the
    ASGI path."""
    for _ in range(4):
        if isinstance(app, WSGIPool):
            return app
        if getattr(app, "fast_path_opaque", False):
            return None
        app = getattr(app, "app", None)
    return None


class ScopePass:
    """What the layers between uvicorn and the pool do to a forwarded request's scope, done
    without them: uvicorn's proxy-headers middleware (``--forwarded-allow-ips``: the client
    address and scheme from ``X-Forwarded-For``/``-Proto``) and the gunicorn worker's front
    (``secure_scheme_headers``).

    Behind a proxy every request carries those headers: without this, every one of them
    took the ASGI path.  The layers' own code decides (copies of them, each calling the
    next copy instead of the next layer, the last a capture of the scope the pool would
    get), so what uvicorn's or gunicorn's version does to the scope is what is done here;
    a layer that would answer by itself (gunicorn's 400 for contradictory scheme headers),
    await anything, or raise leaves the request to the ASGI path, which does it for real."""

    __slots__ = ("_chain", "_seen")

    def __init__(self, layers: list[Any]) -> None:
        chain: Any = self._capture
        for layer in reversed(layers):
            clone = copy.copy(layer)
            clone.app = chain
            chain = clone
        self._chain = chain
        self._seen: Any = None

    @classmethod
    def of(cls, app: Any) -> ScopePass | None:
        """The pass for the layers above the pool in ``app`` (as :func:`find_pool` walks
        them), or None if one of them is not known to touch nothing but the scope."""
        layers: list[Any] = []
        for _ in range(4):
            if isinstance(app, WSGIPool):
                return cls(layers)
            if isinstance(app, _SCOPE_LAYERS) or getattr(app, "fast_path_scope_layer", False):
                layers.append(app)
            elif not isinstance(app, MessageLoggerMiddleware):  # (a trace log: the fast path logs no messages)
                return None
            app = getattr(app, "app", None)
        return None

    async def _capture(self, scope: Any, receive: Any, send: Any) -> None:
        self._seen = scope

    def __call__(self, scope: dict) -> dict | None:
        """The scope the pool would be called with, or None: the ASGI path's to do.
        (``scope`` itself is changed in place as the middleware would change it.)"""
        self._seen = None
        step = self._chain(scope, _not_here, _not_here)
        try:
            step.send(None)
        except StopIteration:
            return self._seen
        except Exception:  # (answered by the layer itself, or its error: the ASGI path shows it)
            return None
        step.close()  # it awaited something: not a scope-only layer after all
        return None


async def _not_here(*_: Any) -> Any:
    raise _Answered


class _Answered(Exception):
    """A layer of a ScopePass received or sent a message: the request is not the fast path's."""


#: Layers known to act on a request's scope alone (what the gunicorn worker's own front marks itself).
_SCOPE_LAYERS = (ProxyHeadersMiddleware,)


def eligible(scope: dict, pool: WSGIPool, plain: bool, head_bytes: int) -> bool:
    """A request the fast path may take: no body, nothing a middleware would change.

    The protocol noted while parsing whether any header rules it out (``plain``:
    no body framing, ``Expect`` or ``Forwarded``) and the bytes of its URL and
    fields (``head_bytes``, at least :func:`~a2wsgi_mp.environ.head_size`'s count):
    no second pass over the headers here."""
    cfg = pool.config
    if not plain or scope["method"] == "HEAD" or cfg.raise_app_errors or cfg.queue_timeout:
        return False
    if head_bytes + len(scope["root_path"]) > MAX_HEAD:  # (the ASGI path answers it)
        return False
    if scope["path"] in (cfg.metrics_path, cfg.health_path):  # (the front answers those itself)
        return False
    dispatcher = pool.dispatcher
    if not dispatcher.started or dispatcher.supervisor.stopping or dispatcher.supervisor.hopeless:
        return False
    return len(dispatcher._waiters) < cfg.backlog


def send(pool: WSGIPool, slot: Any, scope: Any, head: dict[str, Any] | tuple, waiter: Any) -> Any:
    """A body-less request on ``slot`` (``head``: its head as a map, or already as the array the
    IPC carries -- ``WSGIPool._worker_fields``): its exchange, whose first frame goes to ``waiter`` (a
    future's stand-in), or None if it was not sent (its worker is being replaced: the caller
    dispatches it again).  The waiter is set only once it is sent: a failed send feeds the
    exchange its ``Lost`` at once, which would otherwise answer the request (a relay, a hand-over)
    while the caller dispatches it again -- the app run twice."""
    exchange = pool.dispatcher.begin(slot)
    slot.request, slot.since = scope, time.monotonic()  # (for a death report)
    if not pool._send_request(exchange, head, b"", 0, None):
        return None
    exchange._waiter = waiter
    return exchange


def log_access(logger: Any, scope: Any, status: int) -> None:
    """uvicorn's access-log line for a response written without its ``send()``."""
    from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

    logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope), scope["method"],
                get_path_with_query_string(scope), scope["http_version"], status)


class FastRequest:
    """One request on the fast path, from dispatch to the last byte (or to the relay).

    It stands for the two futures the ASGI path would await — the dispatcher's
    (a slot, when the request queues) and then the exchange's (the worker's first
    frame) — as callbacks: no task, no future per request."""

    __slots__ = ("cycle", "dispatcher", "exchange", "pool", "protocol", "queued_at", "record", "scope")

    def __init__(self, pool: WSGIPool, protocol_: Any, cycle: Any, scope: Any) -> None:
        self.pool = pool
        self.dispatcher = pool.dispatcher
        self.protocol = protocol_
        self.cycle = cycle
        #: The scope the pool is called with: the cycle's, or what the layers above the pool make of
        #: it (``ScopePass``: a forwarded request's client and scheme).
        self.scope = scope
        self.exchange: Any = None
        #: The request's record (metrics, access log), as WSGIPool._http keeps one.
        self.record = Record(scope, perf_counter())
        self.queued_at = 0.0

    def start(self) -> None:
        slot = self.dispatcher.take_or_wait(self)
        if slot is None:
            self.queued_at = perf_counter()  # (queued: set_result comes later, never from in there)
        else:
            self._dispatch(slot)

    # ------------------------------------------------------------ the futures' stand-in

    #: Never done (a future's ``done()``, asked by the dispatcher and the exchange at every request):
    #: ``bool()`` is False, called in C, no Python frame.
    done = staticmethod(bool)

    def set_result(self, value: Any) -> None:
        """A slot for the queued request (from the dispatcher), or its worker's first frame (from
        the exchange)."""
        if self.exchange is None:
            self._dispatch(value)
        else:
            self._answer()

    def set_exception(self, exc: BaseException) -> None:
        """The dispatcher gives up on its waiters (shutting down, or no worker can load the app)."""
        self._refused(cast(Unavailable, exc))

    def cancel(self) -> None:
        pass

    # ------------------------------------------------------------ the request

    def _dispatch(self, slot: Any) -> None:
        dispatcher = self.dispatcher
        cycle = self.cycle
        record = self.record
        if self.queued_at:
            record.queued += perf_counter() - self.queued_at
        if cycle.disconnected:  # the client left while queued: no worker runs it
            dispatcher.give_back(slot)
            record.reason = "client left while queued"
            self.pool._finish(record)
            return
        record.pid = slot.worker.pid
        pool = self.pool
        scope = self.scope
        self.exchange = send(pool, slot, scope, pool._worker_head(scope, cycle.send), self)
        if self.exchange is None:  # (not sent: the ASGI path dispatches it again)
            self._hand_back(None)

    def _refused(self, exc: Unavailable) -> None:
        """Queued when the pool gave up on its waiters: the 503 they all get, by the ASGI path."""
        if self.queued_at:
            self.record.queued += perf_counter() - self.queued_at
        self._hand_back(None, refused=exc)

    def _answer(self) -> None:
        exchange = self.exchange
        exchange._waiter = None  # (whatever comes next is the relay's, if any)
        events = exchange._events
        event = events[0]
        if isinstance(event, protocol.Start) and event.done and self._write_whole(event):
            events.popleft()
            exchange.close()
            exchange.stop_clock()
            record = self.record
            record.status, record.headers = event.status, event.headers
            record.bytes_out += len(event.body)
            self.pool._finish(record)
            return
        self._hand_back(exchange)

    def _hand_back(self, exchange: Any, refused: Unavailable | None = None) -> None:
        """The usual ASGI path from here: the relay from the exchange's next event on
        (``exchange``), or a fresh dispatch (None), or the 503 of a pool that gave up on
        its queue (``refused``), in a task of its own."""
        pool = self.pool
        record = self.record
        scope = self.scope  # (not the cycle's: the one the layers above the pool made, if any)

        async def rest(_: Any, receive: Any, send: Any) -> None:
            with Recording(pool, record):
                if refused is not None:
                    await _send_unavailable(send, refused, record)
                    return
                # The request's (empty) body message, which the ASGI path reads before
                # dispatching: the relay's next receive() then waits for the client to leave.
                first = await receive()
                if exchange is not None and await pool._relay(exchange, receive, send, scope, record):
                    return
                # It never reached a worker (or died unread there): dispatched again, as
                # WSGIPool does, with the body message given back.
                replay = [first]

                async def again() -> Any:
                    return replay.pop() if replay else await receive()

                await pool._serve(scope, again, send, record)

        self.protocol._run_asgi_task(self.cycle, rest)

    def _write_whole(self, event: protocol.Start) -> bool:
        cycle = self.cycle
        transport = cycle.transport
        if cycle.disconnected or transport.is_closing() or cycle.flow.write_paused:
            return False
        framed = frame_head(event.status, event.headers, len(event.body), cycle.keep_alive, cycle.default_headers)
        if framed is None:
            return False
        head, keep_alive = framed
        transport.write(head + event.body)
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.keep_alive = keep_alive
        cycle.response_complete = True
        cycle.message_event.set()
        if cycle.access_log:
            log_access(cycle.access_logger, cycle.scope, event.status)
        if not keep_alive:
            transport.close()
        cycle.on_response()
        cycle.on_response = lambda: None
        return True
