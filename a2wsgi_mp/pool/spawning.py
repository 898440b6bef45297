"""Starting worker processes: the supervisor's side of the zygote.

Every worker is forked by the zygote (:mod:`a2wsgi_mp.pool.launcher`); the front
opens the worker's connections ("slots") first and hands their other ends over
with the SPAWN.  A zygote that dies is restarted: its workers live on (they
watch the front, not the zygote), only their exit reports are lost, and the
:class:`~a2wsgi_mp.pool.processes.ProcessTable` follows them by pidfd meanwhile.
:class:`Spawning` is the part of :class:`~a2wsgi_mp.pool.supervisor.Supervisor`
that does this.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any

from ..config import PoolConfig
from ..ipc import protocol, shm
from ..ipc.pipe import FrontPipe, pair
from ..loader import AppRef
from .handles import Slot, Worker, describe_status
from .launcher import Launcher, ZygoteLost
from .processes import ProcessTable

logger = logging.getLogger("a2wsgi_mp.pool")


class Spawning:
    """Workers from the zygote, and the zygote kept running (a base of ``Supervisor``)."""

    app_ref: AppRef
    config: PoolConfig
    workers: dict[int, Worker]
    stopping: bool
    _next_wid: int
    _launcher: Launcher | None
    _procs: ProcessTable[Worker]

    if TYPE_CHECKING:  # provided by the Supervisor
        def background(self, coro: Any) -> None: ...
        def _on_event(self, slot: Slot, event: protocol.Event) -> None: ...
        def _on_dead(self, worker: Worker, reason: str) -> None: ...

    def new_launcher(self) -> Launcher:
        """A launcher for this pool's zygote (not started)."""
        launcher = Launcher(self.app_ref, self.config.start_method, self._on_exited, lambda: None,
                            self.config.preload, self.config.boot_timeout)
        launcher.on_lost = lambda: self._on_launcher_lost(launcher)
        return launcher

    def _spawn(self, replaces: Worker | None = None) -> Worker:
        self._next_wid += 1
        cfg = self.config
        limit = cfg.max_requests + (random.randint(0, cfg.max_requests_jitter) if cfg.max_requests else 0)
        worker = Worker(self._next_wid, cfg.threads, limit)
        worker.replaces = replaces
        if replaces is not None:
            replaces.replaced_by = worker
        self.workers[worker.id] = worker
        self.background(self._boot(worker))
        return worker

    async def _boot(self, worker: Worker) -> None:
        assert self._launcher is not None
        launcher = self._launcher  # (a preloaded reload may replace self._launcher meanwhile)
        socks = []
        try:
            for slot in worker.slots:
                front, back = pair()
                socks.append(back)
                slot.pipe = await FrontPipe.open(
                    front,
                    lambda event, slot=slot: self._on_event(slot, event),
                    lambda exc, worker=worker: self._on_dead(worker, "its connection closed"),
                    shm.DEFAULT_SIZE if self.config.ipc == "shm" else 0,
                )
            await launcher.wait_running()
            worker.zygote = launcher.generation  # (a restarted zygote has a new one)
            pid = await launcher.spawn(worker.id, socks)
            if worker.pid is None:
                worker.pid = pid
                self._procs.add(pid, worker, worker.zygote)
        except ZygoteLost as exc:
            # Not an app failure.  If the zygote forked the worker before it
            # died, the worker's READY names it; if not, its connections close
            # and _on_dead starts another (see there).
            logger.info("worker %d: %s", worker.id, exc)
        except Exception as exc:
            for s in socks:
                s.close()
            logger.error("could not start a worker: %s", exc)
            worker.state = "boot-failed"  # (back off: this may well persist)
            self._on_dead(worker, f"start failed: {exc}")

    def _zygote_alive(self, generation: int) -> bool:
        launcher = self._launcher
        return launcher is not None and launcher.running and launcher.generation == generation

    def _on_exited(self, pid: int, status: int) -> None:
        self._procs.gone(pid, status)

    def _on_launcher_lost(self, launcher: Launcher) -> None:
        # The workers live on (they watch the front, not the zygote) and keep
        # serving; only their exit statuses are lost.  Those that exited while
        # it was dying, and those we cannot follow without it, are settled now.
        self._procs.reporter_lost()
        if launcher is not self._launcher:  # a zygote replaced by a reload: nothing to restart
            return
        self.background(self._restart_launcher())

    async def _restart_launcher(self) -> None:
        launcher = self._launcher
        assert launcher is not None
        while not self.stopping:
            try:
                await launcher.start()
                break
            except Exception as exc:
                logger.error("could not restart the zygote: %s", exc)
                await asyncio.sleep(1.0)

    def _signal(self, worker: Worker, sig: int) -> None:
        if worker.pid is not None:
            self._procs.signal(worker.pid, worker, sig)

    def _on_process_gone(self, worker: Worker, status: int | None) -> None:
        how = describe_status(status) if status is not None else "exited, status unknown"
        if worker.state == "dead":  # its connection told us first; now we know how
            if not self.stopping and status:
                logger.warning("worker %s exit status: %s", worker.pid, how)
        else:
            self._on_dead(worker, how)
