"""The frame layout of the IPC protocol: header, limits, the protocol error.

Shared by the encoders (:mod:`a2wsgi_mp.ipc.protocol`) and the
:class:`~a2wsgi_mp.ipc.decoder.Decoder`; the frame kinds and their events are
in :mod:`a2wsgi_mp.ipc.events`.  See ``docs/protocol.md``.
"""

from __future__ import annotations

import struct

#: 2: REPORT and USAGE (a worker's RSS with each response's last frame).
#: 3: a REQUEST's head is an array (environ.HEAD_FIELDS), not a map.
VERSION = 3
HEADER = struct.Struct("!BBI")
HEADER_SIZE = HEADER.size
RID = struct.Struct("!I")
#: Frames larger than this are garbage, not data: a body bigger than one frame
#: is always sent as several BODY frames.
MAX_PAYLOAD = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame of this protocol version,
    or a valid frame out of sequence (a BODY before its START, a FILE_ACK
    nobody waits for...).  The connection cannot go on."""
