"""The worker's writer of a direct stream (``workers/direct.py``) on a real socket pair:
what it sends when the reader keeps up, and when the reader stops."""

from __future__ import annotations

import socket
import threading
import time

from a2wsgi_mp.workers import direct


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


def test_everything_goes_when_the_reader_keeps_up() -> None:
    ours, theirs = _pair()
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB: far more than the socket buffers hold
    got = bytearray()

    def read() -> None:
        while len(got) < len(payload):
            chunk = theirs.recv(1 << 20)
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert direct._send_all(ours, [b"head:", memoryview(payload)]) is None
        reader.join(30)
        assert bytes(got) == b"head:" + payload
    finally:
        ours.close()
        theirs.close()


def test_a_reader_that_stops_gets_what_fit_after_the_patience() -> None:
    ours, theirs = _pair()
    payload = bytes(8 * 1024 * 1024)
    try:
        t0 = time.monotonic()
        sent = direct._send_all(ours, [payload])
        waited = time.monotonic() - t0
        assert sent is not None and 0 < sent < len(payload)  # the socket buffers' worth, then it gave up
        assert waited >= direct.PATIENCE * 0.9  # it waited for room before giving the rest back
        theirs.setblocking(False)
        received = 0
        while True:
            try:
                chunk = theirs.recv(1 << 20)
            except BlockingIOError:
                break
            received += len(chunk)
        assert received == sent
    finally:
        ours.close()
        theirs.close()


def test_the_client_socket_stays_non_blocking() -> None:
    """O_NONBLOCK is shared with the front's descriptor of the same socket: never cleared."""
    ours, theirs = _pair()
    try:
        writer = direct.ClientWriter(ours.detach(), chunked=False)
        assert writer.sock is not None and writer.sock.getblocking() is False and writer.sock.gettimeout() == 0.0
        writer.close()
    finally:
        theirs.close()


def test_a_piece_the_reader_stops_inside_leaves_its_rest_for_the_front() -> None:
    """One piece (what a download's chunk is) that fills the socket: what did not go is the
    writer's ``tail``, for the front to send; nothing is lost or sent twice."""
    ours, theirs = _pair()
    piece = bytes(range(256)) * 1024  # 256 KiB, one PIECE: more than the socket pair buffers
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        writer = direct.ClientWriter(ours.detach(), chunked=False)
        rest = writer.write(piece)
        assert rest is not None and len(rest) == 0 and writer.sock is None and not writer.gone
        assert 0 < len(writer.tail) < len(piece)
        theirs.setblocking(False)
        got = bytearray()
        while True:
            try:
                chunk = theirs.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            got.extend(chunk)
        assert bytes(got) + writer.tail == piece
    finally:
        theirs.close()


def test_a_piece_that_goes_whole_leaves_nothing() -> None:
    ours, theirs = _pair()
    try:
        writer = direct.ClientWriter(ours.detach(), chunked=False)
        assert writer.write(b"x" * 1000) is None and writer.written == 1000 and writer.tail == b""
        assert theirs.recv(2000) == b"x" * 1000
        writer.close()
    finally:
        theirs.close()
