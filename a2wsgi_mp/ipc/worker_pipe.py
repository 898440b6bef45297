"""The worker's end of the socketpair transport: a plain blocking socket.

Blocking is the point in a worker: a thread waits for its next request, and a
full socket buffer (the client reads slowly) simply makes it wait in ``send``.
The transport only moves bytes and descriptors; every rule of the
conversation (the ring, the FILE handshake, CANCEL, REPORT) is its
:class:`~a2wsgi_mp.ipc.worker_connection.WorkerConnection`'s.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Iterable

from . import protocol
from .fds import ANCILLARY, unpack_fds
from .worker_connection import WorkerConnection

_RECV_SIZE = 256 * 1024
#: Plain ints: ``int & socket.MSG_CTRUNC`` runs enum.IntFlag's Python ``__rand__`` on every read.
_MSG_CTRUNC = int(socket.MSG_CTRUNC)


class PeerGone(Exception):
    """The front closed the connection (or died)."""


class WorkerPipe:
    """The worker's end of one connection: blocking receive, gathered sends."""

    def __init__(self, sock: socket.socket, rss: Callable[[], int] | None = None) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.conn = WorkerConnection(rss)
        # One receive buffer for the connection's life.  ``recvmsg(256 KiB)``
        # allocated (mmap), shrank (mremap) and freed (munmap) 256 KiB on every
        # read: three syscalls and page faults a request.
        self._rbuf = memoryview(bytearray(_RECV_SIZE))
        self._rbufs = [self._rbuf]  # (recvmsg_into's list of buffers, made once)

    # ------------------------------------------------------------ receiving

    def fill(self, flags: int = 0) -> bool:
        """Read once into the connection; False if nothing could be read without blocking."""
        try:
            nbytes, ancdata, msg_flags = self._recv(flags)
        except BlockingIOError:
            return False
        self._received(nbytes, ancdata, msg_flags)
        return True

    def _recv(self, flags: int = 0) -> tuple[int, list, int]:
        """One ``recvmsg_into`` into the receive buffer: (bytes, ancillary data, flags); a reset
        connection reads as EOF."""
        try:
            nbytes, ancdata, msg_flags, _addr = self.sock.recvmsg_into(self._rbufs, ANCILLARY, flags)
        except (ConnectionResetError, BrokenPipeError):
            return 0, [], 0
        return nbytes, ancdata, msg_flags

    def _received(self, nbytes: int, ancdata: list, msg_flags: int) -> None:
        """What one ``recvmsg_into`` brought: into the connection."""
        fds = unpack_fds(ancdata) if ancdata else ()
        if msg_flags & _MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise protocol.ProtocolError("file descriptors were truncated in transit (more than SCM_MAX_FD)")
        self.conn.receive_data(self._rbuf[:nbytes], fds)  # (decoded from it; only a partial frame is copied)

    def next_event(self) -> protocol.Event | None:
        """The next event for this worker, or None at EOF."""
        conn = self.conn
        events = conn.events
        while not events:
            if conn.eof:
                return None
            request = self._read()
            if request is not None:
                return request
        return events.popleft()

    def _read(self) -> protocol.Request | None:
        """:meth:`fill` (blocking), but a read that is exactly one REQUEST frame without
        descriptors (nearly every one) comes back as the request, past the decoder
        and the event queue (:meth:`WorkerConnection.whole_request`)."""
        nbytes, ancdata, msg_flags = self._recv()
        if nbytes and not ancdata and not msg_flags & _MSG_CTRUNC:
            request = self.conn.whole_request(self._rbuf[:nbytes])
            if request is not None:
                return request
        self._received(nbytes, ancdata, msg_flags)
        return None

    def take_fd(self) -> int:
        """The descriptor that came with the last REQUEST that announced one."""
        return self.conn.take_fd()

    def take_fds(self, count: int) -> list[int]:
        return self.conn.take_fds(count)

    def drop_fds(self) -> None:
        self.conn.drop_fds()

    @property
    def report_rss(self) -> bool:
        return self.conn.report_rss

    @property
    def eof(self) -> bool:
        return self.conn.eof

    def cancelled(self, rid: int) -> bool:
        """Has the front cancelled ``rid``?  Looks at the socket without blocking."""
        conn = self.conn
        if conn.cancelled(rid):
            return True
        while not conn.eof and self.fill(socket.MSG_DONTWAIT):
            pass
        return conn.cancelled(rid)

    def forget(self, rid: int) -> None:
        self.conn.forget(rid)

    # ------------------------------------------------------------ sending

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise PeerGone(str(exc)) from exc

    def send_parts(self, parts: Iterable[bytes | memoryview]) -> None:
        """One gathered write of several buffers; the data is not concatenated."""
        views = [memoryview(p) for p in parts if len(p)]
        try:
            while views:
                sent = self.sock.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                if sent:
                    views[0] = views[0][sent:]
        except OSError as exc:
            raise PeerGone(str(exc)) from exc

    def send_start(self, rid: int, status: int, headers: list, body: bytes, done: bool) -> None:
        conn = self.conn
        frame = conn.start(rid, status, headers, body, done)
        if frame is not None:  # (nearly every response)
            self.send(frame)
            return
        # A big first chunk: as body frames.
        self.send(conn.start(rid, status, headers, b"", False))  # type: ignore[arg-type]
        self.send_body(rid, body)
        if done:
            self.send(conn.end(rid))

    def send_start_offer(self, rid: int, status: int, headers: list, body: bytes) -> tuple[int, bool] | tuple[()]:
        """A streamed response's START, then an OFFER to write its body to the client
        ourselves; the front's answer: ``(client fd, chunked)`` for a TAKE, ``()``
        for a KEEP.  Waits for it (the front answers at once)."""
        conn = self.conn
        frame = conn.start(rid, status, headers, body, False)
        if frame is not None:
            self.send(frame + conn.offer(rid))  # (one write)
        else:
            self.send_start(rid, status, headers, body, False)
            self.send(conn.offer(rid))
        while True:
            answer = conn.offer_answer(rid)
            if answer is not None:
                return answer
            if conn.eof:
                raise PeerGone("the front hung up before answering an OFFER")
            if conn.cancelled(rid):  # the client left: no answer needed (a late one is dropped)
                conn.abandon_offer(rid)
                return ()
            self.fill()

    def send_body(self, rid: int, chunk: bytes) -> None:
        if self.conn.uses_shm(len(chunk)):
            self._send_shm(rid, chunk)
            return
        for frame in self.conn.body(rid, chunk):
            self.send_parts(frame)

    def _send_shm(self, rid: int, data: bytes) -> None:
        """Move ``data`` through the ring in as many pieces as it takes."""
        conn = self.conn
        view = memoryview(data)
        while view:
            frame, n = conn.shm_piece(rid, view)
            if not n:  # full: wait for the front's credit (or a cancel, or EOF)
                if conn.eof:
                    raise PeerGone("the front hung up")
                if conn.cancelled(rid):
                    return
                self.fill()
                continue
            self.send(frame)
            view = view[n:]

    def send_file(self, rid: int, status: int, headers: list, offset: int, length: int, fd: int) -> None:
        """Send a FILE frame, wait for the front's FILE_ACK, then pass ``fd``.

        The descriptor waits for the ack because the front's event-loop transport
        reads with a plain ``recv``, which would silently drop it."""
        conn = self.conn
        self.send(conn.file(rid, status, headers, offset, length))
        while not conn.file_acked(rid):
            if conn.eof:
                raise PeerGone("the front hung up before taking a file")
            self.fill()
        try:
            sent = socket.send_fds(self.sock, [b"F"], [fd])
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        if sent != 1:
            raise PeerGone("could not pass a file descriptor")

    def close(self) -> None:
        self.conn.close()
        self.sock.close()
