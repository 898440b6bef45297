"""What SIGTERM, SIGINT and SIGHUP do to a front, and what systemd hears of it.

uvicorn on its own waits ``timeout_graceful_shutdown`` for the requests in
flight, cancels them (a 500 and a traceback per request), and only then lets
the app's lifespan shutdown drain the pool for another graceful timeout: a
request that never ends kept the process up for twice the budget.  Here the
pool's drain starts on the signal itself, concurrently with uvicorn's; at the
budget the pool ends what still runs (each such request one 503 or cut
response and one log line), so uvicorn finds nothing left to cancel and the
process exits within ``--graceful-timeout`` and a moment.

``--shutdown-delay N`` puts N seconds before all that: health answers 503 (a
load balancer or Kubernetes stops routing here) while requests are still
served; a second Ctrl-C ends the delay at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any, Awaitable, Callable

from ..pool.app import WSGIPool
from ..pool.worker import State
from .sdnotify import Notifier

logger = logging.getLogger("a2wsgi_mp")

#: How often a reload's progress is checked (for systemd's READY=1 after RELOADING=1).
RELOAD_POLL = 0.1


class _StartupAbandoned(logging.Filter):
    """Drops uvicorn's "Application startup failed" while the front is stopping (see
    :meth:`Lifecycle.startup`: the pool's own line says why)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        super().__init__()
        self.lifecycle = lifecycle

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.lifecycle.exiting and record.getMessage().startswith("Application startup failed"))


class Lifecycle:
    """Signals of one front, for its uvicorn ``server`` and its ``pool``."""

    def __init__(self, server: Any, pool: WSGIPool, shutdown_delay: float = 0.0,
                 notifier: Notifier | None = None) -> None:
        self.server = server
        self.pool = pool
        self.shutdown_delay = shutdown_delay
        self.notifier = notifier or Notifier({})
        self.loop: asyncio.AbstractEventLoop | None = None
        self.exiting = False
        #: Where the server listens, for the start-up line.
        self.where = ""
        self._delay: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._reloading: asyncio.Task[None] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take SIGHUP on ``loop`` (SIGTERM and SIGINT come through :meth:`handle_exit`)."""
        self.loop = loop
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def install_exit_handlers(self) -> None:
        """Replace a plain uvicorn server's SIGTERM/SIGINT handlers with :meth:`handle_exit`
        (uvicorn restores its predecessors when it ends)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_exit)

    # ------------------------------------------------------------ start

    async def startup(self, startup: Callable[[], Awaitable[None]]) -> bool:
        """Run uvicorn's ``startup``; False if a SIGTERM or SIGINT came while the workers loaded
        the app (``systemctl stop`` during a slow start): the pool abandoned its start-up
        (:class:`~a2wsgi_mp.errors.BootInterrupted`), which is no failure -- uvicorn's "startup
        failed" line is not logged and its exit status 3 not given; the drain the signal began
        is waited for, and the server then ends as after any stop (exit 0)."""
        quiet = _StartupAbandoned(self)
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(quiet)
        try:
            await startup()
        except SystemExit:
            if not self.exiting:
                raise  # (the app did not load)
            await self.pool.shutdown()
            return False
        finally:
            uvicorn_log.removeFilter(quiet)
        return True

    def guard_startup(self, server: Any) -> None:
        """:meth:`startup` around a plain uvicorn ``server``'s (a ``--fronts`` front's)."""
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await self.startup(lambda: original(sockets=sockets))

        server.startup = startup

    def started(self) -> None:
        """The server listens and the pool is ready."""
        self.notifier.ready(self._serving())
        if self.notifier.watchdog and self.loop is not None:
            self._watchdog = self.loop.create_task(self.notifier.keep_watchdog())

    def _serving(self) -> str:
        ready = sum(w.state is State.READY for w in self.pool.dispatcher.workers.values())
        return f"serving {self.pool.app_ref} with {ready} worker(s)"

    # ------------------------------------------------------------ SIGHUP

    def reload(self) -> None:
        if self.exiting or (self._reloading is not None and not self._reloading.done()):
            if not self.exiting:  # a reload in progress: start another (newer code), as a single HUP does
                self.pool.dispatcher.background(self.pool.reload())
            return
        assert self.loop is not None
        self._reloading = self.loop.create_task(self._reload())

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            await self.pool.reload()
            # Complete once no live worker is older than the reload (a preloaded one: once the
            # fresh zygote imported the code, or failed to: then the old workers keep serving).
            supervisor = self.pool.dispatcher.supervisor
            while not self.exiting and (supervisor.reloading or any(
                    w.live and w.epoch < supervisor.epoch for w in supervisor.workers.values())):
                await asyncio.sleep(RELOAD_POLL)
        except Exception:  # never fatal: the old workers keep serving
            logger.exception("reload failed; the old workers keep serving")
        if not self.exiting:
            self.notifier.ready(self._serving())

    # ------------------------------------------------------------ SIGTERM / SIGINT

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A Python signal handler (main thread): start the shutdown on the loop."""
        if self.loop is None:  # not serving yet: uvicorn's own behaviour
            self.server.should_exit = True
            return
        self.loop.call_soon_threadsafe(self._on_exit, sig)

    def _on_exit(self, sig: int) -> None:
        if self.exiting:
            # A second Ctrl-C ends the delay, or forces the exit (uvicorn's).  A second SIGTERM
            # changes nothing: systemd's default KillMode sends one to every process, and the
            # --fronts master passes its own on to each front as well.
            if sig == signal.SIGINT:
                if self._delay is not None:
                    self._delay.cancel()
                    self._drain()
                else:
                    self.server.force_exit = True
            return
        self.exiting = True
        self.pool.draining = True  # health answers 503 from now on
        name = signal.Signals(sig).name
        if self.shutdown_delay > 0:
            self.notifier.stopping(f"{name}: health answers 503, serving {self.shutdown_delay:g} s more")
            logger.info("%s: health answers 503; requests are served %g s more before draining", name,
                        self.shutdown_delay)
            assert self.loop is not None
            self._delay = self.loop.call_later(self.shutdown_delay, self._drain)
        else:
            self.notifier.stopping(f"{name}: draining")
            self._drain()

    def _drain(self) -> None:
        self._delay = None
        self.notifier.status("draining")
        self.server.should_exit = True  # (not uvicorn's handle_exit: no signal raised again at the end)
        self.pool.begin_shutdown()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.notifier.close()
