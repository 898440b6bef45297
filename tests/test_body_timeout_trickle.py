"""A body trickled in tiny pieces is read in batches (``pool/app.py`` ``_read_body``), one that
comes at any real pace is never held, and the body timeout still counts from the last piece."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from a2wsgi_mp.pool import app as pool_app
from a2wsgi_mp.pool.body_timeout import BodyReads
from a2wsgi_mp.pool.spool import Spool


class Client:
    """uvicorn's side of ``receive()``: whatever arrived since the last call, in one message."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.done = False
        self.arrived = asyncio.Event()
        self.calls = 0

    def feed(self, data: bytes, last: bool = False) -> None:
        self.buffer += data
        self.done = last
        self.arrived.set()

    async def receive(self) -> dict[str, Any]:
        self.calls += 1
        while not self.buffer and not self.done:
            self.arrived.clear()
            await self.arrived.wait()
        body, self.buffer = bytes(self.buffer), bytearray()
        return {"type": "http.request", "body": body, "more_body": not self.done}


def test_a_trickled_body_is_read_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_app, "TRICKLE_GAP", 0.005)
    monkeypatch.setattr(pool_app, "TRICKLE_WAIT", 0.05)
    client = Client()
    ok_spool: list[Any] = []

    async def main() -> None:
        spool = Spool(1 << 20)

        async def trickle() -> None:  # a byte every 10 ms, as a slow client would send them
            for i in range(40):
                await asyncio.sleep(0.01)
                client.feed(b"%d" % (i % 10), last=i == 39)

        feeder = asyncio.ensure_future(trickle())
        ok_spool.append(await pool_app._read_body(client.receive, spool, None))
        await feeder
        ok_spool.append(await spool.finish())

    asyncio.run(main())
    ok, body = ok_spool
    assert ok and body == b"0123456789" * 4  # every byte, in order
    # One read per byte without batching (40); with it about one per 50 ms (~9), whatever the pace.
    assert client.calls <= 20, client.calls


def test_pieces_that_come_at_pace_are_never_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_app, "TRICKLE_WAIT", 30.0)  # a hold would show as a hang (and a timeout)
    client = Client()
    pieces = [b"a" * 100, b"b" * 100, b"c" * 100]

    async def receive() -> dict[str, Any]:  # each piece already there when asked for
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    client.receive = receive  # type: ignore[method-assign]

    async def main() -> bool:
        return await asyncio.wait_for(pool_app._read_body(client.receive, Spool(1 << 20), None), 5)

    assert asyncio.run(main())


def test_a_few_small_pieces_over_a_slow_link_are_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short chunked body whose pieces come an RTT apart (Nagle) is no trickle: never batched."""
    monkeypatch.setattr(pool_app, "TRICKLE_GAP", 0.005)
    monkeypatch.setattr(pool_app, "TRICKLE_WAIT", 30.0)  # a hold would show as a timeout
    client = Client()

    async def main() -> bool:
        async def pieces() -> None:
            for i in range(pool_app.TRICKLE_STREAK):
                await asyncio.sleep(0.02)
                client.feed(b"{}" if i < pool_app.TRICKLE_STREAK - 1 else b"", last=i == pool_app.TRICKLE_STREAK - 1)

        feeder = asyncio.ensure_future(pieces())
        ok = await asyncio.wait_for(pool_app._read_body(client.receive, Spool(1 << 20), None), 5)
        await feeder
        return ok

    assert asyncio.run(main())


def test_the_body_timeout_counts_from_the_last_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that trickled then stopped is cancelled about ``timeout`` after its last piece (the
    batching wait, at most a quarter of the timeout, is not a read and does not restart it)."""
    reads = BodyReads(0.4)
    monkeypatch.setattr(pool_app, "TRICKLE_GAP", 0.005)
    client = Client()
    result: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        async def trickle() -> None:  # enough pieces for the batching to begin
            for _ in range(pool_app.TRICKLE_STREAK + 2):
                await asyncio.sleep(0.02)
                client.feed(b"x")
            result["last_piece"] = loop.time()

        feeder = asyncio.ensure_future(trickle())
        try:
            await pool_app._read_body(client.receive, Spool(1 << 20), None, reads, task)
        except asyncio.CancelledError:
            result["cancelled_at"] = loop.time()
            result["ours"] = reads.timed_out(task)
            task.uncancel()
        await feeder
        reads.close()

    asyncio.run(main())
    assert result["ours"]
    # The sweep runs every timeout/4: cancelled between timeout and timeout + a tick after the last piece.
    late = result["cancelled_at"] - result["last_piece"]
    assert 0.4 - 0.05 <= late <= 0.4 + reads.tick + 0.2, late


def test_pieces_the_request_waited_for_are_not_waited_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny pieces that come further apart than half the batching wait (a slow trickle, or the
    batches the protocol's gate holds, ``headlimits/trickle.py``) are taken as they come: waiting
    before the next read would batch nothing and only add a timer and a delay."""
    monkeypatch.setattr(pool_app, "TRICKLE_GAP", 0.005)
    monkeypatch.setattr(pool_app, "TRICKLE_WAIT", 0.05)
    sleeps: list[float] = []
    real_sleep = pool_app._sleep

    async def counted(loop: asyncio.AbstractEventLoop, delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(loop, delay)

    monkeypatch.setattr(pool_app, "_sleep", counted)
    client = Client()
    pieces = 3 * pool_app.TRICKLE_STREAK

    async def main() -> tuple[bool, bytes]:
        async def trickle() -> None:  # a piece every 0.1 s: twice the wait, four times its half
            for i in range(pieces):
                await asyncio.sleep(0.1)
                client.feed(b"%d" % (i % 10), last=i == pieces - 1)

        spool = Spool(1 << 20)
        feeder = asyncio.ensure_future(trickle())
        ok = await asyncio.wait_for(pool_app._read_body(client.receive, spool, None), 10)
        await feeder
        return ok, await spool.finish() or b""

    ok, body = asyncio.run(main())
    assert ok and body == b"".join(b"%d" % (i % 10) for i in range(pieces))  # every byte, in order
    # Before: a wait before every read once the streak began (2 * STREAK of them here).
    assert len(sleeps) <= 2, sleeps
