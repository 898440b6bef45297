"""The request-timeout sweep: fires after the timeout (never before), only for
requests still pending, and leaves an idle pool without wake-ups."""

from __future__ import annotations

import asyncio
import time

from a2wsgi_mp.pool.deadlines import Deadlines
from a2wsgi_mp.pool.exchange import TIMED_OUT, TimedOut

from .serverproc import until


class _Probe:
    """Stands in for an Exchange: records when the sweep times it out."""

    def __init__(self) -> None:
        self.fed: list[object] = []
        self.at: float | None = None

    def time_out(self) -> None:
        self.fed.append(TIMED_OUT)
        self.at = time.monotonic()


def test_times_out_late_requests_only_and_disarms() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(0.2)
        late, done = _Probe(), _Probe()
        t0 = time.monotonic()
        deadlines.add(late)  # type: ignore[arg-type]
        deadlines.add(done)  # type: ignore[arg-type]
        assert deadlines.armed and deadlines.pending == 2
        deadlines.discard(done)  # type: ignore[arg-type]  # answered in time
        assert await until(lambda: late.fed, 10.0), "no timeout fed in time"
        assert isinstance(late.fed[0], TimedOut) and len(late.fed) == 1
        assert late.at is not None and late.at - t0 >= 0.2  # never early
        assert await until(lambda: not deadlines.armed, 10.0)  # nothing pending: no more sweeps
        assert done.fed == [] and deadlines.pending == 0
        deadlines.add(done)  # type: ignore[arg-type]  # re-arms on demand
        assert deadlines.armed
        deadlines.close()
        assert not deadlines.armed and deadlines.pending == 0

    asyncio.run(scenario())


def test_tick_is_a_twentieth_of_the_timeout_at_most_half_a_second() -> None:
    assert Deadlines(1.0).tick == 0.05
    assert Deadlines(30.0).tick == 0.5
