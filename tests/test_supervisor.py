"""The supervisor in-process: a fake zygote, fake processes and a clock the test moves.

The supervisor's worker connections are real socketpairs (its own
:class:`~a2wsgi_mp.ipc.pipe.FrontPipe` reads them); behind them a
:class:`FakeProc` plays the worker process (READY, BOOT_ERROR, USAGE, an exit,
EOF when the front hangs up).  Time is a :class:`FakeClock`, so back-off,
lifetime, idleness and kill grace are decided by ``clock.advance()``, never by
waiting (gunicorn tests its arbiter with a mocked ``waitpid``; trio has
``MockClock``).  Each test waits only for the socket hops, on conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import signal
import socket
from typing import Any, Callable, Coroutine, Iterator

import pytest

from a2wsgi_mp.config import PoolConfig
from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.pool import policies
from a2wsgi_mp.pool.dispatch import Dispatcher
from a2wsgi_mp.pool.exchange import TIMED_OUT, Lost
from a2wsgi_mp.pool.supervisor import KILL_GRACE, BootFailed
from a2wsgi_mp.pool.worker import IllegalTransition, Slot, State, Step, Worker
from a2wsgi_mp.pool.zygote import PreloadFailed, ZygoteLost

from .serverproc import until

#: Above any Linux pid_max (2**22): no fake pid can name a real process.
FAKE_PIDS = itertools.count(5_000_000)


class FakeTimer:
    def __init__(self, clock: "FakeClock", when: float, callback: Callable[..., Any], args: tuple) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time that moves only when the test says so; due timers run in order."""

    def __init__(self) -> None:
        self.time = 1000.0
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.time

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self, self.time + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        end = self.time + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            self.time = max(self.time, when)
            if not timer.cancelled:
                timer.callback(*timer.args)
        self.time = end


class FakeProc:
    """A worker process behind the supervisor's sockets."""

    def __init__(self, world: "World", zygote: "FakeZygote", worker_id: int, socks: list[socket.socket]) -> None:
        self.world, self.zygote, self.worker_id = world, zygote, worker_id
        self.pid = next(FAKE_PIDS)
        self.socks = [s.dup() for s in socks]  # (the supervisor's zygote handle closes what it sends)
        self.alive = True
        self.hung_up = False
        #: Stuck in a request: does not notice a hang-up.
        self.stuck = False
        #: Stands for the process's pidfd: readable (EOF) once it exits.
        self.pidfd, self._pidfd_w = os.pipe()
        self.signals: list[int] = []
        loop = asyncio.get_running_loop()
        for s in self.socks:
            s.setblocking(False)
            loop.add_reader(s.fileno(), self._readable, s)

    def _readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the front hung up: an idle worker exits
            self.hung_up = True
            if not self.stuck:
                self.exit(0)

    def send(self, frame: bytes, slots: "list[int] | None" = None) -> None:
        for i in slots if slots is not None else range(len(self.socks)):
            self.socks[i].sendall(frame)

    def ready(self) -> None:
        self.send(protocol.encode_ready(self.pid))

    def boot_error(self, message: str = "ImportError: boom") -> None:
        self.send(protocol.encode_boot_error(message), [0])
        worker = self.world.sup.workers[self.worker_id]
        # Exit once the front has read it (else the zygote's report of the exit may come first).
        asyncio.ensure_future(self._exit_when(lambda: worker.state is not State.BOOTING, 1 << 8))

    async def _exit_when(self, condition: Callable[[], bool], status: int) -> None:
        await until(condition, 5)
        self.exit(status)

    def exit(self, status: int) -> None:
        """The process ends (``status``: a raw wait status); its zygote reports it."""
        if not self.alive:
            return
        self.alive = False
        loop = asyncio.get_running_loop()
        for s in self.socks:
            loop.remove_reader(s.fileno())
            s.close()
        os.close(self._pidfd_w)
        if self.zygote.running:
            self.zygote.on_exited(self.pid, status)


class FakeHandle:
    """Stands for :class:`~a2wsgi_mp.pool.processes.ProcessHandle`: signals reach a FakeProc."""

    def __init__(self, world: "World", pid: int, generation: int) -> None:
        self.world, self.pid, self.generation = world, pid, generation
        self.fd = os.dup(world.procs[pid].pidfd)
        self.exited = False

    def signal(self, sig: int) -> None:
        proc = self.world.procs.get(self.pid)
        if proc is not None:
            proc.signals.append(sig)
            if sig == signal.SIGKILL:
                proc.exit(sig)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FakeZygote:
    """Stands for :class:`~a2wsgi_mp.pool.zygote.Zygote`: "forks" FakeProcs."""

    generations = itertools.count(1)

    def __init__(self, world: "World", app_ref: Any, start_method: str, on_exited: Callable[[int, int], None],
                 on_lost: Callable[[], None], preload: bool = False, boot_timeout: float = 60.0,
                 worker_options: dict[str, Any] | None = None) -> None:
        self.world, self.on_exited, self.on_lost = world, on_exited, on_lost
        self.pid = next(FAKE_PIDS)
        self.generation = 0
        self.running = False
        world.zygotes.append(self)

    async def start(self) -> None:
        if self.world.preload_fails:
            raise PreloadFailed("SyntaxError: deploy gone wrong")
        self.generation = next(self.generations)
        self.running = True

    async def stop(self) -> None:
        self.running = False

    async def wait_running(self) -> None:
        pass

    async def spawn(self, worker_id: int, socks: list[socket.socket]) -> int:
        try:
            if not self.running or self.world.zygote_dies_on_spawn:
                self.running = False
                raise ZygoteLost("the zygote exited")
            proc = FakeProc(self.world, self, worker_id, socks)
        finally:
            for s in socks:
                s.close()
        self.world.procs[proc.pid] = proc
        self.world.spawned.append(proc)
        return proc.pid


class World:
    """Everything outside the supervisor, and the supervisor itself."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("workers", 2)
        options.setdefault("threads", 1)
        self.config = PoolConfig.from_kwargs(options)
        self.clock = FakeClock()
        self.procs: dict[int, FakeProc] = {}
        self.spawned: list[FakeProc] = []
        self.zygotes: list[FakeZygote] = []
        self.preload_fails = False
        self.zygote_dies_on_spawn = False
        self.dispatcher = Dispatcher(
            "tests.apps.none:app", self.config,
            clock=self.clock,
            zygote=lambda *a, **k: FakeZygote(self, *a, **k),
            process_handle=lambda pid, gen: FakeHandle(self, pid, gen),
        )
        self.sup = self.dispatcher.supervisor
        self.counters = self.dispatcher.counters

    @property
    def offered(self) -> list[Slot]:
        """The dispatcher's idle slots."""
        return list(self.dispatcher._idle)

    # views
    def live(self, state: State | None = None) -> list[Worker]:
        return [w for w in self.sup.workers.values() if (w.live if state is None else w.state is state)]

    def proc(self, worker: Worker) -> FakeProc:
        return next(p for p in self.spawned if p.worker_id == worker.id)

    def booting_procs(self) -> list[FakeProc]:
        return [p for p in self.spawned if p.alive and self.sup.workers.get(p.worker_id) is not None
                and self.sup.workers[p.worker_id].state is State.BOOTING]

    async def spawns(self, n: int) -> list[FakeProc]:
        """Wait for the zygote to have started ``n`` workers in all; the newest ones since ``n``."""
        assert await until(lambda: len(self.spawned) >= n, 5), f"{len(self.spawned)} of {n} workers spawned"
        await asyncio.sleep(0)
        assert len(self.spawned) == n, f"{len(self.spawned)} workers spawned, expected {n}"
        return self.spawned

    async def ready(self, procs: list[FakeProc]) -> None:
        for p in procs:
            p.ready()
        ids = {p.worker_id for p in procs}
        assert await until(lambda: all(self.sup.workers[i].state is not State.BOOTING for i in ids), 5)

    async def start(self) -> None:
        task = asyncio.ensure_future(self.dispatcher.start())
        await self.ready((await self.spawns(self.config.workers))[-self.config.workers:])
        await task

    async def gone(self, worker: Worker) -> None:
        assert await until(lambda: worker.state is State.DEAD, 5), worker.state


def scenario(**options: Any) -> Callable[[Callable[[World], Coroutine[Any, Any, None]]], Callable[[], None]]:
    """Run the decorated ``async def test(world)`` in a fresh loop with a started supervisor."""

    def decorate(test: Callable[[World], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        def run() -> None:
            async def main() -> None:
                world = World(**options)
                await world.start()
                try:
                    await test(world)
                finally:
                    if not world.sup.stopping:
                        await world.sup.stop(0)
                    for p in world.spawned:
                        p.exit(0)
                        os.close(p.pidfd)

            asyncio.run(asyncio.wait_for(main(), 30))

        run.__name__ = test.__name__
        run.__doc__ = test.__doc__
        return run

    return decorate


# ------------------------------------------------------------------ the state machine


def test_an_illegal_step_names_the_worker_the_state_and_the_step() -> None:
    worker = Worker(7, 1, 0, 0, 0.0)
    worker.pid = 4242
    worker.step(Step.READY)
    with pytest.raises(IllegalTransition, match=r"worker 7 \(pid 4242\) is ready: 'boot error' is not allowed"):
        worker.step(Step.BOOT_ERROR)
    worker.step(Step.RETIRE)
    with pytest.raises(IllegalTransition, match="is retiring: 'ready'"):
        worker.step(Step.READY)
    assert worker.step(Step.EXIT) is State.DEAD
    with pytest.raises(IllegalTransition, match="is dead: 'exit'"):
        worker.step(Step.EXIT)


# ------------------------------------------------------------------ start, crash, back-off


@scenario(workers=2, threads=2)
async def test_start_offers_every_slot_once_all_workers_are_ready(world: World) -> None:
    assert len(world.live(State.READY)) == 2 and len(world.spawned) == 2
    assert len(world.offered) == 4 and world.sup.started


def test_start_raises_boot_failed_with_the_workers_error() -> None:
    async def main() -> None:
        world = World(workers=2)
        task = asyncio.ensure_future(world.dispatcher.start())
        procs = await world.spawns(2)
        procs[0].boot_error("ImportError: no module named nowhere")
        with pytest.raises(BootFailed, match="no module named nowhere"):
            await task
        await world.sup.stop(0)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_failed_preload_at_start_is_boot_failed() -> None:
    async def main() -> None:
        world = World(workers=1)
        world.preload_fails = True
        with pytest.raises(BootFailed, match="deploy gone wrong"):
            await world.dispatcher.start()
        assert not world.spawned

    asyncio.run(asyncio.wait_for(main(), 30))


@scenario(workers=2)
async def test_a_crash_is_replaced_at_once_and_its_request_is_lost(world: World) -> None:
    worker = world.live()[0]
    slot = world.dispatcher.take_idle()
    assert slot is not None and slot.worker is worker
    exchange = world.dispatcher.begin(slot)
    world.proc(worker).exit(signal.SIGSEGV)
    await world.gone(worker)
    assert slot not in world.offered and slot.exchange is None
    assert exchange.finished and isinstance(exchange._events[-1], Lost)
    assert "killed by SIGSEGV" in exchange._events[-1].reason  # type: ignore[union-attr]
    (fresh,) = (await world.spawns(3))[2:]  # no back-off for a worker that had served
    await world.ready([fresh])
    assert len(world.live(State.READY)) == 2 and world.counters["respawned"] == 1


@scenario(workers=2)
async def test_boot_failures_back_off_doubling_and_answer_hopeless(world: World) -> None:
    for worker in world.live():
        world.proc(worker).exit(9)
    fresh = (await world.spawns(4))[2:]
    for p in fresh:
        p.boot_error()
    assert await until(lambda: not world.sup.workers, 5)
    assert world.sup.hopeless
    assert world.sup.boot_failures == 2 and world.sup.retry_after() == 1
    # held for backoff(2) = 0.2 s: nothing before, both at once after
    world.clock.advance(0.19)
    await asyncio.sleep(0.05)
    assert len(world.spawned) == 4
    world.clock.advance(0.02)
    again = (await world.spawns(6))[4:]
    for p in again:
        p.boot_error()
    assert await until(lambda: world.sup.boot_failures == 4, 5)
    world.clock.advance(policies.backoff(4) - 0.01)  # 0.8 s
    await asyncio.sleep(0.05)
    assert len(world.spawned) == 6
    world.clock.advance(0.02)
    recovered = (await world.spawns(8))[6:]
    await world.ready(recovered)
    assert not world.sup.hopeless and world.sup.boot_failures == 0
    assert len(world.live(State.READY)) == 2


@scenario(workers=2)
async def test_a_spawn_lost_with_the_zygote_is_no_boot_failure(world: World) -> None:
    world.zygote_dies_on_spawn = True
    world.proc(world.live()[0]).exit(9)
    assert await until(lambda: len(world.sup.workers) == 1, 5)  # the unborn worker's connections closed
    assert world.sup.boot_failures == 0 and not world.sup.hopeless
    world.zygote_dies_on_spawn = False
    world.zygotes[0].running = True  # (restarted)
    world.clock.advance(policies.BACKOFF_MIN)  # a short pause, not the app's back-off
    await world.ready((await world.spawns(3))[2:])
    assert len(world.live(State.READY)) == 2 and world.counters["respawned"] == 2


# ------------------------------------------------------------------ one owner per request


@scenario(workers=1)
async def test_a_response_goes_to_its_exchange_and_its_end_frees_the_slot(world: World) -> None:
    (worker,) = world.live()
    slot = world.dispatcher.take_idle()
    assert slot is not None and not world.offered
    control: list[Any] = []  # what the connection hands the supervisor
    on_event = slot.pipe.on_event
    slot.pipe.on_event = lambda event: (control.append(event), on_event(event))  # type: ignore[assignment]
    exchange = world.dispatcher.begin(slot)
    assert slot.exchange is exchange and worker.busy == 1
    slot.pipe.send_request(exchange.rid, {"method": "GET"}, b"", 0)  # (the connection answers only what it sent)
    world.proc(worker).send(protocol.encode_usage(1234) + protocol.encode_start(exchange.rid, 200, [], b"hi", True))
    event = await asyncio.wait_for(exchange.next(), 5)
    assert isinstance(event, protocol.Start) and event.body == b"hi"
    assert [type(e) for e in control] == [protocol.Usage]  # the supervisor saw the control event only
    assert slot.exchange is None and world.offered == [slot]  # released on the last frame, on one path
    assert world.counters["served"] == 1 and worker.requests == 1 and worker.rss == 1234


@scenario(workers=1)
async def test_the_deadline_ends_the_request_and_replaces_its_worker(world: World) -> None:
    (worker,) = world.live()
    slot = world.dispatcher.take_idle()
    assert slot is not None
    exchange = world.dispatcher.begin(slot)
    slot.pipe.send_request(exchange.rid, {"method": "GET"}, b"", 0)
    exchange.feed(TIMED_OUT)  # (what the deadline sweep feeds)
    assert slot.exchange is None and slot not in world.offered
    assert worker.state is State.RETIRING and world.proc(worker).signals == [signal.SIGTERM]
    assert world.counters["killed"] == 1 and world.counters["served"] == 0
    # a late frame of the request that timed out reaches nobody's response
    world.proc(worker).send(protocol.encode_start(exchange.rid, 200, [], b"late", True))
    await world.spawns(2)
    assert [type(e) for e in exchange._events] == [type(TIMED_OUT)]


# ------------------------------------------------------------------ reload


@scenario(workers=2)
async def test_reload_retires_each_old_worker_once_a_fresh_one_is_ready(world: World) -> None:
    old = world.live()
    await world.sup.reload()
    fresh = (await world.spawns(4))[2:]
    assert all(w.state is State.READY for w in old)  # nothing retires before a replacement is ready
    await world.ready(fresh[:1])
    assert old[0].state in (State.RETIRING, State.DEAD) and old[1].state is State.READY  # the oldest first
    await world.ready(fresh[1:])
    assert all(w.state in (State.RETIRING, State.DEAD) for w in old)
    assert await until(lambda: all(world.proc(w).hung_up for w in old), 5)
    assert world.counters["recycled"] == 2 and len(world.live(State.READY)) == 2


@scenario(workers=2)
async def test_a_second_reload_supersedes_the_booting_replacements(world: World) -> None:
    await world.sup.reload()
    first = (await world.spawns(4))[2:]
    await world.sup.reload()
    second = (await world.spawns(6))[4:]
    assert all(world.sup.workers.get(p.worker_id) is None or world.sup.workers[p.worker_id].state is State.RETIRING
               for p in first)
    assert await until(lambda: all(p.hung_up for p in first), 5)
    await world.ready(second)
    assert len(world.live(State.READY)) == 2 and world.counters["recycled"] == 2  # superseded ones uncounted


@scenario(workers=2)
async def test_a_reload_during_back_off_starts_no_duplicate_worker(world: World) -> None:
    """The 0.2 defect: a back-off respawn landing during a reload doubled a worker."""
    crashed, survivor = world.live()
    world.proc(crashed).exit(9)
    (failing,) = (await world.spawns(3))[2:]
    failing.boot_error()
    assert await until(lambda: world.sup.boot_failures == 1, 5)
    await world.sup.reload()  # held: nothing starts yet
    await asyncio.sleep(0.05)
    assert len(world.spawned) == 3
    world.clock.advance(policies.backoff(1))
    fresh = (await world.spawns(5))[3:]  # exactly the two workers of the new code
    await asyncio.sleep(0.05)
    assert len(world.spawned) == 5
    await world.ready(fresh)
    assert await until(lambda: survivor.state is not State.READY, 5)
    assert sorted(w.id for w in world.live()) == sorted(p.worker_id for p in fresh)


@scenario(workers=2)
async def test_a_reload_whose_new_workers_cannot_load_is_given_up_once(world: World) -> None:
    """Without preload the new code is imported by the reload's workers: the first that fails
    gives the reload up (one error), the other leaves, the old workers serve on; no retry."""
    old = world.live()
    await world.sup.reload()
    fresh = (await world.spawns(4))[2:]
    with _caught("a2wsgi_mp.pool") as records:
        fresh[0].boot_error("SyntaxError: a bad deploy")
        assert await until(lambda: all(world.sup.workers.get(p.worker_id) is None for p in fresh), 5)
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(
        f"reload failed: worker {fresh[0].worker_id} (pid {fresh[0].pid}) could not load")
    assert "the old workers keep serving (2 ready)" in errors[0] and "SyntaxError: a bad deploy" in errors[0]
    assert world.live(State.READY) == old and all(w.epoch == world.sup.epoch for w in old)
    assert world.sup.boot_failures == 0 and not world.sup.hopeless
    world.clock.advance(30)  # no back-off retry of the bad code
    await asyncio.sleep(0.05)
    assert len(world.spawned) == 4
    await world.sup.reload()  # the next reload tries again
    await world.ready((await world.spawns(6))[4:])
    assert await until(lambda: all(w.state is not State.READY for w in old), 5)


@scenario(workers=1)
async def test_the_same_boot_error_again_is_one_short_line(world: World) -> None:
    (worker,) = world.live()
    world.proc(worker).exit(9)
    with _caught("a2wsgi_mp.pool") as records:
        (first,) = (await world.spawns(2))[1:]
        first.boot_error("Traceback ...\nImportError: gone")
        assert await until(lambda: world.sup.boot_failures == 1, 5)
        world.clock.advance(policies.backoff(1))
        (second,) = (await world.spawns(3))[2:]
        second.boot_error("Traceback ...\nImportError: gone")
        assert await until(lambda: world.sup.boot_failures == 2, 5)
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and "ImportError: gone" in errors[0]
    assert "ImportError" not in errors[1] and "the same error again (attempt 2); backing off" in errors[1]


@contextlib.contextmanager
def _caught(name: str) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@scenario(workers=1, preload=True)
async def test_a_failed_preload_on_reload_keeps_the_old_workers(world: World) -> None:
    world.preload_fails = True
    await world.sup.reload()
    assert len(world.spawned) == 1 and world.live(State.READY) and world.sup.epoch == 0
    world.preload_fails = False
    await world.sup.reload()
    assert world.sup.epoch == 1 and world.zygotes[-1].running and not world.zygotes[0].running
    await world.ready((await world.spawns(2))[1:])
    assert [w.epoch for w in world.live(State.READY)] == [1]


# ------------------------------------------------------------------ recycling


@scenario(workers=1, max_requests=3, max_requests_jitter=0)
async def test_recycling_by_requests_retires_between_requests(world: World) -> None:
    (worker,) = world.live()
    slot = worker.slots[0]
    assert world.sup.released(slot) and world.sup.released(slot)
    assert not world.sup.released(slot)  # the third: retire, hang up, replace
    assert worker.state is State.RETIRING and worker.retire_reason == "served 3 requests"
    await world.gone(worker)
    await world.ready((await world.spawns(2))[1:])
    assert world.counters["recycled"] == 1 and world.counters["respawned"] == 0


@scenario(workers=1, max_rss=100)
async def test_recycling_by_rss_reported_with_the_response(world: World) -> None:
    (worker,) = world.live()
    world.proc(worker).send(protocol.encode_usage(150 * 1024 * 1024))
    assert await until(lambda: worker.rss, 5)
    assert not world.sup.released(worker.slots[0])
    assert worker.retire_reason == "RSS 150 MiB > 100 MiB"
    await world.spawns(2)


@scenario(workers=2, max_lifetime=60)
async def test_recycling_by_lifetime_on_the_tick(world: World) -> None:
    busy, idle = world.live()
    busy.slots[0].reserved = True
    world.clock.advance(59)
    assert len(world.live(State.READY)) == 2
    world.clock.advance(2)
    assert busy.state is State.RETIRING and idle.state is State.RETIRING
    assert busy.retire_reason == "lived 61 s" and not world.proc(busy).hung_up  # busy: it finishes first
    fresh = (await world.spawns(4))[2:]
    busy.slots[0].reserved = False
    world.sup.unused(busy.slots[0])
    assert await until(lambda: world.proc(busy).hung_up, 5)
    await world.ready(fresh)


# ------------------------------------------------------------------ elastic


@scenario(workers=(1, 3), worker_idle_timeout=10)
async def test_elastic_grows_for_the_queue_and_shrinks_when_idle(world: World) -> None:
    assert len(world.live()) == 1  # starts at the minimum
    world.sup.queued(2)
    grown = (await world.spawns(3))[1:]
    world.sup.queued(3)  # covered by the two booting workers, and at the maximum anyway
    await asyncio.sleep(0.05)
    assert len(world.spawned) == 3 and world.counters["scaled_up"] == 2
    await world.ready(grown)
    first = world.live()[0]
    first.slots[0].reserved = True  # busy: not idle
    world.clock.advance(11)
    assert [w.state for w in world.sup.workers.values()] == [State.READY, State.RETIRING, State.RETIRING]
    assert world.sup.target == 1 and world.counters["scaled_down"] == 2
    await asyncio.sleep(0.05)
    assert len(world.spawned) == 3  # no replacement for a worker the pool shed


class _StandIn:
    """A fast path's stand-in for the dispatcher's future (headlimits.lean, pool.fastpath)."""

    done = staticmethod(bool)

    def __init__(self) -> None:
        self.slots: list[Slot] = []

    def set_result(self, slot: Slot) -> None:
        self.slots.append(slot)


@scenario(workers=(1, 3), worker_idle_timeout=10)
async def test_a_fast_request_that_queues_grows_an_elastic_pool(world: World) -> None:
    """take_or_wait tells the supervisor of its queue only in an elastic pool: there it must."""
    assert world.dispatcher.take_or_wait(_StandIn()) is not None  # the one idle slot
    queued = _StandIn()
    assert world.dispatcher.take_or_wait(queued) is None
    await world.spawns(2)
    assert world.counters["scaled_up"] == 1 and queued.slots == []


@scenario(workers=1)
async def test_a_fast_request_that_queues_in_a_fixed_pool_waits_for_its_slot(world: World) -> None:
    dispatcher = world.dispatcher
    slot = dispatcher.take_or_wait(_StandIn())
    assert slot is not None
    queued = _StandIn()
    assert dispatcher.take_or_wait(queued) is None and len(world.spawned) == 1
    dispatcher.give_back(slot)
    assert queued.slots == [slot] and world.counters["scaled_up"] == 0


# ------------------------------------------------------------------ kill, drain


@scenario(workers=1)
async def test_kill_replaces_at_once_then_sigkills_after_the_grace(world: World) -> None:
    (worker,) = world.live()
    worker.slots[0].reserved = True  # stuck in a request
    world.sup.kill(worker, "request exceeded the 1 s timeout")
    proc = world.proc(worker)
    assert proc.signals == [signal.SIGTERM] and world.counters["killed"] == 1
    await world.ready((await world.spawns(2))[1:])  # the replacement does not wait for the corpse
    world.clock.advance(KILL_GRACE)
    assert proc.signals == [signal.SIGTERM, signal.SIGKILL]
    await world.gone(worker)
    assert world.counters["respawned"] == 0


@scenario(workers=2)
async def test_drain_waits_for_requests_in_flight_then_hangs_up(world: World) -> None:
    busy, idle = world.live()
    busy.slots[0].reserved = True
    stop = asyncio.ensure_future(world.sup.stop(30))
    await asyncio.sleep(0.05)
    assert not stop.done() and world.proc(busy).alive
    busy.slots[0].reserved = False
    world.sup.unused(busy.slots[0])
    await stop
    assert world.proc(busy).hung_up and world.proc(idle).hung_up
    assert not world.zygotes[0].running and len(world.spawned) == 2


@scenario(workers=1)
async def test_drain_past_its_timeout_kills_the_busy_worker(world: World) -> None:
    (busy,) = world.live()
    busy.slots[0].reserved = True
    world.proc(busy).stuck = True
    await world.sup.stop(0.01)
    assert signal.SIGKILL in world.proc(busy).signals and not world.proc(busy).alive


# ------------------------------------------------------------------ the policies alone


def test_policies_are_pure_decisions() -> None:
    cfg = PoolConfig.from_kwargs(dict(workers=4, workers_min=1, workers_max=4, threads=2, max_requests=10,
                                      max_rss=100, max_lifetime=60, worker_idle_timeout=5))
    w = Worker(1, 2, 10, 0, 100.0)
    assert policies.recycle_reason(w, cfg, 150.0) is None
    w.requests = 10
    assert policies.recycle_reason(w, cfg, 150.0) == "served 10 requests"
    w.requests, w.rss = 0, 101 * policies.MIB
    assert policies.recycle_reason(w, cfg, 150.0) == "RSS 101 MiB > 100 MiB"
    w.rss = 0
    assert policies.recycle_reason(w, cfg, 161.0) == "lived 61 s"
    assert [policies.backoff(n) for n in (1, 2, 3, 10)] == [0.1, 0.2, 0.4, 10.0]
    assert policies.growth(cfg, target=1, booting_slots=0, queued=5) == 3  # ceil(5/2), at most 4 - 1
    assert policies.growth(cfg, target=2, booting_slots=4, queued=3) == 0
    idle = [Worker(i, 1, 0, 0, 0.0) for i in range(3)]
    for i, x in enumerate(idle):
        x.state, x.idle_since = State.READY, 10.0 - i
    assert policies.idle_surplus(cfg, 3, idle, 20.0) == [idle[2], idle[1]]  # longest idle first, down to 1
    assert policies.idle_surplus(cfg, 3, idle, 13.5) == [idle[2]]
    assert policies.idle_surplus(cfg, 1, idle, 99.0) == []


def test_no_log_error_from_a_quiet_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "a2wsgi_mp")

    async def main() -> None:
        world = World(workers=2)
        await world.start()
        await world.sup.reload()
        await world.ready((await world.spawns(4))[2:])
        await world.sup.stop(1)

    asyncio.run(asyncio.wait_for(main(), 30))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@scenario(workers=1)
async def test_a_slot_given_back_from_inside_its_offer_goes_on_to_the_next_waiter(world: World) -> None:
    """The fast paths' stand-ins for a future give a slot straight back when their client left
    while queued (Dispatcher.give_back, from inside set_result): hundreds of them in a row were
    hundreds of nested offers (a RecursionError that lost the answer in flight). Now the slot goes
    on, in one loop, to the first waiter that keeps it."""
    dispatcher = world.dispatcher
    slot = dispatcher.take_idle()
    assert slot is not None

    class Departed:
        def done(self) -> bool:
            return False

        def set_result(self, given: Slot) -> None:
            dispatcher.give_back(given)

    kept: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
    dispatcher._waiters.extend([Departed() for _ in range(5000)])  # type: ignore[misc]
    dispatcher._waiters.append(kept)
    dispatcher.give_back(slot)  # (its request ended without it: offered to the queue)
    assert kept.done() and kept.result() is slot and slot.reserved
    assert not dispatcher._waiters and not world.offered
