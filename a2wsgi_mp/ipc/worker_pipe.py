"""The worker's end of the socketpair transport: a plain blocking socket.

Blocking is the point in a worker: a thread waits for its next request, and a
full socket buffer (the client reads slowly) simply makes it wait in ``send``.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Iterable

from . import protocol
from .fds import ANCILLARY, unpack_fds
from .shm import MIN_CHUNK, Region, RingWriter

_RECV_SIZE = 256 * 1024
#: Plain ints: ``int & socket.MSG_CTRUNC`` runs enum.IntFlag's Python ``__rand__`` on every read.
_MSG_CTRUNC = int(socket.MSG_CTRUNC)


class PeerGone(Exception):
    """The front closed the connection (or died)."""


class WorkerPipe:
    """The worker's end of one connection: blocking receive, gathered sends."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._decoder = protocol.Decoder(lenient=True)  # a bad frame fails one request, not the worker
        self._events: deque[protocol.Event] = deque()
        self._fds: deque[int] = deque()
        self._cancelled: set[int] = set()
        self._eof = False
        # One receive buffer for the connection's life.  ``recvmsg(256 KiB)``
        # allocated (mmap), shrank (mremap) and freed (munmap) 256 KiB on every
        # read: three syscalls and page faults a request.
        self._rbuf = memoryview(bytearray(_RECV_SIZE))
        #: ``--ipc shm``: the slot's ring, once the front sent SHM_SETUP.
        self.ring: RingWriter | None = None
        #: The front asked (REPORT) for our RSS with every response's last frame.
        self.report_rss = False

    # receiving
    def _fill(self, flags: int = 0) -> bool:
        """Read once; False if nothing could be read without blocking."""
        try:
            nbytes, ancdata, msg_flags, _addr = self.sock.recvmsg_into([self._rbuf], ANCILLARY, flags)
        except BlockingIOError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            nbytes, ancdata, msg_flags = 0, [], 0
        if ancdata:
            self._fds.extend(unpack_fds(ancdata))
        if msg_flags & _MSG_CTRUNC:
            raise protocol.ProtocolError("file descriptors were truncated in transit (more than SCM_MAX_FD)")
        if not nbytes:
            self._eof = True
            return True
        self._decoder.feed(self._rbuf[:nbytes])  # copied into the decoder's buffer
        for event in self._decoder.events():
            if isinstance(event, protocol.Cancel):
                self._cancelled.add(event.rid)
            elif isinstance(event, protocol.ShmCredit):
                if self.ring is None:
                    raise protocol.ProtocolError("SHM_CREDIT without a shared-memory region")
                self.ring.credit(event.nbytes)
            elif isinstance(event, protocol.RequestShm):
                ring = self.ring
                if ring is None or ring.outstanding or event.length > ring.region.size:
                    raise protocol.ProtocolError("REQUEST_SHM without an idle ring large enough")
                body = ring.region.read(0, event.length)
                self._events.append(protocol.Request(event.rid, event.head, body, event.length))
            elif isinstance(event, protocol.Report):
                self.report_rss = event.rss
            elif isinstance(event, protocol.ShmSetup):
                if not self._fds:
                    raise protocol.ProtocolError("SHM_SETUP arrived without its memfd")
                fd = self._fds.popleft()
                try:
                    self.ring = RingWriter(Region(fd, event.size))
                finally:
                    os.close(fd)  # the mapping keeps its own
                self.ring.region.fd = -1
            else:
                self._events.append(event)
        return True

    def next_event(self) -> protocol.Event | None:
        """The next event for this worker, or None at EOF."""
        while not self._events:
            if self._eof:
                return None
            self._fill()
        return self._events.popleft()

    def drop_fds(self) -> None:
        """Close the descriptors that came with a frame that could not be used."""
        while self._fds:
            os.close(self._fds.popleft())

    def take_fds(self, count: int) -> list[int]:
        if len(self._fds) < count:
            raise protocol.ProtocolError(f"expected {count} file descriptors, {len(self._fds)} arrived")
        return [self._fds.popleft() for _ in range(count)]

    def take_fd(self) -> int:
        """The descriptor that came with the last REQUEST that announced one."""
        if not self._fds:
            raise protocol.ProtocolError("a REQUEST announced a file descriptor but none arrived")
        return self._fds.popleft()

    def cancelled(self, rid: int) -> bool:
        """Has the front cancelled ``rid``?  Looks at the socket without blocking."""
        if rid in self._cancelled or self._eof:
            return True
        while not self._eof and self._fill(socket.MSG_DONTWAIT):
            pass
        return rid in self._cancelled or self._eof

    def forget(self, rid: int) -> None:
        self._cancelled.discard(rid)

    # sending
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

    def uses_shm(self, size: int) -> bool:
        return self.ring is not None and size >= MIN_CHUNK

    def send_shm(self, rid: int, data: bytes) -> None:
        """Move ``data`` through the ring in as many pieces as it takes."""
        ring = self.ring
        assert ring is not None
        view = memoryview(data)
        while view:
            offset, n = ring.put(view)
            if not n:  # full: wait for the front's credit (or a cancel, or EOF)
                if rid in self._cancelled:
                    return
                if self._eof:
                    raise PeerGone("the front hung up")
                self._fill()
                continue
            self.send(protocol.encode_shm_body(rid, offset, n))
            view = view[n:]

    def send_file(self, frame: bytes, rid: int, fd: int) -> None:
        """Send a FILE frame, wait for the front's FILE_ACK, then pass ``fd``.

        The descriptor waits for the ack because the front's event-loop transport
        reads with a plain ``recv``, which would silently drop it."""
        self.send(frame)
        while True:
            for i, event in enumerate(self._events):
                if isinstance(event, protocol.FileAck) and event.rid == rid:
                    del self._events[i]
                    break
            else:
                if self._eof:
                    raise PeerGone("the front hung up before taking a file")
                self._fill()
                continue
            break
        try:
            sent = socket.send_fds(self.sock, [b"F"], [fd])
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        if sent != 1:
            raise PeerGone("could not pass a file descriptor")

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        if self.ring is not None:
            self.ring.region.close()
            self.ring = None
        self.sock.close()
