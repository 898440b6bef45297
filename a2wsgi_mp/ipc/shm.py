"""Shared memory for bulk response bytes: one anonymous ring per slot.

``--ipc shm``: the front makes each slot a region with ``os.memfd_create`` +
``mmap`` (no name anywhere: nothing in /dev/shm, no size quota there, no
resource tracker, and it vanishes with its last descriptor, even after a
SIGKILL) and passes the memfd to the worker with an SHM_SETUP frame
(SCM_RIGHTS) right after the slot's READY.  Control stays on the socketpair:

* the worker copies a chunk into the ring and sends ``SHM_BODY [rid, offset,
  length]`` (pieces never wrap; a chunk larger than the free space goes in
  several pieces);
* the front copies the piece out (it needs ``bytes`` for ASGI anyway), and
  answers with ``SHM_CREDIT [nbytes]``, coalesced per read;
* the worker blocks for credit when the ring is full;
* between requests the ring is idle, so an inline request body of at least
  :data:`MIN_CHUNK` goes to its start, announced by ``REQUEST_SHM``.

Flow control is the pipe's: when the client reads slowly the front stops
reading the slot, so SHM_BODY frames wait unread, no credit goes back, and
the worker blocks once the ring is full — at most ``size`` bytes more than
with pipes.  Chunks below :data:`MIN_CHUNK` stay inline in BODY frames, which
are cheaper at that size (BRIEF: socketpair ≈ shared memory at 64 KiB).
"""

from __future__ import annotations

import mmap
import os

#: Bytes of ring per slot.
DEFAULT_SIZE = 4 * 1024 * 1024
#: Smaller chunks travel inline in BODY frames.
MIN_CHUNK = 32 * 1024

IPC_KINDS = ("pipe", "shm")


class Region:
    """A mapped memfd.  The creator and every process it was passed to map the same pages."""

    __slots__ = ("fd", "size", "map")

    def __init__(self, fd: int, size: int) -> None:
        if size <= 0:
            raise ValueError("a shared-memory region needs a positive size")
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)  # holds its own duplicate of fd

    def release_fd(self) -> None:
        """Close our descriptor (once passed on); the mapping stays."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @classmethod
    def create(cls, size: int = DEFAULT_SIZE) -> "Region":
        fd = os.memfd_create("a2wsgi-mp-slot", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"piece [{offset}, {offset + length}) outside a {self.size}-byte region")
        return self.map[offset : offset + length]

    def close(self) -> None:
        if not self.map.closed:
            self.map.close()
        self.release_fd()


class RingWriter:
    """The writer's bookkeeping of a ring whose reader frees pieces in order."""

    __slots__ = ("region", "head", "outstanding")

    def __init__(self, region: Region) -> None:
        self.region = region
        self.head = 0
        self.outstanding = 0

    def contiguous(self) -> int:
        """Free bytes starting at ``head`` (which may wrap to 0 here)."""
        size = self.region.size
        if self.outstanding == 0:
            self.head = 0
            return size
        if self.outstanding >= size:
            return 0
        tail = (self.head - self.outstanding) % size
        if self.head > tail:
            if self.head < size:
                return size - self.head
            self.head = 0
            return tail
        return tail - self.head

    def put(self, data: memoryview) -> tuple[int, int]:
        """Copy as much of ``data`` as fits contiguously; ``(offset, length)``, length 0 if full."""
        n = min(len(data), self.contiguous())
        offset = self.head
        if n:
            self.region.map[offset : offset + n] = data[:n]
            self.head += n
            self.outstanding += n
        return offset, n

    def credit(self, nbytes: int) -> None:
        if nbytes > self.outstanding:
            raise ValueError(f"credit of {nbytes} bytes for {self.outstanding} outstanding")
        self.outstanding -= nbytes
