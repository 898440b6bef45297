"""The frame layout of the IPC protocol: header, limits, frame kinds.

Shared by the encoders (:mod:`a2wsgi_mp.ipc.protocol`) and the
:class:`~a2wsgi_mp.ipc.decoder.Decoder`; see ``docs/protocol.md``.
"""

from __future__ import annotations

import struct

#: 2: REPORT and USAGE (a worker's RSS with each response's last frame).
VERSION = 2
HEADER = struct.Struct("!BBI")
HEADER_SIZE = HEADER.size
RID = struct.Struct("!I")
#: Frames larger than this are garbage, not data: a body bigger than one frame
#: is always sent as several BODY frames.
MAX_PAYLOAD = 64 * 1024 * 1024

# Front -> worker
REQUEST = 1
CANCEL = 2
#: The front is ready for the descriptor announced by a FILE frame.
FILE_ACK = 4
#: A shared-memory region for this slot (its memfd rides along by SCM_RIGHTS).
SHM_SETUP = 5
#: The front has copied this many bytes out of the region: the worker may reuse them.
SHM_CREDIT = 6
#: A REQUEST whose (inline-sized) body lies at offset 0 of the slot's ring.
REQUEST_SHM = 7
#: What the worker should report with each response's last frame (its RSS, for max_rss).
REPORT = 8
# Front -> zygote (the process that starts workers)
SPAWN = 3
# Worker -> front
READY = 16
BOOT_ERROR = 17
START = 18
BODY = 19
END = 20
ABORT = 21
LOG = 22
#: A whole response whose body is a file, handed over by descriptor.
FILE = 25
#: A response chunk that lies in the slot's shared-memory region.
SHM_BODY = 26
#: The worker's resident memory, sent just before (in the same write as) a response's last frame.
USAGE = 27
#: The app raised while serving this request: its traceback, before the 500 or ABORT.
APP_ERROR = 28
# Zygote -> front
SPAWNED = 23
EXITED = 24

_KIND_NAMES = {
    REQUEST: "REQUEST",
    CANCEL: "CANCEL",
    READY: "READY",
    BOOT_ERROR: "BOOT_ERROR",
    START: "START",
    BODY: "BODY",
    END: "END",
    ABORT: "ABORT",
    LOG: "LOG",
    SPAWN: "SPAWN",
    SPAWNED: "SPAWNED",
    EXITED: "EXITED",
    FILE: "FILE",
    FILE_ACK: "FILE_ACK",
    SHM_SETUP: "SHM_SETUP",
    SHM_CREDIT: "SHM_CREDIT",
    SHM_BODY: "SHM_BODY",
    REQUEST_SHM: "REQUEST_SHM",
    REPORT: "REPORT",
    USAGE: "USAGE",
    APP_ERROR: "APP_ERROR",
}


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame of this protocol version."""
