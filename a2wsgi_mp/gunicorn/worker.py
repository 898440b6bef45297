"""``gunicorn -k a2wsgi_mp.gunicorn.PoolWorker``: gunicorn's arbiter in front
of a2wsgi_mp.

Process topology::

    gunicorn arbiter                      (binds the sockets, supervises, HUP/TTIN/...)
     └─ PoolWorker        x --workers     (uvicorn front on the arbiter's sockets)
         └─ zygote                        (a2wsgi_mp.workers.zygote)
             └─ pool process x --threads  (runs the WSGI app, one request at a time)

Each gunicorn worker is an event loop (uvloop and httptools when installed)
serving HTTP with uvicorn's ``Server`` on ``self.sockets``, and owns a
:class:`~a2wsgi_mp.pool.app.WSGIPool` of ``--threads`` processes.  gunicorn's
settings are mapped in :mod:`a2wsgi_mp.gunicorn.config` (through
:meth:`PoolWorker.pool_options` and :meth:`PoolWorker.uvicorn_options`);
docs/gunicorn.md has the table.  The per-request layers (request limits,
``secure_scheme_headers``, ``pre_request``/``post_request``) are in
:mod:`a2wsgi_mp.gunicorn.hooks`.

Signals (the loop's own handlers once it runs; gunicorn's before):

* TERM: graceful; stop accepting, finish in-flight requests within
  ``graceful_timeout``, stop the pool, exit 0.
* QUIT, INT: quick; call ``worker_int``, cut in-flight requests, exit 0.
* ABRT (the arbiter's "heartbeat missed"): call ``worker_abort``, SIGKILL the
  pool, exit 1 (a Python-level handler, so it also interrupts a loop stuck in
  Python code, and no core dump).
* USR1: reopen log files.  WINCH: ignored.  HUP: reload the pool's processes
  (fresh imports of the app) without restarting this worker.

The heartbeat (``self.notify()``) comes from a loop task ticking at least
every ``self.timeout / 2`` seconds (``self.timeout`` is half of ``--timeout``),
from before the pool boots until the pool has stopped, so neither a slow app
import nor a long drain makes the arbiter murder the worker; the same tick
ends the worker when ``self.alive`` goes false or the arbiter is gone
(``ppid`` changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Any

import psutil
from gunicorn.workers.base import Worker
from uvicorn.config import Config as UvicornConfig

from .. import proctitle, topology
from ..errors import BootFailed
from ..pool.app import WSGIPool
from ..types import ASGIApp
from . import config as gunicorn_config
from .config import customised as _customised
from .config import request_limits
from .hooks import GunicornFront, GunicornRequest, GunicornResponse, HookMiddleware
from .server import DrainingServer

__all__ = [
    "WORKER_BOOT_ERROR",
    "GunicornFront",
    "GunicornRequest",
    "GunicornResponse",
    "HookMiddleware",
    "PoolH11Worker",
    "PoolWorker",
    "request_limits",
]

#: gunicorn's ``Arbiter.WORKER_BOOT_ERROR``: the arbiter halts instead of respawning.
WORKER_BOOT_ERROR = 3


# ---------------------------------------------------------------- the worker


class PoolWorker(Worker):
    """A gunicorn worker serving the WSGI app through an a2wsgi_mp process pool.

    ``--threads`` is the number of pool processes per gunicorn worker (each
    runs one request at a time): ``gunicorn -w 2 --threads 4`` makes 2 fronts
    and 8 app processes.
    """

    #: uvicorn ``Config`` overrides; see :class:`PoolH11Worker`.
    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto"}
    #: Extra :class:`~a2wsgi_mp.config.PoolConfig` options (``max_rss``,
    #: ``spool_threshold``, ``max_body_size``, ...): set them in a subclass.
    POOL_OPTIONS: dict[str, Any] = {}
    #: Seconds a client has to send a request head (408 after; gunicorn has no
    #: such setting): set it in a subclass, 0 = off.
    HEADER_TIMEOUT = gunicorn_config.HEADER_TIMEOUT
    #: Seconds of the graceful budget kept for stopping the pool after the drain.
    POOL_STOP_RESERVE = 1.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wsgi: Any = None
        self.pool: WSGIPool | None = None
        self.server: DrainingServer | None = None
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_deadline: float | None = None
        self._quick = False
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------ settings

    def app_uri(self) -> str | None:
        return getattr(self.app, "app_uri", None) or getattr(self.cfg, "wsgi_app", None)

    def pool_options(self, app_ref: Any) -> dict[str, Any]:
        """See :func:`~a2wsgi_mp.gunicorn.config.pool_options`."""
        return gunicorn_config.pool_options(self.cfg, app_ref, self.POOL_OPTIONS)

    def uvicorn_options(self) -> dict[str, Any]:
        """See :func:`~a2wsgi_mp.gunicorn.config.uvicorn_options`."""
        return gunicorn_config.uvicorn_options(self.cfg, self.CONFIG_KWARGS, self.HEADER_TIMEOUT)

    # ------------------------------------------------------------ boot

    def init_process(self) -> None:
        self._setup_logging()
        # Our zygote and pool processes named as gunicorn names its own: "gunicorn: pool worker 3 [app]".
        os.environ[proctitle.PREFIX_ENV] = "gunicorn: pool "
        if self.cfg.pythonpath:
            # Spawned pool processes import the app afresh: give them the
            # arbiter's --pythonpath too.
            extra = [p.strip() for p in self.cfg.pythonpath.split(",") if p.strip()]
            old = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = os.pathsep.join(extra + ([old] if old else []))
        if self.cfg.reload:
            self.log.warning("PoolWorker: --reload watches the front only, not the pool's app code; "
                             "send SIGHUP to the arbiter (or to a worker) to reload the app")
        super().init_process()  # calls load_wsgi(), post_worker_init, then run()

    def _setup_logging(self) -> None:
        for name, source in (("uvicorn.error", self.log.error_log), ("uvicorn.access", self.log.access_log),
                             ("a2wsgi_mp", self.log.error_log), ("a2wsgi_mp.access", self.log.access_log)):
            target = logging.getLogger(name)
            target.handlers = source.handlers
            target.setLevel(source.level)
            target.propagate = False

    def load_wsgi(self) -> None:
        """Build the pool (started later, in the loop).  Without ``preload_app``
        the front never imports the app: each pool process imports the app
        URI.  With it, the pool preloads: its zygote (never this front) imports
        the URI once and the pool processes fork from it, and a pool reload
        preloads the new code in a fresh zygote.  An app given only as an
        object (no URI) reaches the pool through a zygote forked from here."""
        uri = self.app_uri()
        if not uri:
            super().load_wsgi()  # returns the arbiter's object
            ref: Any = self.wsgi
        else:
            ref = uri
        options = self.pool_options(ref)
        if uri and self.cfg.preload_app and options.get("start_method", "fork") == "fork":
            options.setdefault("preload", True)
        self.pool = WSGIPool(ref, **options)
        self.pool.fronts = (int(self.cfg.workers or 1), "gunicorn -w")
        self.config = UvicornConfig(app=self._asgi_app(self.pool), **self.uvicorn_options())
        if self.age <= 1:
            self.log.info("PoolWorker: %s; %s", topology.server_stack(self.config),
                          gunicorn_config.layout_note(self.cfg))
            unhooked = topology.fast_path_unhooked(self.config, self.pool.config.fast_path)
            if unhooked:
                self.log.warning(unhooked)

    def _asgi_app(self, pool: WSGIPool) -> ASGIApp:
        cfg = self.cfg
        app: ASGIApp = pool
        pre = _customised(cfg, "pre_request") or getattr(self.log, "loglevel", logging.INFO) <= logging.DEBUG
        post = _customised(cfg, "post_request")
        if pre or post:
            app = HookMiddleware(app, self, pre, post)
        return GunicornFront(app, cfg)

    # ------------------------------------------------------------ signals

    def init_signals(self) -> None:
        super().init_signals()
        # HUP would otherwise kill the worker (SIG_DFL) and drop its requests.
        signal.signal(signal.SIGHUP, self.handle_hup)

    def _install_loop_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGQUIT, self._on_quit, signal.SIGQUIT)
        loop.add_signal_handler(signal.SIGINT, self._on_quit, signal.SIGINT)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        loop.add_signal_handler(signal.SIGWINCH, self.log.debug, "worker: SIGWINCH ignored.")
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        # SIGABRT stays a Python-level handler (handle_abort): the arbiter sends
        # it when the heartbeat stopped, i.e. when the loop may not be turning.

    def _restore_signals(self) -> None:
        # The closed loop left SIG_DFL behind; keep gunicorn's handlers until exit.
        for sig, handler in ((signal.SIGTERM, self.handle_exit), (signal.SIGQUIT, self.handle_quit),
                             (signal.SIGINT, self.handle_quit), (signal.SIGUSR1, self.handle_usr1),
                             (signal.SIGWINCH, self.handle_winch), (signal.SIGHUP, self.handle_hup)):
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):
                pass

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False  # before the loop runs, or after it: run() checks it

    def handle_hup(self, sig: int, frame: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._on_hup)

    def handle_abort(self, sig: int, frame: Any) -> None:
        self.alive = False
        try:
            self.cfg.worker_abort(self)
        finally:
            self._kill_pool()
            sys.exit(1)

    def _on_term(self) -> None:
        self.begin_stop(quick=False)

    def _on_quit(self, sig: int) -> None:
        if not self._quick:
            self.cfg.worker_int(self)
        self.begin_stop(quick=True)

    def _on_hup(self) -> None:
        if self.pool is not None and self.alive and self._loop is not None:
            self.log.info("PoolWorker %s: SIGHUP, reloading the pool's processes", self.pid)
            self.pool.dispatcher.background(self.pool.reload())

    def begin_stop(self, quick: bool) -> None:
        """Stop accepting and wind down: ``quick`` cuts in-flight requests."""
        self.alive = False
        now = time.monotonic()
        if self._stop_deadline is None:
            self._stop_deadline = now + float(self.cfg.graceful_timeout or 0)
        if quick:
            self._quick = True
            self._stop_deadline = now
        server = self.server
        if server is not None:
            # (uvicorn annotates it int; it takes seconds as a float)
            server.config.timeout_graceful_shutdown = max(  # type: ignore[assignment]
                0.0, self._stop_deadline - now - self.POOL_STOP_RESERVE)
            server.should_exit = True
            if quick:
                server.force_exit = True
        if self._stopped is not None:
            self._stopped.set()

    def _kill_pool(self) -> None:
        """SIGKILL every descendant (zygote and pool processes) at once."""
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass

    # ------------------------------------------------------------ main loop

    def heartbeat_interval(self) -> float:
        return min(1.0, max(0.05, self.timeout / 2)) if self.timeout else 1.0

    async def heartbeat(self) -> None:
        """``notify()`` on every tick, for the whole life of the loop; end the
        worker when it is told to (``alive``) or orphaned (``ppid``)."""
        interval = self.heartbeat_interval()
        while True:
            self.notify()
            if self._stop_deadline is None:
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    self.begin_stop(quick=False)
                elif not self.alive:
                    self.begin_stop(quick=False)
            await asyncio.sleep(interval)

    def run(self) -> None:
        loop_factory = self.config.get_loop_factory()
        try:
            if sys.version_info >= (3, 11):
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    runner.run(self._main())
            else:  # pragma: no cover - Python 3.10
                loop = loop_factory() if loop_factory else asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                try:
                    loop.run_until_complete(self._main())
                finally:
                    loop.close()
        finally:
            self._restore_signals()
        if self.exit_code:
            sys.exit(self.exit_code)

    async def _main(self) -> None:
        assert self.pool is not None
        loop = self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._install_loop_signals(loop)
        beat = loop.create_task(self.heartbeat())
        try:
            if await self._start_pool() and self.alive:
                self.server = DrainingServer(self.config)
                self.server.drain_pause = min(self.server.drain_pause, float(self.cfg.graceful_timeout or 0))
                if not self.alive:  # a TERM came during the pool's boot
                    self.begin_stop(self._quick)
                # The plain sockets, not gunicorn's wrappers: uvloop detaches a
                # socket.socket it took over, but close()s anything else after
                # libuv already closed the descriptor (EBADF noise in the log).
                await self.server.serve(sockets=[getattr(s, "sock", s) for s in self.sockets])
                if not self.server.started and not self._stop_requested():
                    self.log.error("PoolWorker %s: the server did not start", self.pid)
                    self.exit_code = WORKER_BOOT_ERROR
        finally:
            try:
                await self._stop_pool()
            finally:
                beat.cancel()

    def _stop_requested(self) -> bool:
        return self._stop_deadline is not None

    async def _start_pool(self) -> bool:
        assert self.pool is not None and self._stopped is not None
        start = asyncio.ensure_future(self.pool.startup())
        stop = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not start.done():  # told to stop while the pool boots
            start.cancel()
            with contextlib.suppress(BaseException):
                await start
            return False
        exc = start.exception()
        if exc is None:
            return True
        if isinstance(exc, BootFailed):
            self.log.error("PoolWorker %s: the WSGI app failed to load (exit %d, the arbiter halts):\n%s",
                           self.pid, WORKER_BOOT_ERROR, exc)
        else:
            self.log.error("PoolWorker %s: the pool failed to start (exit %d): %r",
                           self.pid, WORKER_BOOT_ERROR, exc, exc_info=exc)
        self.exit_code = WORKER_BOOT_ERROR
        return False

    async def _stop_pool(self) -> None:
        assert self.pool is not None
        now = time.monotonic()
        deadline = self._stop_deadline if self._stop_deadline is not None else now
        grace = 0.0 if self._quick else max(0.0, deadline - now - 1.0)
        try:
            await self.pool.shutdown(grace)
        except Exception:
            self.log.exception("PoolWorker %s: error while stopping the pool", self.pid)
            self._kill_pool()


class PoolH11Worker(PoolWorker):
    """:class:`PoolWorker` on the pure-Python h11 parser (the same limits,
    enforced while reading, as with httptools)."""

    CONFIG_KWARGS = {"loop": "auto", "http": "h11"}

