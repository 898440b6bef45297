"""Exchange: a response's frames on their way to the client — buffering, flow
control, and queued chunks coalesced into fewer, larger ASGI messages."""

from __future__ import annotations

import asyncio

from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.pool.exchange import COALESCE, HIGH_WATER, Exchange


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
