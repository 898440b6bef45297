"""Keep the pool's worker processes whole.

The supervisor owns every worker process and its connections ("slots", one
per worker thread).  A worker that dies is replaced at once (with back-off when
it cannot even load the app); one that hangs past the deadline is killed; one
that served enough requests, grew too large or lived too long is retired
between requests.  It tells the dispatcher (:class:`~a2wsgi_mp.pool.dispatch.Pool`)
only two things: this slot can take a request, this slot is gone.

Workers from the zygote: :mod:`.spawning`; which retires when: :mod:`.recycling`;
sizing: :mod:`.elastic`; a preloaded reload's fresh zygote: :mod:`.preload`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, Callable

from ..config import PoolConfig
from ..ipc import protocol
from ..ipc.pipe import FileHandoff
from ..loader import AppRef, describe
from . import elastic, preload, recycling
from .exchange import Lost
from .handles import Slot, Worker
from .launcher import Launcher, PreloadFailed
from .processes import ProcessTable
from .spawning import Spawning

logger = logging.getLogger("a2wsgi_mp.pool")
app_logger = logging.getLogger("a2wsgi_mp.wsgi")

#: Seconds between SIGTERM (which a worker honours after its current request)
#: and SIGKILL, for a worker that must go.
KILL_GRACE = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0


class BootFailed(Exception):
    """No worker could load the app; the message carries the worker's error."""


class Supervisor(Spawning):
    def __init__(
        self,
        app_ref: AppRef,
        config: PoolConfig,
        counters: dict[str, int],
        offer: Callable[[Slot], None],
        withdraw: Callable[[Slot], None],
        on_hopeless: Callable[[], None],
    ) -> None:
        self.app_ref = app_ref
        self.config = config
        self.counters = counters
        self._offer = offer
        self._withdraw = withdraw
        self._on_hopeless = on_hopeless
        self.workers: dict[int, Worker] = {}
        #: Workers whose process is not known to have exited (by its zygote's
        #: report or its pidfd): the only ones it makes sense to signal.
        self._procs: ProcessTable[Worker] = ProcessTable(self._on_process_gone, self._zygote_alive)
        self._next_wid = 0
        self._launcher: Launcher | None = None
        #: A preloaded reload is importing the new code (see :mod:`.preload`).
        self.reloading = False
        self.boot_failures = 0
        self._last_boot_error = ""
        self._ever_ready = False
        self._started = False  # True once start() returned: later workers are replacements
        self.stopping = False
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the workers; return when all are ready, raise BootFailed if none can be."""
        began = time.monotonic()
        self._launcher = self.new_launcher()
        try:
            await self._launcher.start()
        except PreloadFailed as exc:
            raise BootFailed(f"could not preload {describe(self.app_ref)}:\n{exc}") from None
        for _ in range(self.config.workers):
            self._spawn()
        deadline = time.monotonic() + self.config.boot_timeout
        while len(self.workers) < self.config.workers or any(w.state != "ready" for w in self.workers.values()):
            if self.boot_failures and not self._ever_ready:
                raise BootFailed(self._last_boot_error or "the worker exited while loading the app")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BootFailed(f"workers did not load {describe(self.app_ref)} within {self.config.boot_timeout} s")
            await self.wait_change(remaining)
        self._started = True
        if self.config.max_rss or self.config.max_lifetime:
            self.background(recycling.watch_resources(self))
        if self.config.elastic:
            self.background(elastic.watch_idle(self))
        logger.info("pool ready in %.1f s: %d worker(s) x %d thread(s) serving %s (zygote %s, %s%s)%s",
                    time.monotonic() - began, len(self.workers), self.config.threads, describe(self.app_ref),
                    self._launcher.pid, self.config.start_method, ", preloaded" if self.config.preload else "",
                    f" (elastic: {self.config.workers_min} to {self.config.workers_max} workers)"
                    if self.config.elastic else "")

    async def stop(self, timeout: float) -> None:
        """Let in-flight requests finish within ``timeout``, then end every process."""
        self.stopping = True
        busy = sum(w.busy for w in self.workers.values())
        logger.info("draining: %d worker(s), %d request(s) in flight, up to %.0f s", len(self.workers), busy, timeout)
        deadline = time.monotonic() + timeout
        while any(w.busy for w in self.workers.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("graceful timeout: killing %d busy workers",
                               sum(1 for w in self.workers.values() if w.busy))
                break
            await self.wait_change(remaining)
        for worker in list(self.workers.values()):
            self._hang_up(worker)
        # Idle workers exit on EOF; give them a moment to be reaped, then kill
        # the stragglers and let the zygote go.
        deadline = time.monotonic() + 1.0
        while self._procs and time.monotonic() < deadline:
            await self.wait_change(deadline - time.monotonic())
        for worker in self._procs.owners():
            self._signal(worker, signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        if self._launcher is not None:
            await self._launcher.stop()
        self._procs.forget_all()
        c = self.counters
        logger.info("pool stopped: %d requests served; 502: %d, 503: %d, 504: %d; recycled %d, respawned %d, "
                    "killed %d", c["served"], c["502"], c["503"], c["504"], c["recycled"], c["respawned"], c["killed"])

    async def reload(self) -> None:
        """A fresh worker (re-importing the app) for every worker; each old one
        retires only once its replacement is ready, so no request is dropped.
        Preloaded, a fresh zygote imports the new code first (see :mod:`.preload`)."""
        if self.stopping:  # a SIGHUP while draining starts nothing
            return
        if self.config.preload and self._launcher is not None:
            fresh = await preload.fresh_zygote(self)
            if fresh is None:
                return
            old, self._launcher = self._launcher, fresh
            # The old workers outlive their zygote (they watch the front) and
            # retire as their replacements come up; the front follows them by pidfd.
            await old.stop()
            self._procs.reporter_lost()
        for worker in list(self.workers.values()):
            target = worker.replaces
            if worker.state == "booting" and target is not None:
                # A replacement from an earlier reload may hold older code: the
                # worker it was to replace gets a fresh one below instead.
                self._retire(worker, "superseded by a newer reload", replace=False, count=False)
                if target.state == "dead" and target.replaced_by is worker:
                    self._spawn()  # it stood in for a worker that died meanwhile
        old = [w for w in self.workers.values() if w.state in ("booting", "ready")]
        logger.info("reload: starting %d fresh worker(s); each old one retires once its replacement is ready",
                    len(old))
        for worker in old:
            self._spawn(replaces=worker)

    # ------------------------------------------------------------ what the dispatcher asks

    @property
    def started(self) -> bool:
        return self._started

    def queued(self, depth: int) -> None:
        """``depth`` requests wait for a worker: an elastic pool grows."""
        if self.config.elastic:
            elastic.grow(self, depth)

    def spawn(self) -> Worker:
        """One more worker (the elastic pool growing)."""
        return self._spawn()

    def recycle(self, worker: Worker, reason: str) -> None:
        """Retire ``worker`` between requests; its replacement starts now."""
        self._retire(worker, reason)

    def retire(self, worker: Worker, reason: str) -> None:
        """Retire ``worker`` between requests, without a replacement (the pool shrinking)."""
        self._retire(worker, reason, replace=False, count=False)

    @property
    def hopeless(self) -> bool:
        """No worker serves and the last ones could not load the app."""
        return bool(self.boot_failures) and not any(w.serving for w in self.workers.values())

    def retry_after(self) -> int:
        """Seconds until the next boot attempt, rounded up: for Retry-After."""
        return int(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, self.boot_failures - 1)) + 0.999)

    def released(self, slot: Slot) -> bool:
        """A request on ``slot`` ended; True if the slot takes the next one."""
        worker = slot.worker
        worker.requests += 1
        worker.idle_since = time.monotonic()
        if worker.state == "ready":
            recycling.after_request(self, worker)
        if worker.state == "retiring" and not worker.busy:
            self._hang_up(worker)
        self.notify()
        return worker.state == "ready"

    def unused(self, slot: Slot) -> bool:
        """A slot came back without a request; True if it takes the next one."""
        worker = slot.worker
        if worker.state == "retiring" and not worker.busy:
            self._hang_up(worker)
        self.notify()
        return worker.state == "ready"

    def kill(self, worker: Worker, why: str) -> None:
        """Replace ``worker`` now; TERM it, KILL it after a grace period.

        For a worker stuck in a request (already answered 504): its
        replacement starts at once rather than when the corpse is found.
        """
        if worker.state == "dead":
            return
        self.counters["killed"] += 1
        logger.warning("killing worker %s: %s", worker.pid, why)
        self._retire(worker, why, count=False)
        self._signal(worker, signal.SIGTERM)
        asyncio.get_running_loop().call_later(KILL_GRACE, self._signal, worker, signal.SIGKILL)

    # ------------------------------------------------------------ workers

    def _on_event(self, slot: Slot, event: protocol.Event) -> None:
        exchange = slot.exchange
        if type(event) is protocol.AppError:
            self._log_app_error(slot, event)
        if exchange is not None and getattr(event, "rid", None) == exchange.rid:
            exchange.feed(event)
        elif isinstance(event, protocol.Usage):  # just before the last frame: see released()
            slot.worker.rss = event.rss
        elif isinstance(event, protocol.Log):
            app_logger.log(event.level, "[worker %s] %s", slot.worker.pid, event.message)
        elif isinstance(event, protocol.Ready):
            if slot.worker.pid is None:  # READY can overtake the zygote's SPAWNED
                slot.worker.pid = event.pid  # (its zygote may be dead already: then its pidfd reports)
                self._procs.add(event.pid, slot.worker, slot.worker.zygote)
            if self.config.max_rss:  # before any REQUEST on this slot
                slot.pipe.send(protocol.encode_report(True))
            self._on_ready(slot)
        elif isinstance(event, protocol.BootError):
            worker = slot.worker
            if worker.state == "booting":
                self._last_boot_error = event.message
                worker.state = "boot-failed"
                logger.error("worker %s could not load %s:\n%s", worker.pid, describe(self.app_ref),
                             event.message.rstrip())
        else:
            logger.debug("dropping stale %s on worker %s", type(event).__name__, slot.worker.pid)
            if isinstance(event, FileHandoff):
                os.close(event.fd)

    def _log_app_error(self, slot: Slot, event: protocol.AppError) -> None:
        """An app traceback, attributed to its worker and request.

        With ``raise_app_errors`` the relay raises it to the ASGI server, which
        logs it: a debug line here then, unless no request will raise it.
        """
        exchange = slot.exchange
        raised = (self.config.raise_app_errors and exchange is not None and exchange.rid == event.rid
                  and not exchange.finished and not exchange.cancelled)
        app_logger.log(logging.DEBUG if raised else logging.ERROR, "[worker %s] %s", slot.worker.pid,
                       event.message)

    def _on_ready(self, slot: Slot) -> None:
        slot.ready = True
        worker = slot.worker
        if worker.state != "booting" or not all(s.ready for s in worker.slots):
            return
        worker.state = "ready"
        if self._started:  # a replacement: say how long the pool was short
            logger.info("worker %s ready in %.0f ms", worker.pid, (time.monotonic() - worker.started) * 1000)
        self._ever_ready = True
        self.boot_failures = 0
        if self.stopping:
            self._hang_up(worker)
            return
        old, worker.replaces = worker.replaces, None
        if old is not None and old.state in ("booting", "ready"):
            self._retire(old, "reload", replace=False)
            if not any(w.replaces is not None for w in self.workers.values()):
                logger.info("reload complete: %d worker(s) ready", self._ready_count())
        for s in worker.slots:
            self._offer(s)
        self.notify()

    def _ready_count(self) -> int:
        return sum(w.state == "ready" for w in self.workers.values())

    def _on_dead(self, worker: Worker, reason: str) -> None:
        if worker.state == "dead":
            return
        booting = worker.state in ("booting", "boot-failed")
        # No process ever said a word (no SPAWNED, READY or BOOT_ERROR): the
        # zygote died with our SPAWN, or before it.  Not the app's failure.
        never_started = worker.state == "booting" and worker.pid is None
        booting = booting and not never_started
        was_retiring = worker.state == "retiring"  # its replacement is on its way already
        expected = was_retiring and not worker.busy
        worker.state = "dead"
        self.workers.pop(worker.id, None)
        for slot in worker.slots:
            self._withdraw(slot)
            if slot.pipe is not None:
                slot.pipe.close()
            if slot.exchange is not None:
                slot.exchange.feed(Lost(reason))
                slot.exchange = None
        if worker.pid is not None and worker.pid in self._procs:
            # A broken connection but a lingering process (stuck in C code):
            # it must not live on unsupervised.
            asyncio.get_running_loop().call_later(KILL_GRACE, self._signal, worker, signal.SIGKILL)
        if self.stopping:
            logger.debug("worker %s exited (%s)", worker.pid, reason)
        elif never_started:
            logger.info("worker %d was not started (%s); starting another", worker.id, reason)
        elif expected:
            logger.info("worker %s retired (%s)", worker.pid, worker.retire_reason)
        elif booting:
            self.boot_failures += 1
            logger.error("worker %s died while loading the app (%s)", worker.pid, reason)
        else:
            logger.warning("worker %s died (%s)", worker.pid, reason)
        if not self.stopping and not was_retiring:
            self.counters["respawned"] += 1
            if booting or never_started:
                delay = self.retry_after() if booting else BACKOFF_MIN
                logger.info("starting a new worker in %.1f s", delay)
                self.background(self._respawn_later(delay, worker.replaces))
            elif worker.replaced_by is None or worker.replaced_by.state == "dead":
                self._spawn()  # (a reload replacement already on its way takes its place)
        self.notify()
        if self.hopeless:
            self._on_hopeless()

    async def _respawn_later(self, delay: float, replaces: Worker | None) -> None:
        await asyncio.sleep(delay)
        if self.stopping:
            return
        if replaces is not None and (replaces.state not in ("booting", "ready") or (
                replaces.replaced_by is not None and replaces.replaced_by.state != "dead")):
            return  # retired or dead (its own exit was replaced), or a newer reload replaced it already
        self._spawn(replaces=replaces)

    def _retire(self, worker: Worker, reason: str, *, replace: bool = True, count: bool = True) -> None:
        """Give ``worker`` no more requests; it leaves once idle.  Unless it is
        being replaced already (reload), its replacement starts now."""
        if worker.state not in ("ready", "booting") or self.stopping:
            return
        worker.state = "retiring"
        worker.retire_reason = reason
        if count:
            self.counters["recycled"] += 1
            logger.info("recycling worker %s: %s", worker.pid, reason)
        for slot in worker.slots:
            self._withdraw(slot)
        if replace:
            self._spawn()
        if not worker.busy:
            self._hang_up(worker)

    def _hang_up(self, worker: Worker) -> None:
        for slot in worker.slots:
            if slot.pipe is not None:
                slot.pipe.close()

    # ------------------------------------------------------------ housekeeping

    def refresh_rss(self) -> None:
        recycling.refresh_rss(self)

    def background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify(self) -> None:
        self._changed.set()

    async def wait_change(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
