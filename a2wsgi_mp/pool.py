"""The supervised pool of worker processes, as the front sees it.

The pool owns every worker's connections ("slots", one per worker thread),
hands idle slots to requests in FIFO order, and keeps the pool whole: a worker
that dies is replaced at once (with back-off when it cannot even load the
app), one that hangs past the deadline is killed, one that served enough
requests, grew too large or lived too long is retired between requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections import deque
from typing import Any

import psutil

from .config import PoolConfig
from .exchange import Exchange, Lost
from .ipc import protocol
from .ipc.pipe import FileHandoff, FrontPipe, pair
from .launcher import Launcher
from .loader import AppRef, describe

logger = logging.getLogger("a2wsgi_mp.pool")
app_logger = logging.getLogger("a2wsgi_mp.wsgi")

#: Seconds between SIGTERM and SIGKILL for a worker that must go now.
KILL_GRACE = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0


class Unavailable(Exception):
    """No worker can take the request: 503.  ``retry_after`` in seconds."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class BootFailed(Exception):
    """No worker could load the app; the message carries the worker's traceback."""


class Slot:
    """One connection to one worker thread."""

    __slots__ = ("worker", "pipe", "exchange", "ready")

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.pipe: FrontPipe = None  # type: ignore[assignment]
        self.exchange: Exchange | None = None
        self.ready = False


class Worker:
    """One worker process."""

    def __init__(self, wid: int, threads: int, max_requests: int) -> None:
        self.id = wid
        self.pid: int | None = None
        self.slots = [Slot(self) for _ in range(threads)]
        self.state = "booting"  # booting -> ready -> retiring -> dead
        self.requests = 0
        self.max_requests = max_requests
        self.started = time.monotonic()
        self.retire_reason = ""
        #: While booting as a reload replacement: the worker it will retire.
        self.replaces: Worker | None = None
        #: The reload replacement booting for this worker, if any.
        self.replaced_by: Worker | None = None
        self.rss = 0

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.exchange is not None)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "state": self.state,
            "requests": self.requests,
            "busy": self.busy,
            "rss": self.rss,
            "age": round(time.monotonic() - self.started, 3),
        }


class Pool:
    def __init__(self, app_ref: AppRef, config: PoolConfig) -> None:
        self.app_ref = app_ref
        self.config = config
        self.workers: dict[int, Worker] = {}
        self.counters = {"served": 0, "502": 0, "503": 0, "504": 0, "recycled": 0, "respawned": 0, "killed": 0}
        self._idle: deque[Slot] = deque()
        self._waiters: deque[asyncio.Future[Slot]] = deque()
        self._next_wid = 0
        self._next_rid = 0
        self._launcher: Launcher | None = None
        self._boot_failures = 0
        self._last_boot_error = ""
        self._ever_ready = False
        self._stopping = False
        self._started = False
        self._changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Workers whose process has not been reported reaped: the only pids
        #: it is safe to signal (a reaped pid may already belong to another process).
        self._by_pid: dict[int, Worker] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the workers; return when all are ready, raise BootFailed if none can be."""
        if self._started:
            return
        self._started = True
        self._changed = asyncio.Event()
        self._launcher = Launcher(self.app_ref, self.config.start_method, self._on_exited, self._on_launcher_lost)
        await self._launcher.start()
        for _ in range(self.config.workers):
            self._spawn()
        deadline = time.monotonic() + self.config.boot_timeout
        while not all(w.state == "ready" for w in self.workers.values()) or len(self.workers) < self.config.workers:
            if self._boot_failures and not self._ever_ready:
                raise BootFailed(self._last_boot_error or "the worker exited while loading the app")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BootFailed(f"workers did not load {describe(self.app_ref)} within {self.config.boot_timeout} s")
            await self._wait_change(remaining)
        if self.config.max_rss or self.config.max_lifetime:
            self._background(self._watch_resources())
        logger.info("pool ready: %d workers x %d threads serving %s", len(self.workers), self.config.threads,
                    describe(self.app_ref))

    async def stop(self, graceful_timeout: float | None = None) -> None:
        """Stop taking work, let in-flight requests finish, then end every process."""
        if self._stopping or not self._started:
            return
        self._stopping = True
        timeout = self.config.graceful_timeout if graceful_timeout is None else graceful_timeout
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(Unavailable("shutting down"))
        deadline = time.monotonic() + timeout
        while any(w.busy for w in self.workers.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("graceful timeout: killing %d busy workers",
                               sum(1 for w in self.workers.values() if w.busy))
                break
            await self._wait_change(remaining)
        for worker in list(self.workers.values()):
            self._hang_up(worker)
        # Idle workers exit on EOF; give them a moment to be reaped, then kill
        # the stragglers and let the zygote go.
        deadline = time.monotonic() + 1.0
        while self._by_pid and time.monotonic() < deadline:
            await self._wait_change(deadline - time.monotonic())
        for worker in list(self._by_pid.values()):
            self._signal(worker, signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        if self._launcher is not None:
            await self._launcher.stop()

    async def reload(self) -> None:
        """Replace every worker with a fresh one (re-importing the app), each old
        worker leaving only once its replacement is ready: no request is dropped."""
        for worker in list(self.workers.values()):
            if worker.state in ("booting", "ready"):
                self._spawn(replaces=worker)

    # ------------------------------------------------------------ dispatch

    def next_rid(self) -> int:
        self._next_rid = (self._next_rid + 1) & 0xFFFFFFFF
        return self._next_rid

    async def acquire(self) -> Slot:
        """An idle slot, FIFO among waiters; Unavailable (503) when there is none to wait for."""
        if self._idle and not self._waiters:
            return self._idle.popleft()
        if self._stopping:
            raise Unavailable("shutting down")
        if not self._started:
            raise Unavailable("the pool is not running")
        if not any(w.state in ("ready", "retiring") for w in self.workers.values()) and self._boot_failures:
            self.counters["503"] += 1
            raise Unavailable("no worker could load the app", retry_after=self._backoff_delay())
        if len(self._waiters) >= self.config.backlog:
            self.counters["503"] += 1
            raise Unavailable("the request queue is full")
        future: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            if self.config.queue_timeout:
                return await asyncio.wait_for(asyncio.shield(future), self.config.queue_timeout)
            return await future
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                # Handed a slot just as we gave up (timeout, client gone): pass it on.
                self._offer(future.result())
            else:
                future.cancel()
            if isinstance(exc, asyncio.TimeoutError):
                self.counters["503"] += 1
                raise Unavailable("timed out waiting for a worker") from None
            raise
        finally:
            try:
                self._waiters.remove(future)
            except ValueError:
                pass

    def begin(self, slot: Slot) -> Exchange:
        exchange = Exchange(self.next_rid(), slot)
        slot.exchange = exchange
        return exchange

    def release(self, slot: Slot) -> None:
        """The request on ``slot`` is over and the worker is ready for the next."""
        slot.exchange = None
        worker = slot.worker
        worker.requests += 1
        self.counters["served"] += 1
        if worker.state == "ready" and worker.max_requests and worker.requests >= worker.max_requests:
            self._retire(worker, f"served {worker.requests} requests")
        if worker.state == "ready":
            self._offer(slot)
        elif worker.state == "retiring" and not worker.busy:
            self._hang_up(worker)
        self._notify()

    def abandon(self, slot: Slot, why: str) -> None:
        """The request on ``slot`` cannot be finished normally: replace its worker."""
        self.counters["killed"] += 1
        self.kill(slot.worker, why)

    def _offer(self, slot: Slot) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._idle.append(slot)

    # ------------------------------------------------------------ workers

    def _spawn(self, replaces: Worker | None = None) -> Worker:
        self._next_wid += 1
        cfg = self.config
        limit = cfg.max_requests + (random.randint(0, cfg.max_requests_jitter) if cfg.max_requests else 0)
        worker = Worker(self._next_wid, cfg.threads, limit)
        worker.replaces = replaces
        if replaces is not None:
            replaces.replaced_by = worker
        self.workers[worker.id] = worker
        self._background(self._boot(worker))
        return worker

    async def _boot(self, worker: Worker) -> None:
        assert self._launcher is not None
        socks = []
        try:
            for slot in worker.slots:
                front, back = pair()
                socks.append(back)
                slot.pipe = await FrontPipe.open(
                    front,
                    lambda event, slot=slot: self._on_event(slot, event),
                    lambda exc, worker=worker: self._on_dead(worker, "its connection closed"),
                )
            worker.pid = await self._launcher.spawn(worker.id, socks)
            self._by_pid[worker.pid] = worker
        except Exception as exc:
            for s in socks:
                s.close()
            logger.error("could not start a worker: %s", exc)
            self._on_dead(worker, f"start failed: {exc}")

    def _on_event(self, slot: Slot, event: protocol.Event) -> None:
        exchange = slot.exchange
        if exchange is not None and getattr(event, "rid", None) == exchange.rid:
            exchange.feed(event)
        elif isinstance(event, protocol.Log):
            app_logger.log(event.level, "[worker %s] %s", slot.worker.pid, event.message)
        elif isinstance(event, protocol.Ready):
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

    def _on_ready(self, slot: Slot) -> None:
        slot.ready = True
        worker = slot.worker
        if worker.state != "booting" or not all(s.ready for s in worker.slots):
            return
        worker.state = "ready"
        self._ever_ready = True
        self._boot_failures = 0
        if self._stopping:
            self._hang_up(worker)
            return
        for s in worker.slots:
            self._offer(s)
        old = worker.replaces
        worker.replaces = None
        if old is not None and old.state in ("booting", "ready"):
            self._retire(old, "reload")
        self._notify()

    def _on_exited(self, pid: int, status: int) -> None:
        worker = self._by_pid.pop(pid, None)
        if worker is None:
            return
        if worker.state == "dead":  # its connection told us first; now we know how
            if not self._stopping and status != 0:
                logger.warning("worker %s exit status: %s", pid, _describe_status(status))
        else:
            self._on_dead(worker, _describe_status(status))

    def _on_dead(self, worker: Worker, reason: str) -> None:
        if worker.state == "dead":
            return
        booting = worker.state in ("booting", "boot-failed")
        expected = worker.state == "retiring" and not worker.busy
        worker.state = "dead"
        self.workers.pop(worker.id, None)
        for slot in worker.slots:
            try:
                self._idle.remove(slot)
            except ValueError:
                pass
            if slot.pipe is not None:
                slot.pipe.close()
            if slot.exchange is not None:
                slot.exchange.feed(Lost(reason))
                slot.exchange = None
        self._schedule_signal_kill(worker)
        if self._stopping:
            logger.debug("worker %s exited (%s)", worker.pid, reason)
        elif expected:
            logger.info("worker %s retired (%s)", worker.pid, worker.retire_reason)
        elif booting:
            self._boot_failures += 1
            logger.error("worker %s died while loading the app (%s)", worker.pid, reason)
        else:
            logger.warning("worker %s died (%s)", worker.pid, reason)
        if not self._stopping and not expected:
            self.counters["respawned"] += 1
            if booting:
                delay = self._backoff_delay()
                logger.info("starting a new worker in %.1f s", delay)
                self._background(self._respawn_later(delay, worker.replaces))
            elif worker.replaced_by is None or worker.replaced_by.state == "dead":
                self._spawn()  # (a reload replacement already on its way takes its place)
        self._notify()
        self._wake_waiters_if_hopeless()

    def _wake_waiters_if_hopeless(self) -> None:
        if self._boot_failures and not any(w.state in ("ready", "retiring") for w in self.workers.values()):
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    self.counters["503"] += 1
                    waiter.set_exception(Unavailable("no worker could load the app", self._backoff_delay()))

    async def _respawn_later(self, delay: float, replaces: Worker | None) -> None:
        await asyncio.sleep(delay)
        if not self._stopping:
            self._spawn(replaces=replaces if replaces is not None and replaces.state != "dead" else None)

    def _backoff_delay(self) -> int:
        return int(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, self._boot_failures - 1)) + 0.999)

    def _retire(self, worker: Worker, reason: str) -> None:
        """Stop giving ``worker`` requests; it leaves once idle, after a replacement is on its way."""
        if worker.state not in ("ready", "booting") or self._stopping:
            return
        worker.state = "retiring"
        worker.retire_reason = reason
        self.counters["recycled"] += 1
        logger.info("recycling worker %s: %s", worker.pid, reason)
        for slot in worker.slots:
            try:
                self._idle.remove(slot)
            except ValueError:
                pass
        if reason != "reload":
            self._spawn()
        if not worker.busy:
            self._hang_up(worker)

    def _hang_up(self, worker: Worker) -> None:
        for slot in worker.slots:
            if slot.pipe is not None:
                slot.pipe.close()

    def kill(self, worker: Worker, why: str) -> None:
        """TERM now, KILL after a grace period: for a worker stuck in a request."""
        if worker.state == "dead":
            return
        logger.warning("killing worker %s: %s", worker.pid, why)
        self._signal(worker, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        loop.call_later(KILL_GRACE, self._signal, worker, signal.SIGKILL)

    def _signal(self, worker: Worker, sig: int) -> None:
        if worker.pid is not None and self._by_pid.get(worker.pid) is worker:
            try:
                os.kill(worker.pid, sig)
            except ProcessLookupError:
                pass

    def _schedule_signal_kill(self, worker: Worker) -> None:
        # A worker whose connection broke but whose process lingers (stuck in
        # C code, or ignoring EOF) must not live on unsupervised.
        if worker.pid is not None and worker.pid in self._by_pid:
            asyncio.get_running_loop().call_later(KILL_GRACE, self._signal, worker, signal.SIGKILL)

    def _on_launcher_lost(self) -> None:
        # The workers die with the zygote (PDEATHSIG); start a new zygote before
        # their replacements ask it for anything.
        self._background(self._restart_launcher())

    async def _restart_launcher(self) -> None:
        assert self._launcher is not None
        while not self._stopping:
            try:
                await self._launcher.start()
                break
            except Exception as exc:
                logger.error("could not restart the zygote: %s", exc)
                await asyncio.sleep(1.0)
        for worker in list(self.workers.values()):
            if worker.state != "dead":
                self._on_dead(worker, "the zygote exited")

    # ------------------------------------------------------------ housekeeping

    async def _watch_resources(self) -> None:
        cfg = self.config
        while not self._stopping:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                if worker.state != "ready" or worker.pid is None:
                    continue
                if cfg.max_rss:
                    try:
                        worker.rss = psutil.Process(worker.pid).memory_info().rss
                    except psutil.Error:
                        continue
                    if worker.rss > cfg.max_rss * 1024 * 1024:
                        self._retire(worker, f"RSS {worker.rss // (1024 * 1024)} MiB > {cfg.max_rss} MiB")
                        continue
                if cfg.max_lifetime and now - worker.started > cfg.max_lifetime:
                    self._retire(worker, f"lived {now - worker.started:.0f} s")

    def stats(self) -> dict[str, Any]:
        for worker in self.workers.values():
            if worker.pid is not None:
                try:
                    worker.rss = psutil.Process(worker.pid).memory_info().rss
                except psutil.Error:
                    pass
        return {
            "workers": [w.info() for w in self.workers.values()],
            "threads": self.config.threads,
            "idle_slots": len(self._idle),
            "queued": sum(1 for w in self._waiters if not w.done()),
            **self.counters,
        }

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _wait_change(self, timeout: float) -> None:
        assert self._changed is not None
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"

