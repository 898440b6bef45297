"""Keep the pool's worker processes whole.

The supervisor owns every worker process and its connections ("slots", one
per worker thread).  It works like gunicorn's arbiter: whatever happens -- a
worker ready, dead or retired, a reload, a queue building up, a tick of the
clock -- it records the fact and calls :meth:`Supervisor.reconcile`, the one
place that compares what the pool should have with what it has and starts
(:meth:`Supervisor._spawn`, the only spawn site) or retires workers:

- as many live workers of the current reload epoch as the target (the
  configured count, or the elastic pool's size), none started during a
  boot back-off;
- workers of an older epoch (before a reload) retire as fresh ones become
  ready, so the pool never serves with fewer workers than before;
- workers the recycling policy picks retire between requests.

Which worker retires when, how far an elastic pool grows or shrinks and how
long a failing boot waits are pure functions in :mod:`.policies`; a worker's
states and their legal steps are in :mod:`.worker`; the zygote that forks the
workers is driven through :class:`~.zygote.Zygote`.  The dispatcher
(:class:`~a2wsgi_mp.pool.dispatch.Dispatcher`) hears only three things: this slot can
take a request, this slot takes no more, this slot is gone (its request lost).
The supervisor sees only control events (READY, BOOT_ERROR, LOG, USAGE, the
end of a connection); a response's events go from the connection straight to
its request's exchange.

Time comes from a :class:`Clock` and the zygote from a factory, so unit tests
run the supervisor in-process with a fake of each (tests/test_supervisor.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from typing import Any, Callable, Protocol, cast

from ..config import PoolConfig
from ..errors import BootFailed, BootInterrupted
from ..hooks import Hooks, ServerView, WorkerView
from ..ipc import protocol, shm
from ..ipc.pipe import FileHandoff, FrontPipe, pair
from ..loader import AppRef, describe
from ..reportfile import DUMP_SIGNAL, EXIT_RSS_HARD
from . import policies, reports, warmup
from .processes import ProcessHandle, ProcessTable
from .worker import Slot, State, Step, Worker, describe_status, rss
from .zygote import PreloadFailed, Zygote, ZygoteLost

logger = logging.getLogger("a2wsgi_mp.pool")
app_logger = logging.getLogger("a2wsgi_mp.wsgi")

#: Seconds between SIGTERM (which a worker honours after its current request)
#: and SIGKILL, for a worker that must go.
KILL_GRACE = 2.0
#: Seconds a death report waits for the exit status after the worker's connection broke.
STATUS_WAIT = 1.0
BACKOFF_MIN, BACKOFF_MAX = policies.BACKOFF_MIN, policies.BACKOFF_MAX
#: Looked up per request: a module global costs a third of an Enum member's class lookup.
READY = State.READY


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Where the supervisor reads the time and sets its timers."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer: ...


class LoopClock:
    """The real clock: ``time.monotonic`` and the running loop's timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    now = staticmethod(time.monotonic)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self._loop.call_later(delay, callback, *args)


ZygoteFactory = Callable[..., Zygote]


class Supervisor:
    def __init__(
        self,
        app_ref: AppRef,
        config: PoolConfig,
        counters: dict[str, int],
        offer: Callable[[Slot], None],
        withdraw: Callable[[Slot], None],
        lost: Callable[[Slot, str], None],
        on_hopeless: Callable[[], None],
        *,
        clock: Clock | None = None,
        zygote: ZygoteFactory = Zygote,
        process_handle: Callable[[int, int], ProcessHandle] = ProcessHandle,
    ) -> None:
        self.app_ref = app_ref
        self.config = config
        self.counters = counters
        self._offer = offer
        self._withdraw = withdraw
        self._lost = lost
        self._on_hopeless = on_hopeless
        #: None until start(): then the running loop's clock, unless one was given.
        self.clock: Clock = clock  # type: ignore[assignment]
        self._new_zygote_handle = zygote
        self.workers: dict[int, Worker] = {}
        #: Workers whose process is not known to have exited (by its zygote's
        #: report or its pidfd): the only ones it makes sense to signal.
        self._procs: ProcessTable[Worker] = ProcessTable(self._on_process_gone, self._zygote_alive, process_handle)
        self._next_wid = 0
        self._zygote: Zygote | None = None
        #: ``reload_check`` with ``preload``: the zygote of the code before a reload,
        #: kept until the reload's workers pass the check (or back in service if they fail).
        self._previous_zygote: Zygote | None = None
        #: How many live workers the pool should have (elastic: between the bounds).
        self.target: int = cast(int, config.workers)  # (a (min, max) pair is resolved by PoolConfig)
        #: Bumped by each reload: live workers of an older epoch are replaced.
        self.epoch = 0
        #: No worker starts before this time (back-off after boot failures).
        self._hold_until = 0.0
        self._hold_timer: Timer | None = None
        self._tick_timer: Timer | None = None
        #: A preloaded reload is importing the new code in a fresh zygote.
        self.reloading = False
        self.boot_failures = 0
        self._last_boot_error = ""
        self._ever_ready = False
        self._started = False  # True once start() returned: later workers are replacements
        self.stopping = False
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Workers that died or were killed, by reason (see :mod:`.reports`).
        self.deaths = dict.fromkeys(reports.REASONS, 0)
        self._oom = reports.OomWatch()
        #: The hooks module's front hooks (child_exit here; WSGIPool runs when_ready, on_reload).
        self.hooks = Hooks()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the workers; return when all are ready, raise BootFailed if none can be."""
        if self.clock is None:
            self.clock = LoopClock(asyncio.get_running_loop())
        began = self.clock.now()
        self._zygote = self._new_zygote()
        try:
            await self._zygote.start()
        except Exception as exc:
            if self.stopping:  # (stop() ended the zygote while it imported the app)
                raise self._interrupted() from None
            if isinstance(exc, PreloadFailed):
                raise BootFailed(f"could not preload {describe(self.app_ref)}:\n{exc}") from None
            raise
        self.reconcile()
        deadline = began + self.config.boot_timeout
        while len(self.workers) < self.target or any(w.state is not State.READY for w in self.workers.values()):
            if self.stopping:
                raise self._interrupted()
            if self.boot_failures and not self._ever_ready:
                raise BootFailed(self._last_boot_error or "the worker exited while loading the app")
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                raise BootFailed(f"workers did not load {describe(self.app_ref)} within {self.config.boot_timeout} s")
            await self.wait_change(remaining)
        self._started = True
        self._tick_timer = self.clock.call_later(policies.tick_period(self.config), self._tick)
        cfg = self.config
        logger.info("pool ready in %.1f s: %d worker(s) x %d thread(s) serving %s (zygote %s, %s%s)%s",
                    self.clock.now() - began, len(self.workers), cfg.threads, describe(self.app_ref),
                    self._zygote.pid, cfg.start_method, ", preloaded" if cfg.preload else "",
                    f" (elastic: {cfg.workers_min} to {cfg.workers_max} workers)" if cfg.elastic else "")

    def _interrupted(self) -> BootInterrupted:
        return BootInterrupted(f"stopped while the workers loaded {describe(self.app_ref)}: start-up abandoned")

    async def stop(self, timeout: float) -> None:
        """Let in-flight requests finish within ``timeout``, then end every process."""
        self.stopping = True
        for timer in (self._tick_timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        busy = sum(w.busy for w in self.workers.values())
        logger.info("draining: %d worker(s), %d request(s) in flight, up to %.0f s", len(self.workers), busy, timeout)
        deadline = time.monotonic() + timeout
        while any(w.busy for w in self.workers.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Out of budget: end the requests still running now (each is answered and
                # logged by its relay), not after the hang-up's grace below.
                for worker in [w for w in self.workers.values() if w.busy]:
                    self.counters["killed"] += 1
                    self._signal(worker, signal.SIGKILL)
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
        for zygote in (self._zygote, self._previous_zygote):
            if zygote is not None:
                await zygote.stop()
        self._procs.forget_all()
        for worker in list(self.workers.values()):
            self._close_report(worker)
        c = self.counters
        logger.info("pool stopped: %d requests served; 502: %d, 503: %d, 504: %d; recycled %d, respawned %d, "
                    "killed %d", c["served"], c["502"], c["503"], c["504"], c["recycled"], c["respawned"], c["killed"])

    async def reload(self) -> None:
        """A fresh worker (re-importing the app) for every worker; each old one
        retires only once a fresh one is ready, so no request is dropped.

        Preloaded, the workers fork from a zygote that imported the app once,
        so re-forking from it would serve the old code (gunicorn ``--preload``'s
        limitation): a fresh zygote imports the code as it is on disk first, and
        only once it is ready do workers come from it.  If it cannot import the
        app, the error is logged and nothing changes."""
        if self.stopping:  # a SIGHUP while draining starts nothing
            return
        if self.config.preload and self._zygote is not None:
            fresh = await self._fresh_zygote()
            if fresh is None:
                return
            old, self._zygote = self._zygote, fresh
            if self._previous_zygote is not None:  # (from a reload not complete yet)
                await self._stop_zygote(self._previous_zygote)
                self._previous_zygote = None
            if self.config.reload_check:  # kept until the new workers pass the check
                self._previous_zygote = old
            else:
                # The old workers outlive their zygote (they watch the front) and
                # retire as their replacements come up; the front follows them by pidfd.
                await self._stop_zygote(old)
        self.epoch += 1
        logger.info("reload: starting %d fresh worker(s); each old one retires once its replacement is ready",
                    sum(1 for w in self.workers.values() if w.live))
        self.reconcile()

    async def _fresh_zygote(self) -> Zygote | None:
        """A new zygote with the app preloaded from disk; None if it failed (logged)."""
        if self.reloading:
            logger.warning("reload ignored: a reload is under way")
            return None
        self.reloading = True
        try:
            fresh = self._new_zygote()
            started = self.clock.now()
            try:
                await fresh.start()
            except Exception as exc:  # PreloadFailed, or the zygote could not even start
                logger.error("reload failed: could not preload %s; the old workers keep serving:\n%s",
                             describe(self.app_ref), str(exc).rstrip() or type(exc).__name__)
                await fresh.stop()
                return None
            if self.stopping:
                await fresh.stop()
                return None
            logger.info("reload: new code preloaded in %.0f ms (zygote %s)", (self.clock.now() - started) * 1000,
                        fresh.pid)
            return fresh
        finally:
            self.reloading = False

    # ------------------------------------------------------------ the one reconcile step

    def reconcile(self) -> None:
        """Compare the workers the pool should have with those it has; start or retire.

        Called after every lifecycle event and on each tick; cheap and idempotent."""
        if self.stopping or self._zygote is None:
            return
        now = self.clock.now()
        cfg = self.config
        current: list[Worker] = []
        old_ready: list[Worker] = []
        for worker in list(self.workers.values()):
            if not worker.live:
                continue
            if worker.epoch != self.epoch:
                if worker.state is State.BOOTING:  # it may hold older code: a fresh one is coming
                    self._retire(worker, "superseded by a newer reload", count=False)
                else:
                    old_ready.append(worker)
            elif worker.state is State.READY and (reason := policies.recycle_reason(worker, cfg, now)):
                self._retire(worker, reason)
            else:
                current.append(worker)
        if old_ready:  # a reload: each old worker leaves once a fresh one stands in for it
            fresh_ready = sum(1 for w in current if w.state is State.READY)
            keep = max(0, self.target - fresh_ready)
            for worker in old_ready[: len(old_ready) - keep]:  # the longest-serving first
                self._retire(worker, "reload")
            if keep == 0:
                logger.info("reload complete: %d worker(s) ready", fresh_ready)
                previous, self._previous_zygote = self._previous_zygote, None
                if previous is not None:
                    self.background(self._stop_zygote(previous))
        missing = self.target - len(current)
        if missing > 0:
            if now < self._hold_until:
                self._wake_at(self._hold_until)
            else:
                for _ in range(missing):
                    self._spawn()

    def _spawn(self) -> Worker:
        """Start one worker of the current epoch (the only place a worker is created)."""
        self._next_wid += 1
        worker = Worker(self._next_wid, self.config.threads, policies.request_limit(self.config), self.epoch,
                        self.clock.now())
        self.workers[worker.id] = worker
        self.background(self._boot(worker))
        return worker

    def _hold(self, delay: float) -> None:
        """Start no worker for ``delay`` seconds (boot back-off)."""
        self._hold_until = max(self._hold_until, self.clock.now() + delay)

    def _wake_at(self, when: float) -> None:
        if self._hold_timer is None:
            self._hold_timer = self.clock.call_later(max(0.0, when - self.clock.now()), self._end_hold)

    def _end_hold(self) -> None:
        self._hold_timer = None
        self.reconcile()

    def _tick(self) -> None:
        """Once a period: sample RSS, retire long-idle elastic workers, reconcile."""
        if self.stopping:
            return
        cfg = self.config
        if cfg.max_rss:  # growth while idle (each response's last frame reports it too)
            for worker in self.workers.values():
                if worker.state is State.READY and worker.pid is not None:
                    worker.rss = rss(worker.pid)
        if cfg.elastic:
            self._shrink(self.clock.now())
        self.reconcile()
        self._tick_timer = self.clock.call_later(policies.tick_period(cfg), self._tick)

    def _shrink(self, now: float) -> None:
        current = [w for w in self.workers.values() if w.live and w.epoch == self.epoch]
        for worker in policies.idle_surplus(self.config, self.target, current, now):
            self.target -= 1
            self.counters["scaled_down"] += 1
            logger.info("scaling down: worker %s idle for %.0f s (%d of at least %d left)", worker.pid,
                        now - worker.idle_since, self.target, self.config.workers_min)
            self._retire(worker, f"idle for {now - worker.idle_since:.0f} s", count=False)

    # ------------------------------------------------------------ what the dispatcher asks

    @property
    def started(self) -> bool:
        return self._started

    def queued(self, depth: int) -> None:
        """``depth`` requests wait for a worker: an elastic pool grows."""
        cfg = self.config
        if not cfg.elastic or self.stopping or not self._started or self.hopeless:
            return
        booting = sum(len(w.slots) for w in self.workers.values()
                      if w.state is State.BOOTING and w.epoch == self.epoch)
        count = policies.growth(cfg, self.target, booting, depth)
        if count:
            self.target += count
            self.counters["scaled_up"] += count
            logger.info("scaling up: %d requests queued, starting %d worker(s) (%d of at most %d)",
                        depth, count, self.target, cfg.workers_max)
            self.reconcile()

    @property
    def hopeless(self) -> bool:
        """No worker serves and the last ones could not load the app."""
        return bool(self.boot_failures) and not any(w.serving for w in self.workers.values())

    def retry_after(self) -> int:
        """Seconds until the next boot attempt, rounded up: for Retry-After."""
        return int(policies.backoff(self.boot_failures) + 0.999)

    def released(self, slot: Slot) -> bool:
        """A request on ``slot`` ended; True if the slot takes the next one."""
        worker = slot.worker
        worker.requests += 1
        worker.idle_since = self.clock.now()
        if worker.state is READY and not self.stopping:  # (every request: a module global, not State.READY)
            reason = policies.recycle_reason(worker, self.config, worker.idle_since)
            if reason is not None:
                self._retire(worker, reason)
                self.reconcile()
        elif worker.state is State.RETIRING and not worker.busy:
            self._hang_up(worker)
        self.notify()
        return worker.state is READY

    def unused(self, slot: Slot) -> bool:
        """A slot came back without a request; True if it takes the next one."""
        worker = slot.worker
        if worker.state is State.RETIRING and not worker.busy:
            self._hang_up(worker)
        self.notify()
        return worker.state is State.READY

    def kill(self, worker: Worker, why: str, slot: Slot | None = None) -> None:
        """Replace ``worker`` now; dump its stacks, TERM it, KILL it after a grace period.

        For a worker stuck in a request (already answered 504) on ``slot``: its
        replacement starts at once rather than when the corpse is found, and
        the log says which request it was stuck in, where (every thread's
        stack, asked of the worker for at most ``reports.DUMP_WAIT`` s) and
        how big it was.
        """
        if worker.state is State.DEAD:
            return
        self.counters["killed"] += 1
        self.deaths["timeout"] += 1
        what = ""
        if slot is not None and slot.request is not None:
            what = f'; it was serving "{reports.request_line(slot.request)}" for {time.monotonic() - slot.since:.1f} s'
        size = rss(worker.pid) if worker.pid is not None else worker.rss
        if worker.live and not self.stopping:
            self._retire(worker, why, count=False)
            self.reconcile()
        why = f"{why}{what}, RSS {reports.mib(size)}"
        if worker.report_fd >= 0:
            self.background(self._dump_and_kill(worker, why))
        else:  # no report file (not Linux): nothing to wait for
            self._terminate(worker, why, "no report file")

    async def _dump_and_kill(self, worker: Worker, why: str) -> None:
        stacks = ""
        if worker.state is not State.DEAD:
            stacks = await reports.take_stacks(worker.report_fd, lambda: self._signal(worker, DUMP_SIGNAL))
            worker.report_read = reports.report_size(worker.report_fd)
        self._terminate(worker, why, stacks or ("it is gone" if worker.state is State.DEAD else "none came"),
                        bool(stacks))

    def _terminate(self, worker: Worker, why: str, stacks: str, dumped: bool = False) -> None:
        if dumped:
            logger.warning("killing worker %s: %s; its stacks (most recent call first):\n%s", worker.pid, why,
                           stacks.rstrip())
        else:
            logger.warning("killing worker %s: %s (no stacks: %s)", worker.pid, why, stacks)
        self._signal(worker, signal.SIGTERM)
        self.clock.call_later(KILL_GRACE, self._signal, worker, signal.SIGKILL)

    # ------------------------------------------------------------ events from the workers

    def _on_event(self, slot: Slot, event: protocol.Event) -> None:
        """A control event from a worker (a response's events go to its exchange: see FrontPipe)."""
        if isinstance(event, protocol.Usage):  # just before the last frame: see released()
            slot.worker.rss = event.rss
        elif isinstance(event, protocol.Log):
            app_logger.log(event.level, "[worker %s] %s", slot.worker.pid, event.message)
        elif isinstance(event, protocol.Ready):
            if slot.worker.pid is None:  # READY can overtake the zygote's SPAWNED
                slot.worker.pid = event.pid  # (its zygote may be dead already: then its pidfd reports)
                self._procs.add(event.pid, slot.worker, slot.worker.zygote)
            self._on_ready(slot)
        elif isinstance(event, protocol.BootError):
            worker = slot.worker
            if worker.state is State.BOOTING:
                self._boot_failed(worker, f"could not load {describe(self.app_ref)}", event.message.rstrip())
        elif isinstance(event, protocol.AppError):  # after its request ended (a failing close())
            app_logger.error("[worker %s] %s", slot.worker.pid, event.message)
        else:
            logger.debug("dropping stale %s on worker %s", type(event).__name__, slot.worker.pid)
            if isinstance(event, FileHandoff):
                os.close(event.fd)

    def _boot_failed(self, worker: Worker, error: str, detail: str) -> None:
        """``worker`` cannot serve (its app did not load, or it failed the reload check).

        In a reload, with older workers serving, the reload is given up: one
        line says so, and the old workers serve on.  Otherwise the pool backs
        off (see _on_dead); the same error again is one short line, not the
        traceback again."""
        worker.step(Step.BOOT_ERROR)
        # Its number always; its pid only once SPAWNED or READY told it (a BOOT_ERROR can come first).
        name = f"{worker.id} (pid {worker.pid})" if worker.pid else str(worker.id)
        serving = [w for w in self.workers.values() if w.state is State.READY and w.epoch != worker.epoch]
        if serving and not self.stopping:
            logger.error("reload failed: worker %s %s; the old workers keep serving (%d ready); fix the code and "
                         "reload again%s", name, error, len(serving), f":\n{detail}" if detail else "")
            self._abandon_reload()
            return
        repeated = detail == self._last_boot_error
        self._last_boot_error = detail
        if repeated:
            logger.error("worker %s %s: the same error again (attempt %d); backing off", name, error,
                         self.boot_failures + 1)
        else:
            logger.error("worker %s %s%s", name, error, f":\n{detail}" if detail else "")

    def _abandon_reload(self) -> None:
        """Give up the current reload: its workers leave, the older ones are current again."""
        for worker in list(self.workers.values()):
            if worker.epoch == self.epoch and worker.state in (State.BOOTING, State.BOOT_FAILED):
                worker.abandoned = True
                worker.retire_reason = "reload failed"
                if worker.live:
                    self._retire(worker, "reload failed", count=False)
                else:
                    self._hang_up(worker)
        for worker in self.workers.values():
            if worker.live:
                worker.epoch = self.epoch  # the old workers are the pool's workers again
        previous, self._previous_zygote = self._previous_zygote, None
        if previous is not None:  # preloaded: workers fork from the old code again
            fresh, self._zygote = self._zygote, previous
            if fresh is not None:
                self.background(self._stop_zygote(fresh))

    async def _stop_zygote(self, zygote: Zygote) -> None:
        await zygote.stop()
        self._procs.reporter_lost()

    async def _warm_up(self, worker: Worker) -> None:
        """The reload check: ``GET reload_check`` on ``worker`` before it serves (see :mod:`.warmup`)."""
        target = self.config.reload_check or "/"
        passed, what = await warmup.check(worker.slots[0], target, self.config.timeout or 30.0)
        if worker.state is not State.BOOTING:
            return  # it died meanwhile
        if passed:
            logger.info("worker %s passed the reload check: GET %s %s", worker.pid, target, what)
            self._on_ready(worker.slots[0])
            return
        self._boot_failed(worker, f'failed the reload check: "GET {target}" {what}', "")
        self._hang_up(worker)

    def _on_ready(self, slot: Slot) -> None:
        slot.ready = True
        worker = slot.worker
        if worker.state is not State.BOOTING or not all(s.ready for s in worker.slots):
            return
        if self.config.reload_check and self._started and not self.stopping and not worker.warmed:
            worker.warmed = True  # no client request before it answered the check
            self.background(self._warm_up(worker))
            return
        worker.step(Step.READY)
        if self._started:  # a replacement: say how long the pool was short
            logger.info("worker %s ready in %.0f ms", worker.pid, (self.clock.now() - worker.started) * 1000)
        if worker.pid is not None:  # what its death report will need
            worker.rss = rss(worker.pid)  # (then with a response's last frame, at most once a second)
            worker.report_fd = reports.open_report(worker.pid)
            worker.memory_counter = reports.memory_counter(worker.pid)
            self._oom.track(worker.memory_counter)
        self._ever_ready = True
        self.boot_failures = 0
        self._hold_until = 0.0
        if self.stopping:
            self._hang_up(worker)
            return
        self.reconcile()  # (a reload: an old worker retires now; or a recycling rule this one)
        if worker.live:  # (still ready)
            for s in worker.slots:
                self._offer(s)
        self.notify()

    def _on_dead(self, worker: Worker, reason: str) -> None:
        if worker.state is State.DEAD:
            return
        before = worker.state
        # No process ever said a word (no SPAWNED, READY or BOOT_ERROR): the
        # zygote died with our SPAWN, or before it.  Not the app's failure.
        never_started = before is State.BOOTING and worker.pid is None
        booting = before in (State.BOOTING, State.BOOT_FAILED) and not never_started and not worker.abandoned
        # (retiring: its replacement is on its way already; abandoned: the old workers serve on)
        was_retiring = before is State.RETIRING or worker.abandoned
        expected = was_retiring and not worker.busy
        doing = reports.serving(worker.slots, time.monotonic())
        worker.step(Step.EXIT)
        self.workers.pop(worker.id, None)
        for slot in worker.slots:
            if slot.pipe is not None:
                slot.pipe.close()
            self._lost(slot, reason)
        if worker.pid is not None and worker.pid in self._procs:
            # A broken connection but a lingering process (stuck in C code):
            # it must not live on unsupervised.
            self.clock.call_later(KILL_GRACE, self._signal, worker, signal.SIGKILL)
        if self.stopping:
            logger.debug("worker %s exited (%s)", worker.pid, reason)
        elif never_started:
            logger.info("worker %d was not started (%s); starting another", worker.id, reason)
        elif expected:
            logger.info("worker %s retired (%s)", worker.pid, worker.retire_reason)
        elif booting:
            self.boot_failures += 1
            # (a worker that said why, BOOT_ERROR, was logged then; this one died without a word)
            (logger.info if before is State.BOOT_FAILED else logger.error)(
                "worker %s died while loading the app (%s)", worker.pid, reason)
        else:  # reported once its exit status is known (or after STATUS_WAIT)
            worker.death = (reason, doing)
            if worker.exited or worker.pid is None:
                self._finish_death(worker)
            else:
                self.clock.call_later(STATUS_WAIT, self._finish_death, worker)
        if not self.stopping and not was_retiring:
            self.counters["respawned"] += 1
            if booting or never_started:
                delay = policies.backoff(self.boot_failures) if booting else BACKOFF_MIN
                logger.info("starting a new worker in %.1f s", delay)
                self._hold(delay)
        self.reconcile()
        self.notify()
        if self.hopeless:
            self._on_hopeless()

    def _finish_death(self, worker: Worker) -> None:
        """Log the report of a worker that died unexpectedly, and count it by reason."""
        if worker.death is None:
            return
        reason, doing = worker.death
        worker.death = None
        status = worker.exit_status
        how = describe_status(status) if status is not None else reason
        last = f"last RSS sample {reports.mib(worker.rss)}" if worker.rss else "RSS not sampled"
        raw = reports.read_report(worker.report_fd, worker.report_read)
        worker.report_read += len(raw.encode())
        dump = reports.app_stacks(raw).rstrip()
        oom = reports.was_oom(worker, status, self._oom)
        if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_RSS_HARD:
            self.deaths["max_rss_hard"] += 1
            first, _, stacks = dump.partition("\n")
            logger.error("worker %s ended itself, %s: %s; 502 for its request; its stacks (most recent call "
                         "first):\n%s", worker.pid, doing, first or "max_rss_hard", stacks.strip())
        elif oom is not None:
            self.deaths["oom"] += 1
            logger.error("worker %s was killed by the kernel's OOM killer (%s), %s; %s", worker.pid, oom,
                         doing, last)
        else:
            self.deaths["crash"] += 1
            logger.error("worker %s died (%s), %s; %s%s", worker.pid, how, doing, last,
                         f"; its report:\n{dump}" if dump else "")
        if worker.exited:
            self._close_report(worker)

    def _close_report(self, worker: Worker) -> None:
        if worker.report_fd >= 0 and worker.death is None:
            os.close(worker.report_fd)
            worker.report_fd = -1

    def _retire(self, worker: Worker, reason: str, *, count: bool = True) -> None:
        """Give ``worker`` no more requests; it leaves once idle.  (reconcile()
        starts its replacement, if the pool needs one.)"""
        worker.step(Step.RETIRE)
        worker.retire_reason = reason
        if count:
            self.counters["recycled"] += 1
            logger.info("recycling worker %s: %s", worker.pid, reason)
        for slot in worker.slots:
            self._withdraw(slot)
        if not worker.busy:
            self._hang_up(worker)

    def _hang_up(self, worker: Worker) -> None:
        for slot in worker.slots:
            if slot.pipe is not None:
                slot.pipe.close()

    # ------------------------------------------------------------ the zygote and the processes

    def _new_zygote(self) -> Zygote:
        """A handle on a new zygote for this pool (not started)."""
        cfg = self.config
        zygote = self._new_zygote_handle(self.app_ref, cfg.start_method, self._on_exited, lambda: None,
                                         cfg.preload, cfg.boot_timeout,
                                         {"max_rss_hard": cfg.max_rss_hard * 1024 * 1024, "hooks": cfg.hooks,
                                          "hook_names": list(cfg.hook_names) if cfg.hook_names is not None else None,
                                          "worker_sched": cfg.worker_sched})
        zygote.on_lost = lambda: self._on_zygote_lost(zygote)
        return zygote

    async def _boot(self, worker: Worker) -> None:
        """Open ``worker``'s connections and have the zygote fork it onto them."""
        assert self._zygote is not None
        zygote = self._zygote  # (a preloaded reload may replace self._zygote meanwhile)
        socks = []
        try:
            for slot in worker.slots:
                front, back = pair()
                socks.append(back)
                slot.pipe = await FrontPipe.open(
                    front,
                    functools.partial(self._on_event, slot),
                    functools.partial(self._on_connection_lost, worker),
                    shm.DEFAULT_SIZE if self.config.ipc == "shm" else 0,
                    report_rss=bool(self.config.max_rss),  # (REPORT goes right after READY)
                )
            await zygote.wait_running()
            worker.zygote = zygote.generation  # (a restarted zygote has a new one)
            pid = await zygote.spawn(worker.id, socks)
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
            if worker.state is State.BOOTING:
                worker.step(Step.BOOT_ERROR)  # (back off: this may well persist)
            self._on_dead(worker, f"start failed: {exc}")

    def _on_connection_lost(self, worker: Worker, exc: Exception | None) -> None:
        self._on_dead(worker, "its connection closed")

    def _zygote_alive(self, generation: int) -> bool:
        return any(z is not None and z.running and z.generation == generation
                   for z in (self._zygote, self._previous_zygote))

    def _on_exited(self, pid: int, status: int) -> None:
        self._procs.gone(pid, status)

    def _on_zygote_lost(self, zygote: Zygote) -> None:
        # The workers live on (they watch the front, not the zygote) and keep
        # serving; only their exit statuses are lost.  Those that exited while
        # it was dying, and those we cannot follow without it, are settled now.
        self._procs.reporter_lost()
        if zygote is not self._zygote:  # a zygote replaced by a reload: nothing to restart
            return
        self.background(self._restart_zygote())

    async def _restart_zygote(self) -> None:
        zygote = self._zygote
        assert zygote is not None
        while not self.stopping:
            try:
                await zygote.start()
                break
            except Exception as exc:
                logger.error("could not restart the zygote: %s", exc)
                await asyncio.sleep(1.0)

    def _signal(self, worker: Worker, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGKILL):
            worker.killed = True  # its death is ours, not a crash or the OOM killer
        if worker.pid is not None:
            self._procs.signal(worker.pid, worker, sig)

    def _on_process_gone(self, worker: Worker, status: int | None) -> None:
        how = describe_status(status) if status is not None else "exited, status unknown"
        worker.exit_status, worker.exited = status, True
        self.hooks.call_logged("child_exit", ServerView(os.getpid()), WorkerView(worker.pid, worker.id))
        if worker.death is not None:  # its connection told us first; its report waited for this
            self._finish_death(worker)
        elif worker.state is State.DEAD:
            if not self.stopping and status:
                logger.warning("worker %s exit status: %s", worker.pid, how)
        else:
            self._on_dead(worker, how)
        self._close_report(worker)

    # ------------------------------------------------------------ housekeeping

    def refresh_rss(self) -> None:
        """Sample every worker's RSS now (for the metrics)."""
        for worker in self.workers.values():
            if worker.pid is not None:
                worker.rss = rss(worker.pid) or worker.rss

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
