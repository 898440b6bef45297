"""The front's handle on the zygote: ask for workers, hear of their exits.

See :mod:`a2wsgi_mp.workers.zygote` for why workers are not forked from the
front.  An app given as an object can only reach the workers through fork, so
its zygote is forked from the front (once, at start-up, before the front has
threads or connections); an app given as an import string gets a zygote that
is a fresh interpreter, which never imports the app itself, so every worker
(and every reload) imports it anew -- unless ``preload`` is set: then that
fresh zygote imports the app once, freezes its heap and forks the workers
from it, and a reload is a new zygote (see :meth:`~a2wsgi_mp.pool.supervisor.Supervisor.reload`).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import os
import signal
import socket
import sys
import traceback
from typing import Any, Callable

from ..config import START_METHODS
from ..ipc import protocol
from ..ipc.pipe import FrontPipe, pair
from ..loader import AppRef
from ..workers.zygote import run_zygote
from .processes import open_pidfd

logger = logging.getLogger("a2wsgi_mp.pool")

#: Zygote generations, unique in the front even across handles (a preloaded
#: reload starts a second zygote while the first one's workers still serve).
_generations = itertools.count(1)


class PreloadFailed(Exception):
    """The zygote could not import the app; the message carries its error."""


class ZygoteLost(RuntimeError):
    """The zygote is not running (it died, or is being restarted): not an app failure."""


class Zygote:
    """The front's handle on the zygote process: asks it for workers, hears of their exits."""

    def __init__(
        self,
        app_ref: AppRef,
        start_method: str,
        on_exited: Callable[[int, int], None],
        on_lost: Callable[[], None],
        preload: bool = False,
        boot_timeout: float = 60.0,
        worker_options: dict[str, Any] | None = None,
    ) -> None:
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, not {start_method!r}")
        self.app_ref = app_ref
        self.start_method = start_method
        self.on_exited = on_exited
        self.on_lost = on_lost
        self.preload = preload and isinstance(app_ref, str)
        self.boot_timeout = boot_timeout
        #: Settings every worker gets (JSON-able; see ``workers.process.run_worker``).
        self.worker_options = worker_options or {}
        self._preloaded: asyncio.Future[int] | None = None
        self.pid: int | None = None
        #: Counts zygotes started: tells which one started (and reports on) a worker.
        self.generation = 0
        self._pipe: FrontPipe | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._stopping = False
        self._running: asyncio.Event | None = None
        #: A pidfd of the front, inherited by the zygote and its workers: what they watch.
        self._front_fd = -1

    async def start(self) -> None:
        """Start the zygote (again, after it died)."""
        if self.pid is not None:  # a previous zygote: make sure it is gone and reaped
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap_zygote(block=True)
        self._pending.clear()
        if self._running is None:
            self._running = asyncio.Event()
        if self._front_fd < 0:
            self._front_fd = open_pidfd(os.getpid())
        front, zygote = pair()
        parent = os.getpid()
        self.worker_options["front_pid"] = parent
        if isinstance(self.app_ref, str):
            zygote.set_inheritable(True)
            if self._front_fd >= 0:
                os.set_inheritable(self._front_fd, True)
            argv = [
                sys.executable,
                "-c",
                "import sys; from a2wsgi_mp.workers.zygote import main; main(sys.argv[1:])",
                self.app_ref,
                self.start_method,
                str(parent),
                str(zygote.fileno()),
                str(self._front_fd),
                json.dumps(self.worker_options),
                "preload" if self.preload else "",
            ]
            self.pid = os.posix_spawn(sys.executable, argv, os.environ)
            if self._front_fd >= 0:
                os.set_inheritable(self._front_fd, False)
        else:
            self.pid = _fork_zygote(zygote, self.app_ref, self.start_method, parent, self._front_fd,
                                    self.worker_options)
        zygote.close()
        self._stopping = False
        self.generation = next(_generations)
        self._preloaded = asyncio.get_running_loop().create_future() if self.preload else None
        self._pipe = await FrontPipe.open(front, self._on_event, self._on_lost)
        if self._preloaded is not None:
            await self._await_preload()
        self._running.set()

    async def _await_preload(self) -> None:
        """Wait for the zygote to import the app; PreloadFailed (zygote gone) if it cannot."""
        assert self._preloaded is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._preloaded), self.boot_timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise PreloadFailed(f"the zygote did not import {self.app_ref} within {self.boot_timeout} s") from None
        except PreloadFailed:
            await self.stop()
            raise

    @property
    def running(self) -> bool:
        return self._pipe is not None and not self._pipe.closed

    async def wait_running(self) -> None:
        """Return once a zygote is running (at once, usually)."""
        while not self.running and not self._stopping:
            assert self._running is not None
            self._running.clear()
            await self._running.wait()

    async def spawn(self, worker_id: int, socks: list[socket.socket]) -> int:
        """Start a worker serving ``socks`` (which are closed here); its pid.

        ZygoteLost if the zygote dies first: the worker may or may not have been
        forked (its READY, or the EOF of its connections, tells)."""
        if self._pipe is None or self._pipe.closed:
            for s in socks:
                s.close()
            raise ZygoteLost("the zygote is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[worker_id] = future
        try:
            self._pipe.send_with_fds(protocol.encode_spawn(worker_id, len(socks)), [s.fileno() for s in socks])
        finally:
            for s in socks:
                s.close()
        return await future

    def _on_event(self, event: protocol.Event) -> None:
        if isinstance(event, (protocol.Ready, protocol.BootError)):  # the preload's outcome
            if self._preloaded is not None and not self._preloaded.done():
                if isinstance(event, protocol.Ready):
                    self._preloaded.set_result(event.pid)
                else:
                    self._preloaded.set_exception(PreloadFailed(event.message))
        elif isinstance(event, protocol.Spawned):
            future = self._pending.pop(event.worker_id, None)
            if future is not None and not future.done():
                future.set_result(event.pid)
        elif isinstance(event, protocol.Exited):
            self.on_exited(event.pid, event.status)

    def _on_lost(self, exc: Exception | None) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ZygoteLost("the zygote exited"))
        self._pending.clear()
        if self._preloaded is not None and not self._preloaded.done():
            self._preloaded.set_exception(PreloadFailed(f"the zygote exited while importing {self.app_ref}"))
            self._stopping = True  # start() reports it; not a loss of a running zygote
        self._reap_zygote(block=False)
        if self._running is not None:
            self._running.clear()
        if not self._stopping:
            logger.error("the zygote process exited unexpectedly (%s)", exc or "EOF")
            self.on_lost()

    def _reap_zygote(self, block: bool) -> bool:
        if self.pid is None:
            return True
        try:
            pid, _ = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        if pid:
            self.pid = None
        return pid != 0

    async def stop(self) -> None:
        """Hang up on the zygote and reap it (the supervisor ends the workers)."""
        self._stopping = True
        if self._running is not None:
            self._running.set()  # wake wait_running()
        for future in self._pending.values():  # (closing the pipe ourselves reports no loss)
            if not future.done():
                future.set_exception(ZygoteLost("the zygote was stopped"))
        self._pending.clear()
        if self._preloaded is not None and not self._preloaded.done():  # (start() gives up at once)
            self._preloaded.set_exception(PreloadFailed(f"the zygote was stopped while importing {self.app_ref}"))
        if self._pipe is not None:
            self._pipe.close()
        for _ in range(200):
            if self._reap_zygote(block=False):
                return
            await asyncio.sleep(0.01)
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            self._reap_zygote(block=True)
        if self._front_fd >= 0:
            os.close(self._front_fd)
            self._front_fd = -1


def _fork_zygote(sock: socket.socket, app: AppRef, start_method: str, parent: int, front_fd: int,
                 options: dict[str, Any]) -> int:
    keep = {sock.fileno(), front_fd}
    pid = os.fork()
    if pid:
        return pid
    # Child.  We never return into the front's event loop: drop its signal
    # wake-up fd and every inherited descriptor (listening and client sockets
    # included), and freeze the inherited heap so no stray finalizer closes a
    # descriptor number that has since been reused.
    try:
        signal.set_wakeup_fd(-1)
        gc.freeze()
        _neutralize_fds(keep)
        run_zygote(sock, app, start_method, parent, front_fd, options=options)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(1)


def _neutralize_fds(keep: set[int]) -> None:
    """Point every inherited descriptor but those in ``keep`` (and stdio) at /dev/null.

    Not closed: C libraries of the front keep their descriptor numbers, and
    libuv (uvloop) closes and reopens its signal pipe in every forked child.
    Had those numbers been freed and reused for our sockets, that would close
    our sockets.  Occupied by /dev/null, the numbers stay harmless.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        low = 3
        for fd in sorted(k for k in keep if k >= 3):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, _max_fd())
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        if fd > 2 and fd != null and fd not in keep:
            try:
                os.dup2(null, fd, inheritable=False)
            except OSError:
                pass


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536
