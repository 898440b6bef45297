"""Exchange: a response's frames on their way to the client — buffering, flow
control, and queued chunks coalesced into fewer, larger ASGI messages."""

from __future__ import annotations

import asyncio

from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.pool.exchange import COALESCE, HIGH_WATER, Exchange, TimedOut


class _Pipe:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False


class _Slot:
    def __init__(self) -> None:
        self.pipe = _Pipe()
        self.exchange: Exchange | None = None


def _exchange() -> tuple[Exchange, _Slot]:
    slot = _Slot()
    exchange = Exchange(7, slot)  # type: ignore[arg-type]
    slot.exchange = exchange
    return exchange, slot


async def _drain(exchange: Exchange) -> list[protocol.Event]:
    out = []
    while True:
        event = await exchange.next()
        out.append(event)
        if isinstance(event, (protocol.End, protocol.Abort)):
            return out


def test_queued_chunks_come_out_as_one_message_in_order() -> None:
    exchange, _ = _exchange()
    exchange.feed(protocol.Start(7, 200, [], b"", False))
    chunks = [bytes([i]) * 1000 for i in range(5)]
    for chunk in chunks:
        exchange.feed(protocol.Body(7, chunk))
    exchange.feed(protocol.End(7))
    events = asyncio.run(_drain(exchange))
    assert isinstance(events[0], protocol.Start)
    assert [type(e) for e in events[1:]] == [protocol.Body, protocol.End]
    assert events[1].data == b"".join(chunks)


def test_a_message_never_exceeds_the_coalescing_limit_and_nothing_is_lost() -> None:
    exchange, _ = _exchange()
    piece = b"x" * (64 * 1024)
    count = 2 * COALESCE // len(piece) + 3
    for _ in range(count):
        exchange.feed(protocol.Body(7, piece))
    exchange.feed(protocol.End(7))
    events = asyncio.run(_drain(exchange))
    bodies = [e.data for e in events if isinstance(e, protocol.Body)]
    assert all(len(b) <= COALESCE for b in bodies)
    assert len(bodies) == -(-count * len(piece) // COALESCE)  # as few as the limit allows
    assert sum(map(len, bodies)) == count * len(piece)
    assert isinstance(events[-1], protocol.End)


def test_a_chunk_alone_is_passed_through_uncopied() -> None:
    exchange, _ = _exchange()
    chunk = b"y" * 5000
    exchange.feed(protocol.Body(7, chunk))
    event = asyncio.run(exchange.next())
    assert event.data is chunk  # type: ignore[union-attr]


def test_reading_coalesced_chunks_releases_the_paused_worker() -> None:
    exchange, slot = _exchange()
    piece = b"z" * (64 * 1024)
    for _ in range(HIGH_WATER // len(piece) + 2):  # past the high-water mark, no spill allowed
        exchange.feed(protocol.Body(7, piece))
    assert slot.pipe.paused and slot.pipe.pauses == 1

    async def read_some() -> None:
        while slot.pipe.paused:
            await exchange.next()

    asyncio.run(asyncio.wait_for(read_some(), 5))
    assert not slot.pipe.paused


def test_a_time_out_jumps_the_queue_frees_the_spill_and_aborts_a_stuck_client() -> None:
    """Past the deadline nothing buffered is owed any more: TIMED_OUT comes first, the spill
    file is closed, the worker's connection reads on; the client's connection is aborted only
    if the relay is not waiting on the exchange (stuck in send())."""

    class _Transport:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    class _Cycle:
        def __init__(self) -> None:
            self.transport = _Transport()

        async def send(self, message: dict) -> None:  # uvicorn's send is a bound method of its cycle
            pass

    slot = _Slot()
    exchange = Exchange(7, slot, spill_limit=4 * HIGH_WATER)  # type: ignore[arg-type]
    slot.exchange = exchange
    cycle = _Cycle()
    exchange.client = cycle.send
    exchange.feed(protocol.Start(7, 200, [], b"", False))
    for _ in range(24):
        exchange.feed(protocol.Body(7, b"x" * (HIGH_WATER // 4)))  # memory, then the spill, then paused
    assert slot.pipe.paused and exchange._spill is not None
    exchange.time_out()
    assert exchange._spill is None and not slot.pipe.paused
    assert cycle.transport.aborted  # nobody was waiting on the exchange: the relay is stuck in send()

    async def first() -> object:
        return await exchange.next()

    assert isinstance(asyncio.run(first()), TimedOut)

    waiting = Exchange(8, _Slot())  # type: ignore[arg-type]
    other = _Cycle()
    waiting.client = other.send

    async def relay_waiting() -> object:
        task = asyncio.ensure_future(waiting.next())
        await asyncio.sleep(0)  # the relay now waits in next()
        waiting.time_out()
        return await task

    assert isinstance(asyncio.run(relay_waiting()), TimedOut)
    assert not other.transport.aborted


def test_a_time_out_cancels_a_stuck_relay_when_the_server_cannot_abort() -> None:
    """Under a server whose send() gives no transport (not uvicorn), the stuck relay is cancelled."""

    async def scenario() -> bool:
        slot = _Slot()
        exchange = Exchange(9, slot)  # type: ignore[arg-type]
        never = asyncio.Event()

        async def send(message: dict) -> None:  # a client that never drains
            await never.wait()

        async def relay() -> None:
            exchange.client = send
            exchange.relay = asyncio.current_task()
            await send({"type": "http.response.body"})

        task = asyncio.ensure_future(relay())
        await asyncio.sleep(0)  # stuck in send()
        exchange.time_out()
        try:
            await asyncio.wait_for(task, 5)
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(scenario())
