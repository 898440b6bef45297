"""What both ends of the socketpair transport share: the pair, and descriptor passing."""

from __future__ import annotations

import array
import socket
from typing import NamedTuple

#: Linux's SCM_MAX_FD: the most descriptors one message may carry, hence the
#: most threads (one connection each) a worker can have.
MAX_FDS = 253
ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected (front, worker) pair of Unix stream sockets."""
    front, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return front, worker


def unpack_fds(ancdata: list) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - (len(data) % arr.itemsize)])
            fds.extend(arr)
    return fds


class FileHandoff(NamedTuple):
    """A FILE frame together with the descriptor that followed it.

    Whoever receives one owns ``fd`` and must close it."""

    rid: int
    status: int
    headers: list
    offset: int
    length: int
    fd: int
