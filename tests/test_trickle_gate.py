"""The protocol's trickle gate (``headlimits/trickle.py``): a body trickled in tiny pieces wakes the
front in batches (``SO_RCVLOWAT``), one ticker opens the gated connections, nothing is lost or
reordered, a gated client's disconnect is seen at once, and ``body_timeout`` still holds.

The end-to-end tests run the CLI (httptools and h11) and a raw-socket client, and see the gate from
outside: while it is closed, the server's socket holds the client's bytes unread (its receive queue
in ``/proc/net/tcp``), which never lasts without the gate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from a2wsgi_mp.headlimits import trickle
from a2wsgi_mp.headlimits.trickle import HOLD, LOWAT, MIN_HOLD, SLICES, Ticker, TrickleGate

from .serverproc import HOST, Server

# ------------------------------------------------------------------ the gate, on a stand-in transport


class Sock:
    def __init__(self, family: int = socket.AF_INET) -> None:
        self.family = family
        self.lowat = 1
        self.opened: list[float] = []  # when SO_RCVLOWAT went back to 1

    def setsockopt(self, level: int, name: int, value: int) -> None:
        assert (level, name) == (socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        self.lowat = value
        if value == 1:
            self.opened.append(time.monotonic())


class Transport:
    def __init__(self, sock: Sock | None) -> None:
        self.sock = sock
        self.closing = False

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def is_closing(self) -> bool:
        return self.closing


class Proto(TrickleGate):
    def __init__(self, loop: asyncio.AbstractEventLoop, state: Any, hold: float,
                 sock: Sock | None = None) -> None:
        self.loop = loop
        self.sock = Sock() if sock is None else sock
        self.transport = Transport(self.sock)  # type: ignore[assignment]
        self.config = SimpleNamespace(_a2wsgi_mp_trickle_hold=hold)
        self.app = None
        self.server_state = state

    @property
    def closed(self) -> bool:
        """The gate is closed: the socket wakes no one below LOWAT bytes."""
        return self.sock.lowat == LOWAT


@pytest.fixture
def every_read_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trickle, "GAP", -1.0)  # (each read counts as slow, whatever the clock says)


def _run(main: Callable[[asyncio.AbstractEventLoop], Any]) -> Any:
    async def wrapper() -> Any:
        return await main(asyncio.get_running_loop())

    return asyncio.run(wrapper())


def test_tiny_slow_reads_close_the_gate_and_the_ticker_opens_it(every_read_slow: None) -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> tuple[list[bool], float, bool]:
        p = Proto(loop, SimpleNamespace(), hold=0.05)
        closed = []
        for _ in range(trickle.STREAK):
            p._body_read(6)
            closed.append(p.closed)
        t0 = time.monotonic()
        await asyncio.wait_for(_until(lambda: not p.closed), 5)
        return closed, time.monotonic() - t0, p._gated

    closed, waited, still = _run(main)
    assert closed == [False] * (trickle.STREAK - 1) + [True]  # the STREAK-th tiny read closes it
    assert 0.05 - 0.05 / SLICES - 0.01 <= waited < 2, waited  # ~hold later (slack for a busy machine)
    assert not still


def test_a_large_or_fast_read_never_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> tuple[bool, bool]:
        p = Proto(loop, SimpleNamespace(), hold=0.05)
        monkeypatch.setattr(trickle, "GAP", -1.0)
        for _ in range(3 * trickle.STREAK):
            p._body_read(trickle.STREAK - 1)
            p._body_read(trickle.PIECE + 1)  # a read the size of a real upload's breaks the streak
        large = p.closed
        monkeypatch.setattr(trickle, "GAP", 3600.0)  # every read follows the last closely
        for _ in range(3 * trickle.STREAK):
            p._body_read(1)
        return large, p.closed

    assert _run(main) == (False, False)


def test_only_a_tcp_socket_is_gated_and_a_closed_one_is_left_alone(every_read_slow: None) -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> tuple[bool, bool, list[float]]:
        state = SimpleNamespace()
        unix = Proto(loop, state, hold=0.05, sock=Sock(socket.AF_UNIX))
        for _ in range(trickle.STREAK):
            unix._body_read(1)
        closing = Proto(loop, state, hold=0.05)
        for _ in range(trickle.STREAK):
            closing._body_read(1)
        closing.transport.closing = True  # type: ignore[attr-defined]
        ticker = state._a2wsgi_mp_trickle_ticker
        await asyncio.wait_for(_until(lambda: not ticker.queue), 5)
        return unix._gated or unix.sock.lowat != 1, closing._gated, closing.sock.opened

    unix_gated, closing_gated, opened = _run(main)
    assert not unix_gated and not closing_gated
    assert opened == []


def test_the_end_of_the_body_opens_the_gate_at_once(every_read_slow: None) -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> tuple[bool, bool, int]:
        p = Proto(loop, SimpleNamespace(), hold=3600.0)
        for _ in range(trickle.STREAK):
            p._body_read(1)
        closed = p.closed
        p._trickle_end()
        return closed, p.closed, p._trickle_streak

    closed, still, streak = _run(main)
    assert closed and not still and streak == 0


def test_one_ticker_opens_every_gate_about_a_hold_after_it_closed(every_read_slow: None) -> None:
    hold = 0.2

    async def main(loop: asyncio.AbstractEventLoop) -> tuple[list[float], int]:
        state = SimpleNamespace()
        protos, closed_at = [], []
        timers = 0
        for i in range(40):  # gated over half the hold
            p = Proto(loop, state, hold)
            for _ in range(trickle.STREAK):
                p._body_read(1)
            protos.append(p)
            closed_at.append(time.monotonic())
            ticker: Ticker = state._a2wsgi_mp_trickle_ticker
            timers = max(timers, int(ticker.handle is not None))
            if i % 4 == 3:
                await asyncio.sleep(hold / 20)  # (the clients' pace: the gates close over time)
        await asyncio.wait_for(_until(lambda: not any(p.closed for p in protos)), 5)
        return [p.sock.opened[0] - t for p, t in zip(protos, closed_at, strict=True)], timers

    held, timers = _run(main)
    assert timers == 1
    step = hold / SLICES
    assert min(held) >= hold - step / 2 - 0.01, held  # never before its time (within half a tick)
    assert max(held) < hold + 2.0, held  # and about then (slack for a busy machine)


def test_the_hold_grows_with_the_gated_connections(monkeypatch: pytest.MonkeyPatch, every_read_slow: None) -> None:
    """MIN_HOLD while few are gated; past MIN_HOLD * OPENS gated connections the hold grows so the
    gates open OPENS times a second in all, up to the longest hold; deadlines never go back."""
    monkeypatch.setattr(trickle, "OPENS", 100.0)

    async def main(loop: asyncio.AbstractEventLoop) -> tuple[list[float], list[float], float]:
        state = SimpleNamespace()
        holds = []
        for i in range(400):
            p = Proto(loop, state, hold=2.0)
            ticker: Ticker = state._a2wsgi_mp_trickle_ticker if i else p._ticker()
            if i in (0, 10, 50, 150, 199, 300, 399):
                holds.append(ticker.hold())
            for _ in range(trickle.STREAK):
                p._body_read(1)
        deadlines = [at for at, _ in ticker.queue]
        short = Ticker(loop, 0.25)  # (a short body_timeout: the longest hold is below MIN_HOLD)
        short.queue.extend((0.0, Proto(loop, SimpleNamespace(), 0.25)) for _ in range(1000))
        return holds, deadlines, short.hold()

    holds, deadlines, short = _run(main)
    assert holds == [trickle.MIN_HOLD, trickle.MIN_HOLD, trickle.MIN_HOLD, 1.5, 1.99, 2.0, 2.0]
    assert deadlines == sorted(deadlines) and len(deadlines) == 400
    assert short == 0.25


def test_the_hold_is_at_most_a_quarter_of_the_body_timeout() -> None:
    from a2wsgi_mp.pool.app import WSGIPool

    pool = WSGIPool("tests.apps.core_app:app", workers=1, body_timeout=1.0)
    assert trickle.hold_for(SimpleNamespace(), SimpleNamespace(app=pool)) == 0.25
    assert trickle.hold_for(SimpleNamespace(), object()) == HOLD  # (not a pool: the default)


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ end to end

HEAD = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n")
#: The client's pace: a byte every 40 ms (slower than the gate's GAP, as a trickler's).
PACE = 0.04
#: The servers' body timeout, and so their gate's hold for one connection (MIN_HOLD, at most a quarter of it).
BODY_TIMEOUT = 2.0
E2E_HOLD = min(MIN_HOLD, HOLD, BODY_TIMEOUT / 4)


def _server_socket(port: int, client_port: int) -> tuple[int, int] | None:
    """(state, receive queue bytes) of the server's end of the connection from ``client_port``."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
                return int(state, 16), int(queues.split(":")[1], 16)
    return None


#: Pieces the server must hold unread at once for its gate to count as closed: a busy machine may
#: leave a piece or two unread for a few ms, never four sent PACE apart (160 ms).
UNREAD = 4


def _trickle_until_gated(s: socket.socket, port: int, sent: bytearray, limit: int = 100) -> None:
    """Send a byte every PACE until the server holds UNREAD pieces unread (its gate is closed)."""
    client_port = s.getsockname()[1]
    for i in range(limit):
        piece = b"%d" % (i % 10)
        s.sendall(b"1\r\n" + piece + b"\r\n")
        sent += piece
        deadline = time.monotonic() + PACE
        while time.monotonic() < deadline:  # (the pace, spent watching the server's socket)
            seen = _server_socket(port, client_port)
            if seen is not None and seen[1] >= UNREAD * len(b"1\r\nx\r\n"):
                return
            time.sleep(0.002)
    raise AssertionError(f"the server read each of {limit} pieces as it came: no gate")


def _lowat_gates_poll() -> bool:
    """This kernel keeps a TCP socket unreadable below its SO_RCVLOWAT, and /proc/net/tcp shows
    the receive queue (how these tests see a gate from outside).  Asked of the kernel, not assumed:
    a sandboxed or emulated one (gVisor...) may lack either, and the gate then simply never holds."""
    import select

    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=5) as c:
            server_side, _ = listener.accept()
            with server_side:
                try:
                    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 64)
                except OSError:
                    return False
                c.sendall(b"x" * 10)
                deadline = time.monotonic() + 2
                seen = None
                while time.monotonic() < deadline:  # the 10 bytes queued (loopback: at once)
                    try:
                        seen = _server_socket(listener.getsockname()[1], c.getsockname()[1])
                    except OSError:
                        return False
                    if seen is not None and seen[1] == 10:
                        break
                    time.sleep(0.002)
                if seen is None or seen[1] != 10:
                    return False
                held = not select.select([server_side], [], [], 0.05)[0]
                server_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
                return held and bool(select.select([server_side], [], [], 1.0)[0])


@pytest.fixture(scope="module")
def gating_kernel() -> None:
    if not _lowat_gates_poll():
        pytest.skip("this kernel does not gate poll by SO_RCVLOWAT (or shows no /proc/net/tcp)")


@pytest.fixture(params=["httptools", "h11"])
def server(request: pytest.FixtureRequest, gating_kernel: None) -> Any:
    srv = Server.cli("tests.apps.core_app:app", "--workers", "1", "--no-access-log", "--http", request.param,
                     "--body-timeout", f"{BODY_TIMEOUT:g}", ready_path="/hello")
    with srv:
        yield srv


def test_a_trickled_body_is_gated_and_arrives_whole_and_in_order(server: Server) -> None:
    sent = bytearray()
    with socket.create_connection((HOST, server.port), timeout=10) as s:
        s.sendall(HEAD)
        _trickle_until_gated(s, server.port, sent)
        for i in range(10):  # more after the gate closed (read in batches)
            s.sendall(b"2\r\n%02d\r\n" % i)
            sent += b"%02d" % i
            time.sleep(PACE)  # (the client's pace, not a wait on the server)
        s.sendall(b"0\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply
    got = json.loads(body)
    assert got["size"] == len(sent) and got["sha256"] == hashlib.sha256(bytes(sent)).hexdigest()


def test_a_gated_client_that_leaves_is_seen_at_once(server: Server) -> None:
    """A FIN wakes the front whatever the low-water mark: the gate does not delay a disconnect."""
    with socket.create_connection((HOST, server.port), timeout=10) as s:
        s.sendall(HEAD)
        _trickle_until_gated(s, server.port, bytearray())
        client_port = s.getsockname()[1]
        s.shutdown(socket.SHUT_WR)  # FIN: the server's socket is in CLOSE_WAIT until it reads the EOF
        left = time.monotonic()
        deadline = left + 10
        while time.monotonic() < deadline:
            seen = _server_socket(server.port, client_port)
            if seen is None or seen[0] != 0x08:  # (gone, or LAST_ACK: the front closed its end)
                break
            time.sleep(0.002)
        noticed = time.monotonic() - left
    # At once: well under the hold (0.5 s here), with slack for a busy machine.
    assert noticed < E2E_HOLD * 0.8, noticed


def test_a_gated_body_that_stops_gets_408_after_the_body_timeout(server: Server) -> None:
    with socket.create_connection((HOST, server.port), timeout=15) as s:
        s.sendall(HEAD)
        _trickle_until_gated(s, server.port, bytearray())
        stopped = time.monotonic()
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        waited = time.monotonic() - stopped
    assert reply.startswith(b"HTTP/1.1 408"), reply
    # body_timeout from the last piece; its sweep ticks every timeout / 4, and the last piece may
    # reach the pool a hold (and a tick) late.
    assert BODY_TIMEOUT - 0.1 <= waited < BODY_TIMEOUT * 1.25 + E2E_HOLD * (1 + 1 / SLICES) + 1.5, waited
