"""``WSGIPool``: the ASGI app that serves a WSGI app through a process pool.

A request's path: read the whole body into a :class:`~a2wsgi_mp.pool.spool.Spool`
(so a slow client holds no worker), take an idle worker connection from the
:class:`~a2wsgi_mp.pool.dispatch.Dispatcher`, send the request, and relay the response
events back to the ASGI server as they come.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from time import perf_counter
from typing import Any, cast

from .. import cgroup, logs, topology
from .. import record as records
from ..accesslog import AccessLog
from ..admin import AdminServer
from ..config import PoolConfig
from ..environ import head_size, request_head
from ..errors import BootInterrupted, RemoteAppError
from ..hooks import ServerView, load_hooks
from ..ipc import protocol
from ..ipc.fds import FileHandoff
from ..loader import AppRef, describe
from ..record import Record
from ..replies import send_plain
from ..types import Message, Receive, Scope, Send
from . import direct, metrics
from .body_timeout import BodyReads
from .client import cut_response
from .dispatch import BootFailed, Dispatcher, Unavailable
from .exchange import Exchange, Lost, TimedOut
from .filesend import send_file
from .queue_watch import QueueWatch
from .spool import BodyTooLarge, Spool
from .worker import Slot, State

logger = logging.getLogger("a2wsgi_mp")
app_logger = logging.getLogger("a2wsgi_mp.wsgi")

#: A request queued longer than this (up to twice this) starts watching for its client leaving.
QUEUE_WATCH_AFTER = 0.25
#: A head larger than this is refused (431) rather than sent: with the largest
#: inline body (:data:`MAX_INLINE`) the REQUEST frame stays under the IPC limit.
MAX_HEAD = protocol.MAX_PAYLOAD // 2
MAX_INLINE = protocol.MAX_PAYLOAD // 4
#: Tries to deliver a request whose worker provably never read it (each to another worker).
DISPATCH_ATTEMPTS = 3


class WSGIPool:
    """An ASGI 3 application serving ``app`` from a pool of worker processes.

    ``app`` is an import string (``"package.module:app"``, loaded in every
    worker) or a WSGI callable (handed to the workers through fork).  Keyword
    options are those of :class:`~a2wsgi_mp.config.PoolConfig`.
    """

    def __init__(self, app: AppRef, **options: Any) -> None:
        self.app_ref = app
        self.config = PoolConfig.from_kwargs(options)
        if self.config.start_method == "spawn" and not isinstance(app, str):
            raise ValueError(
                f"start_method='spawn' needs the app as an import string such as 'package.module:app'; "
                f"{describe(app)} is an object, which only start_method='fork' can hand to workers"
            )
        self.dispatcher = Dispatcher(app, self.config)
        #: The hooks module (imported here too: its front hooks run in this process).
        self.hooks = self.dispatcher.supervisor.hooks = load_hooks(self.config.hooks, self.config.hook_names)
        self._queue_watch = QueueWatch(QUEUE_WATCH_AFTER)
        self._body_reads = BodyReads(self.config.body_timeout) if self.config.body_timeout else None
        #: Every finished request's record feeds these (see :mod:`a2wsgi_mp.record`).
        self.requests = metrics.RequestMetrics()
        self.access_log: AccessLog | None = AccessLog(self.config.access_log_format) if self.config.access_log else None
        self.admin: AdminServer | None = None
        self._start_lock: asyncio.Lock | None = None
        #: Set on SIGTERM (before the drain, during a shutdown delay): health answers 503.
        self.draining = False
        self._stopping: asyncio.Task[None] | None = None
        #: (number of fronts, how it is known), set by a launcher that knows
        #: (the CLI, the gunicorn worker); otherwise detected at start-up.
        self.fronts: tuple[int | None, str] | None = None

    @property
    def pool(self) -> Dispatcher:
        """The old name of :attr:`dispatcher` (the class was ``Pool``), kept for code that used it."""
        return self.dispatcher

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._run_lifespan(receive, send)
        elif kind == "websocket":
            # A WSGI app cannot speak WebSocket: refuse the handshake cleanly (403).
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1000})
        else:
            raise RuntimeError(f"WSGIPool cannot handle {kind!r} scopes")

    async def startup(self) -> None:
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.dispatcher.started:
                return
            logs.ensure_visible()
            await self.dispatcher.start()
            records.refusal_sink = self._finish  # the protocol's refusals (408, 414, 431) count here too
            if self.config.admin_socket or self.config.admin_bind:
                self.admin = AdminServer(self._snapshot)
                unix = self.config.admin_socket
                await self.admin.start(unix and unix.replace("{pid}", str(os.getpid())), self.config.admin_bind)
            fronts, how = self.fronts or topology.detect_fronts()
            workers = cast(int, self.config.workers)  # (a (min, max) pair is resolved by PoolConfig)
            logger.info("%s", topology.describe(fronts, how, workers, self.config.threads))
            self._check_fit()
            self.hooks.call_logged("when_ready", ServerView(os.getpid()))

    def _check_fit(self) -> None:
        """Say where the worker count came from, and whether that many workers fit in the
        cgroup's memory limit at the RSS a worker has now."""
        if self.config.workers_source:
            logger.info("%d workers: %s", self.config.workers, self.config.workers_source)
        workers = self.dispatcher.stats()["workers"]
        largest = max((w["rss"] for w in workers), default=0)
        warning = cgroup.memory_warning(self.config.workers_max, largest, cgroup.memory_limit())
        if warning:
            logger.warning("%s", warning)

    async def shutdown(self, graceful_timeout: float | None = None) -> None:
        """Drain: in-flight requests get ``graceful_timeout`` (default: the pool's setting).
        After :meth:`begin_shutdown`, waits for the drain that one started."""
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        await self._stop(graceful_timeout)

    def begin_shutdown(self, graceful_timeout: float | None = None) -> None:
        """Start draining now, on the server's signal, rather than at the lifespan shutdown
        (which uvicorn sends only after its own wait for the requests in flight)."""
        if self._stopping is None and self.dispatcher.started:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(graceful_timeout))

    async def _stop(self, graceful_timeout: float | None) -> None:
        self.draining = True
        await self.dispatcher.stop(graceful_timeout)
        if records.refusal_sink == self._finish:
            records.refusal_sink = None
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        self._queue_watch.close()
        if self._body_reads is not None:
            self._body_reads.close()

    async def reload(self) -> None:
        self.hooks.call_logged("on_reload", ServerView(os.getpid()))
        await self.dispatcher.reload()

    def stats(self) -> dict[str, Any]:
        return self.dispatcher.stats()

    def snapshot(self) -> dict[str, Any]:
        """The pool's state and request figures (metrics, ``a2wsgi-mp status``), JSON-able."""
        return metrics.snapshot(self.dispatcher, self.requests)

    async def _snapshot(self) -> dict[str, Any]:
        return self.snapshot()

    def _finish(self, record: Record) -> None:
        """A request is over: count it, and log it when the access log is on."""
        record.duration = perf_counter() - record.start
        self.requests.observe(record)
        if self.access_log is not None:
            self.access_log(record)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except BootInterrupted as exc:  # (stopped on purpose: no error, and the server says why)
                    logger.info("%s", exc)
                    await send({"type": "lifespan.startup.failed", "message": ""})
                    return
                except BootFailed as exc:
                    await self.dispatcher.stop(0)
                    await send({"type": "lifespan.startup.failed", "message": f"WSGI app failed to load:\n{exc}"})
                    return
                except Exception as exc:
                    logger.exception("pool start-up failed")
                    await self.dispatcher.stop(0)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------ HTTP

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = Record(scope, perf_counter())
        with Recording(self, record):
            await self._serve(scope, receive, send, record)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, record: Record) -> None:
        # (A request the front answers itself, or refuses before any worker, must also
        # be kept off the fast path: pool/fastpath.py's ``eligible``.)
        if not self.dispatcher.started:
            try:
                await self.startup()
            except BootFailed as exc:
                logger.error("%s", exc)
                await _send_plain(send, 503, "Service Unavailable", [(b"retry-after", b"1")], record=record)
                return
        cfg = self.config
        if cfg.health_path is not None and scope["path"] == cfg.health_path:
            await self._send_health(send, record)
            return
        if cfg.metrics_path is not None and scope["path"] == cfg.metrics_path:
            await self._send_metrics(scope, send, record)
            return
        if head_size(scope) > MAX_HEAD:  # no worker could decode it
            await _send_plain(send, 431, "Request Header Fields Too Large", [(b"connection", b"close")],
                              record=record)
            return
        if cfg.max_body_size is not None:
            declared = _content_length(scope)
            if declared is not None and declared > cfg.max_body_size:
                await _send_plain(send, 413, "Request body too large", [(b"connection", b"close")], record=record)
                return
        threshold = min(cfg.spool_threshold, MAX_INLINE)
        spool: Spool | None = None
        inline: bytes | None
        reads = self._body_reads  # every read of the body within body_timeout
        task: asyncio.Task[Any] | None = None
        try:
            # The common case, a body in one message (GET: empty), needs no spool.
            if reads is not None:  # (a dict entry while it waits, not a wrapper: this runs for every request)
                loop = self.dispatcher.loop or asyncio.get_running_loop()
                task = asyncio.current_task(loop)
                assert task is not None
                reads.begin(task, loop)
                try:
                    message = await receive()
                finally:
                    reads.end(task)
            else:
                message = await receive()
            body = message.get("body", b"")
            if message["type"] == "http.request" and not message.get("more_body", False) and len(body) <= threshold:
                inline, size = body, len(body)
                if cfg.max_body_size is not None and size > cfg.max_body_size:
                    raise BodyTooLarge(size)
            else:
                spool = Spool(threshold, cfg.max_body_size, cfg.spool_dir)
                if not await _read_body(receive, spool, message, reads, task):
                    record.bytes_in = spool.size
                    record.reason = "client left while sending the body"
                    return
                inline = await spool.finish()
                size = spool.size
        except BodyTooLarge:
            if spool is not None:
                spool.close()
            await _send_plain(send, 413, "Request body too large", [(b"connection", b"close")], record=record)
            return
        except asyncio.CancelledError:
            if spool is not None:
                spool.close()
            if reads is None or task is None or not reads.timed_out(task):
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            await _send_plain(send, 408, "Request Timeout: the request body stopped coming",
                              [(b"connection", b"close")], record=record)
            return
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        record.bytes_in = size
        head = self._worker_head(scope, send)
        try:
            # A request that provably never reached its worker (the send failed, or the
            # worker died with it unread) goes to another: the app never ran.
            for _attempt in range(DISPATCH_ATTEMPTS):
                try:
                    slot = self.dispatcher.take_idle() or await self._wait_for_slot(receive, record)
                except Unavailable as exc:
                    await _send_unavailable(send, exc, record)
                    return
                if slot is None:
                    record.reason = "client left while queued"
                    return  # no worker runs it
                exchange = self.dispatcher.begin(slot)
                record.pid = slot.worker.pid
                slot.request, slot.since = scope, time.monotonic()  # (for a death report)
                sent = self._send_request(exchange, head, inline, size, spool)
                if sent is None:
                    break  # could not be sent, for a reason other than a broken connection
                if sent and await self._relay(exchange, receive, send, scope, record):
                    return
                logger.warning("worker %s never read the request (%s); dispatching it again", slot.worker.pid,
                               "its connection broke" if sent else "the send failed")
            self.dispatcher.counters["502"] += 1
            await _send_plain(send, 502, "Bad Gateway: the request could not be delivered to a worker",
                              record=record)
        finally:
            if spool is not None:
                spool.close()  # (kept open until here: a request sent again needs its body again)

    def _worker_head(self, scope: Scope, send: Send | None, direct_ok: bool = False) -> dict[str, Any]:
        """What a worker gets of the request (the fast path's too): the scope's
        msgpack-clean part, the header map when not the default, and whether the
        front can take an OFFER of the body (``pool/direct.py``; ``direct_ok``: the
        lean protocol's plain connection, whose relay, if any, will be uvicorn's)."""
        head = request_head(scope)
        cfg = self.config
        if cfg.header_map != "drop":
            head["header_map"] = cfg.header_map
        if cfg.direct_stream and (direct_ok or (send is not None and direct.may_offer(send))):
            head["direct"] = True
        return head

    def _worker_fields(self, scope: Scope) -> tuple:
        """``environ.head_fields(self._worker_head(scope, None, direct_ok=True))`` built at once,
        the array the IPC carries (no dict, no second pass): the lean protocol's request, whose
        scope it made itself (every key there, its headers a list)."""
        cfg = self.config
        header_map = cfg.header_map
        headers = scope["headers"]
        return (scope["method"], scope["scheme"], scope["path"], scope["query_string"], scope["root_path"],
                headers if headers.__class__ is list else list(headers), scope["client"], scope["server"],
                scope["http_version"], None if header_map == "drop" else header_map, bool(cfg.direct_stream))

    def _send_request(self, exchange: Exchange, head: dict[str, Any] | tuple, inline: bytes | None, size: int,
                      spool: Spool | None) -> bool | None:
        """Send the request on its slot: True if sent, False if its worker provably did
        not get it (the connection is broken: it is ended as the worker's death),
        None if it could not be sent for another reason (logged)."""
        slot = exchange.slot
        pipe = slot.pipe
        try:
            if pipe.closed:
                raise ConnectionResetError("the worker's connection is closed")
            fd = spool.file.fileno() if spool is not None and spool.file is not None else None
            pipe.send_request(exchange.rid, head, inline, size, fd)  # (inline, by fd, or the shm ring)
            return True
        except Exception as exc:
            exchange.close()
            broken = isinstance(exc, OSError)
            if not broken:
                logger.error("could not send a request to worker %s", slot.worker.pid, exc_info=exc)
            pipe.fail(exc)  # the connection's state is unknown: the worker is replaced (its request lost)
            if not exchange.finished:  # (the connection was closed before: end the request here)
                exchange.feed(Lost(f"the request could not be sent: {exc}", pipe))
            return False if broken else None

    async def _send_health(self, send: Send, record: Record) -> None:
        """200 while a worker is ready and the pool is not draining; 503 otherwise."""
        ready = sum(w.state is State.READY for w in self.dispatcher.workers.values())
        if self.draining or self.dispatcher.supervisor.stopping:
            status, text = 503, "draining"
        elif not self.dispatcher.started or not ready:
            status, text = 503, "no worker ready"
        else:
            status, text = 200, f"ok: {ready} worker(s) ready"
        await _send_plain(send, status, text, [(b"cache-control", b"no-store")], record=record)

    async def _wait_for_slot(self, receive: Receive, record: Record) -> Slot | None:
        """Queue for a slot, watching the client once the wait gets long: None if it leaves."""
        loop = self.dispatcher.loop or asyncio.get_running_loop()  # (on 3.11 each lookup is a getpid() syscall)
        task = asyncio.current_task(loop)
        assert task is not None
        entry = self._queue_watch.add(task, receive, loop)
        queued = perf_counter()
        try:
            return await self.dispatcher.acquire()
        except asyncio.CancelledError:
            if not entry.left:
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            return None
        finally:
            self._queue_watch.remove(entry)
            record.queued += perf_counter() - queued

    async def _relay(self, exchange: Exchange, receive: Receive, send: Send, scope: Scope, record: Record) -> bool:
        """Forward the worker's response; a client that leaves cancels the request.

        False if the worker died without having read the request (see :class:`Lost`):
        nothing was sent to the client, and the request may go to another worker."""
        dispatcher = self.dispatcher
        slot = exchange.slot
        watcher: asyncio.Task[Message] | None = None
        started = False
        handoff: FileHandoff | None = None
        app_error: protocol.AppError | None = None
        heard = False  # any event from the worker for this request
        exchange.client = send
        exchange.relay = asyncio.current_task(dispatcher.loop)
        try:
            while True:
                event = await exchange.next()
                if isinstance(event, protocol.Start):
                    started = True
                    record.status, record.headers = event.status, event.headers
                    record.bytes_out += len(event.body)
                    await send({"type": "http.response.start", "status": event.status, "headers": event.headers})
                    await send({"type": "http.response.body", "body": event.body, "more_body": not event.done})
                    if event.done:
                        break
                    # A streaming response: from now on, notice a client that leaves.
                    watcher = asyncio.ensure_future(receive())
                    watcher.add_done_callback(lambda w: _on_disconnect(w, exchange))
                elif isinstance(event, protocol.Body):
                    record.bytes_out += len(event.data)
                    await send({"type": "http.response.body", "body": event.data, "more_body": True})
                elif isinstance(event, protocol.End):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    break
                elif isinstance(event, protocol.Offer):  # (pool/direct.py: the worker may write the body)
                    if direct.answer(exchange, send):
                        dispatcher.counters["direct"] += 1
                elif isinstance(event, protocol.Direct):
                    record.bytes_out += event.written
                    if await direct.resume(send, event):
                        break
                elif isinstance(event, FileHandoff):
                    handoff = event  # the worker is free: send the file after releasing it
                    break
                elif isinstance(event, protocol.Abort):
                    log = logger.debug if exchange.cancelled or event.reason == protocol.CLIENT_LEFT else logger.warning
                    log("response cut: %s", event.reason)
                    record.reason = f"response cut: {event.reason}"
                    break
                elif isinstance(event, Lost):
                    if event.unread and not heard:
                        return False
                    if dispatcher.supervisor.stopping:  # cut by the graceful timeout of a shutdown
                        logger.warning("shutdown: %s %s cut after the graceful timeout (%s)",
                                       (scope or {}).get("method"), (scope or {}).get("path"),
                                       "response cut" if started else "503")
                        if not started:
                            await _send_plain(send, 503, "Service Unavailable: shutting down",
                                              [(b"connection", b"close")], record=record)
                        else:
                            record.reason = "shutting down: graceful timeout"
                            await cut_response(send)
                        return True
                    dispatcher.counters["502"] += 1
                    if not started:
                        await _send_plain(send, 502, "Bad Gateway: the worker died", record=record)
                    else:
                        record.reason = "worker died"
                        await cut_response(send)
                    return True
                elif isinstance(event, TimedOut):  # (the dispatcher has the worker replaced)
                    dispatcher.counters["504"] += 1
                    why = f"timeout ({self.config.timeout:g} s)"
                    if not started:
                        await _send_plain(send, 504, "Gateway Timeout", record=record)
                        record.reason = why
                    else:
                        record.reason = why
                        await cut_response(send)
                    return True
                elif isinstance(event, protocol.AppError):
                    app_error = event  # the 500 or ABORT follows
                    # With raise_app_errors the ASGI server logs it when we raise it.
                    raised = self.config.raise_app_errors and not exchange.cancelled
                    app_logger.log(logging.DEBUG if raised else logging.ERROR, "[worker %s] %s", slot.worker.pid,
                                   event.message)
                heard = True
        except BaseException:
            # The server cancelled us, or send() failed: the client is gone.
            if not exchange.finished:
                _cancel(exchange)
                dispatcher.background(self._drain(exchange))
                exchange = None  # type: ignore[assignment]
            raise
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
            if exchange is not None:
                exchange.close()
                exchange.stop_clock()
        if handoff is not None:
            record.status, record.headers = handoff.status, handoff.headers
            record.bytes_out += handoff.length
            await send_file(handoff, scope, receive, send)
        if app_error is not None and self.config.raise_app_errors:
            raise RemoteAppError(app_error.message, slot.worker.pid)
        return True

    async def _send_metrics(self, scope: Scope, send: Send, record: Record) -> None:
        accept = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"accept"), None)
        body, content_type = metrics.render(self.snapshot(), accept)
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        record.status, record.bytes_out = 200, len(body)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _drain(self, exchange: Exchange) -> None:
        """After a cancel: read the rest of the response until the worker is done with it."""
        try:
            # (Its end -- the last frame, a death, the deadline -- has the dispatcher
            # free the slot or replace a stuck worker; here only what waits is read.)
            while not exchange.finished or exchange.pending:
                event = await exchange.next()
                if isinstance(event, protocol.Offer):  # nobody relays it now: the worker must not wait
                    exchange.slot.pipe.answer_offer(event.rid, None)
                elif isinstance(event, protocol.AppError):
                    app_logger.error("[worker %s] %s", exchange.slot.worker.pid, event.message)
        finally:
            exchange.close()
            exchange.stop_clock()


def _on_disconnect(watcher: "asyncio.Task[Message]", exchange: Exchange) -> None:
    if watcher.cancelled():
        return
    if watcher.exception() is not None or watcher.result().get("type") == "http.disconnect":
        if exchange.finished:
            exchange.cancel()  # the worker is done already: just drop what waits here
        else:
            _cancel(exchange)


def _cancel(exchange: Exchange) -> None:
    slot = exchange.slot
    if not exchange.finished and slot.exchange is exchange and not slot.pipe.closed:
        slot.pipe.send_cancel(exchange.rid)
        exchange.cancel()


#: A body trickled in tiny pieces is read in batches: once TRICKLE_STREAK pieces in a row were each
#: of at most TRICKLE_PIECE bytes and took the client more than TRICKLE_GAP seconds to send, every
#: next read waits TRICKLE_WAIT seconds first (at most a quarter of ``body_timeout``), and the pieces
#: that come meanwhile pile up in the ASGI server's buffer: one wake-up of the request for all of
#: them instead of one each.  A body sent at any real pace (pieces the size of a TCP segment, or
#: following each other closely), or in a few small pieces over a slow link, is never held; a
#: trickled one waits at most TRICKLE_WAIT more.  (P4: 2,000 clients sending a byte every 0.1 s
#: woke the front 20,000 times a second.)  A piece the request waited for half that long or more
#: came at a pace no wait would batch, or in a batch the protocol held (``headlimits/trickle.py``
#: keeps a trickle's pieces in the kernel and reads them together): the next read does not wait.
TRICKLE_PIECE = 512
TRICKLE_GAP = 0.02
TRICKLE_STREAK = 4
TRICKLE_WAIT = 0.5


async def _read_body(receive: Receive, spool: Spool, message: Message | None = None,
                     reads: BodyReads | None = None, task: asyncio.Task[Any] | None = None) -> bool:
    """Spool the whole body (from ``message``, already received, on); False if the client left first.
    With ``reads`` (and ``task``, the request's): each read within ``body_timeout`` of the previous piece."""
    loop = asyncio.get_running_loop()
    wait = TRICKLE_WAIT if reads is None else min(TRICKLE_WAIT, reads.timeout / 4)
    last = loop.time()  # when the previous piece came
    streak = 0  # tiny pieces in a row, each slow to come
    held = False  # the last piece was waited for (wait / 2 or more): no use waiting before the next
    while True:
        if message is None:
            if streak >= TRICKLE_STREAK and not held:
                await _sleep(loop, wait)  # (not a read: the body timeout counts from ``last``)
            asked = loop.time()
            if reads is not None and task is not None:
                message = await reads.receive(receive, task, loop, last)
            else:
                message = await receive()
            now = loop.time()
            slow = now - last > TRICKLE_GAP
            held = now - asked >= wait / 2
            last = now
        else:
            slow = False
        kind = message["type"]
        if kind == "http.disconnect":
            spool.close()
            return False
        body = message.get("body", b"")
        streak = streak + 1 if slow and len(body) <= TRICKLE_PIECE else 0
        await spool.write(body)
        if not message.get("more_body", False):
            return True
        message = None


async def _sleep(loop: asyncio.AbstractEventLoop, delay: float) -> None:
    """``asyncio.sleep(delay)`` on a loop already at hand: asyncio.sleep asks for the running loop,
    which on Python 3.11 is a ``getpid()`` system call (6 % of the front's CPU with 2,000 trickling
    uploaders, py-spy)."""
    future = loop.create_future()
    handle = loop.call_later(delay, _wake, future)
    try:
        await future
    finally:
        handle.cancel()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Recording:
    """Ends a request's record exactly once, however the request ends (the ASGI path
    and the fast path's hand-back share it): one that ends by an exception before any
    answer or reason is the client gone."""

    __slots__ = ("pool", "record")

    def __init__(self, pool: WSGIPool, record: Record) -> None:
        self.pool = pool
        self.record = record

    def __enter__(self) -> Record:
        return self.record

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        record = self.record
        if kind is not None and not record.status and not record.reason:
            record.reason = "client gone"
        self.pool._finish(record)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_unavailable(send: Send, exc: Unavailable, record: Record) -> None:
    """The 503 of a pool that cannot take the request, with its Retry-After."""
    await _send_plain(send, 503, f"Service Unavailable: {exc}", [(b"retry-after", str(exc.retry_after).encode())],
                      record=record)


async def _send_plain(send: Send, status: int, text: str, extra: Any = (), *, record: Record) -> None:
    """A reply of the front's own, recorded (status, reason, body bytes) for the access log and the metrics."""
    record.answered(status, text, len(text.encode()) + 1)
    await send_plain(send, status, text, extra)
