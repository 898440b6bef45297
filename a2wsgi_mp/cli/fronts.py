"""``--fronts N``: several front processes on one listening socket.

Every request crosses a front, so one front caps the whole pool at about
``1 / (front CPU per request)`` requests a second whatever the number of
workers (see docs/performance.md).  With ``--fronts N`` the CLI binds the
socket once and hands it to uvicorn's own process manager
(:class:`uvicorn.supervisors.Multiprocess`, the one behind ``uvicorn
--workers``): N front processes accept on the shared socket, each with its own
pool of ``workers // N`` worker processes.  What that manager does is what
``uvicorn --workers`` users know:

* a front that dies (or stops answering its health check) is replaced;
* ``SIGTERM``/``SIGINT`` drain every front (each stops its pool gracefully).

The admin listener (``--admin-socket``, ``--admin-bind``) is this parent's:
each front serves its own figures on a private socket, and the parent answers
``/metrics`` and ``/status`` with their sum (:func:`a2wsgi_mp.pool.metrics.merge`),
so one scrape sees the whole server whichever front would have accepted it.

One thing differs: ``SIGHUP``.  uvicorn's manager would replace every front,
and a front that exits closes its idle keep-alive connections, so a client
that sent its next request just then loses it ("server disconnected").  The
app's code lives in the workers, not in the fronts, so the master here passes
the ``SIGHUP`` on to each front that is serving, and each front reloads its
own pool in place, exactly as a single front does: connections, listening
socket and fronts stay, the workers are replaced one by one.

The fronts are fresh interpreters (multiprocessing's spawn), so the app, the
pool options and the request-head limits travel as an import string and JSON
in an environment variable, read by :func:`front_app` and, for uvicorn's
``http`` protocol class, :func:`__getattr__` in each front.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from .. import proctitle
from ..headlimits.options import http_protocol
from ..pool.app import WSGIPool
from ..pool.processes import open_pidfd
from .sdnotify import Notifier

#: Environment variable carrying the app and pool options to the fronts.
ENV = "A2WSGI_MP_FRONT"
#: The settings that make a front's bounded HTTP protocol (a2wsgi_mp.headlimits).
HEAD_SETTINGS = ("http", "limit_request_line", "limit_request_fields", "limit_request_field_size",
                 "limit_request_head", "header_timeout", "limit_connections", "send_timeout")


def share(workers: int, fronts: int) -> int:
    """Worker processes per front: an even share of ``workers`` (at least one)."""
    return max(1, workers // fronts)


logger = logging.getLogger("a2wsgi_mp")


def front_app() -> WSGIPool:
    """uvicorn app factory run in each front process (on its running event loop, inside
    uvicorn's ``Server.serve``, whose SIGTERM handler is in place already)."""
    from .lifecycle import Lifecycle

    spec = json.loads(os.environ[ENV])
    options = spec["options"]
    if spec.get("admin_dir"):  # this front's figures, for the parent's admin listener to sum
        options["admin_socket"] = os.path.join(spec["admin_dir"], f"front-{os.getpid()}.sock")
    pool = WSGIPool(spec["app"], **options)
    pool.fronts = (spec["fronts"], "--fronts")
    proctitle.set_role("front", spec["app"])
    # uvicorn's server is the owner of the handler it installed: SIGTERM and SIGINT go through
    # the same Lifecycle as with one front (drain on the signal, --shutdown-delay) ...
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    lifecycle = Lifecycle(server, pool, spec["shutdown_delay"])
    if server is not None:
        lifecycle.install_exit_handlers()
        lifecycle.guard_startup(server)  # (a stop while the app loads is no failure)
    # ... and the master passes SIGHUP on (see the module's docstring): this front reloads its pool.
    loop = asyncio.get_running_loop()
    lifecycle.bind(loop)
    _follow_master(loop, spec["master"])
    return pool


def _follow_master(loop: asyncio.AbstractEventLoop, master: int) -> None:
    """Drain and exit, as on SIGTERM, when the master is gone (SIGKILLed, OOM-killed).

    uvicorn's fronts are plain children: nothing else ends them when the master dies, and
    an orphaned front would keep accepting on the shared socket with its pool for ever.
    A pidfd of the master turns readable when it exits; where pidfds are missing, the
    front is re-parented, which a once-a-second check of the parent pid sees.
    """
    def master_gone() -> None:
        logger.warning("front %d: the master (pid %d) is gone: draining", os.getpid(), master)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        fd = open_pidfd(master)
    except ProcessLookupError:
        master_gone()
        return
    if fd >= 0:
        def on_exit() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            master_gone()
        loop.add_reader(fd, on_exit)
        return

    def check() -> None:
        if os.getppid() != master:
            master_gone()
        else:
            loop.call_later(1.0, check)
    check()


def _supervisor_class() -> Any:
    """uvicorn's process manager, with SIGHUP passed on to the fronts instead of replacing them."""
    from uvicorn.supervisors import Multiprocess

    class Fronts(Multiprocess):
        notifier: Notifier

        def init_processes(self) -> None:
            super().init_processes()
            # READY=1 once every front serves (or one failed: uvicorn's loop then stops us; or a
            # SIGTERM/SIGINT came while they start -- uvicorn's loop handles it once we return).
            while not self.should_exit.is_set():
                if not all(p.process.is_alive() for p in self.processes) or _stop_pending(self):
                    return
                if all(_ready(p, 1) for p in self.processes):
                    self.notifier.ready(f"serving with {len(self.processes)} fronts")
                    return
                time.sleep(0.1)

        def handle_term(self) -> None:
            self.notifier.stopping("SIGTERM: draining every front")
            super().handle_term()

        def handle_int(self) -> None:
            self.notifier.stopping("SIGINT: draining every front")
            super().handle_int()

        def handle_hup(self) -> None:
            logger.info("SIGHUP: each front reloads its pool in place")
            self.notifier.reloading()
            for process in self.processes:
                if process.pid is not None and _ready(process, getattr(self.config, "timeout_worker_healthcheck", 5)):
                    os.kill(process.pid, signal.SIGHUP)
                else:  # its handler may not be in place yet; a starting front imports the new code anyway
                    logger.warning("front %s is still starting: not reloaded", process.pid)
            # (each front reloads on its own; systemd hears of the reload as passed on)
            self.notifier.ready(f"serving with {len(self.processes)} fronts")

    return Fronts


def _stop_pending(master: Any) -> bool:
    """A SIGTERM or SIGINT waits in uvicorn's queue (its handler only queues signals)."""
    return any(sig in (signal.SIGTERM, signal.SIGINT) for sig in getattr(master, "signal_queue", ()))


def _ready(process: Any, timeout: float) -> bool:
    """The front answers uvicorn's health check and has started."""
    return bool(process.is_ready(timeout=timeout))


def __getattr__(name: str) -> Any:
    """``a2wsgi_mp.cli.fronts:front_protocol``, the ``http`` uvicorn imports in each front:
    a class made at run time cannot be pickled to a spawned front, its recipe can."""
    if name == "front_protocol":
        return http_protocol(SimpleNamespace(**json.loads(os.environ[ENV])["head"]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ParentAdmin:
    """The admin listener of a ``--fronts N`` parent: a thread with its own loop
    answering from the sum of the fronts' snapshots (each front on a private
    socket in :attr:`directory`)."""

    def __init__(self, unix_path: str | None, bind: str | None) -> None:
        self.unix_path, self.bind = unix_path, bind
        self.directory = tempfile.mkdtemp(prefix="a2wsgi-mp-fronts-") if unix_path or bind else None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self.directory is None:
            return
        started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(started),), daemon=True,
                                        name="a2wsgi-mp admin")
        self._thread.start()
        started.wait(10)
        if self._error is not None:
            raise self._error

    async def _serve(self, started: threading.Event) -> None:
        from ..admin import AdminServer

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = AdminServer(self.snapshot)
        try:
            await server.start(self.unix_path, self.bind)
        except BaseException as exc:
            self._error = exc
            started.set()
            return
        started.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()

    async def snapshot(self) -> dict[str, Any]:
        from ..admin import fetch
        from ..pool.metrics import merge

        assert self.directory is not None
        paths = sorted(glob.glob(os.path.join(self.directory, "front-*.sock")))
        answers = await asyncio.gather(*(fetch(p, "/status", 5.0) for p in paths), return_exceptions=True)
        snaps = [json.loads(body) for a in answers if isinstance(a, tuple) for status, body in [a] if status == 200]
        if not snaps:
            raise OSError("no front answered")
        return merge(snaps)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def run_fronts(settings: Any, notifier: Notifier, announce: Callable[[Any], None],
               listen: Callable[[Any], socket.socket], where: Callable[[socket.socket], str],
               **uvicorn_options: Any) -> int:
    """Serve ``settings.app`` from ``settings.fronts`` front processes until told to stop;
    the exit status (0, or 3 when a front could not load the app)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from ..config import PoolConfig

    fronts = settings.fronts
    options = settings.pool_options()
    total = PoolConfig(**options)
    assert isinstance(total.workers, int)  # (PoolConfig resolves a (min, max) pair)
    options["workers"] = share(total.workers, fronts)
    if total.elastic:
        options["workers_min"] = share(total.workers_min, fronts)
        options["workers_max"] = share(total.workers_max, fronts)
    if options["workers"] * fronts != total.workers:
        logger.warning(
            "%d workers do not split evenly over %d fronts: running %d per front (%d in all)",
            total.workers, fronts, options["workers"], options["workers"] * fronts)
    head = {name: getattr(settings, name) for name in HEAD_SETTINGS}
    http_protocol(SimpleNamespace(**head))  # a bad value fails here, once, not in every front
    admin = ParentAdmin(options.pop("admin_socket", None), options.pop("admin_bind", None))
    os.environ[ENV] = json.dumps({"app": settings.app, "options": options, "fronts": fronts, "head": head,
                                  "admin_dir": admin.directory, "shutdown_delay": settings.shutdown_delay,
                                  "master": os.getpid()})
    uvicorn_options["http"] = f"{__name__}:front_protocol"
    config = uvicorn.Config("a2wsgi_mp.cli.fronts:front_app", factory=True, workers=fronts, **uvicorn_options)
    if settings.log_config is None:
        logger.setLevel(logging.getLogger("uvicorn.error").level)
    announce(SimpleNamespace(http=http_protocol(SimpleNamespace(**head)), loop=config.loop))
    sock = listen(config)
    logger.info("listening on %s with %d fronts (press CTRL+C to quit)", where(sock), fronts)
    admin.start()
    Fronts = _supervisor_class()
    Fronts.notifier = notifier
    try:
        supervisor = Fronts(config, sockets=[sock])
        supervisor.run()
    finally:
        sock.close()
        admin.stop()
    failed = any(getattr(p, "exitcode", None) == STARTUP_FAILURE for p in supervisor.processes)
    return 3 if failed else 0
