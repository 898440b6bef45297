"""The wire protocol between the front and a worker: frames, events, encoders.

This module and those it re-exports are sans-IO in the manner of h11: nothing
here touches a socket, a thread or an event loop, so the protocol is testable
(and fuzzable) with plain bytes.  The frame layout is in :mod:`.frames`, the
frame kinds with their events in :mod:`.events`, the byte-stream decoder in
:mod:`.decoder`; the rules of a conversation (which frame may come when, the
SHM ring, the FILE handshake, CANCEL, REPORT) are the connection objects'
(:mod:`.front_connection`, :mod:`.worker_connection`), and the transports
(:mod:`.pipe`, :mod:`.worker_pipe`) only move their bytes and descriptors.

A frame is a 6-byte header — version (u8), kind (u8), payload length (u32, big
endian) — then the payload.  Control payloads are msgpack arrays; BODY payloads
are a 4-byte request id then raw bytes, so a response chunk is never copied into
a msgpack buffer on its way out.  A file descriptor that travels with a frame
(SCM_RIGHTS) is announced by a field of the frame's payload, never by the frame
layout, so the decoder stays blind to fds.  See ``docs/protocol.md``.
"""

from __future__ import annotations

import msgpack

from ..environ import HEAD_FIELDS, head_fields

# Re-exported here, the protocol's entry point: protocol.Kind, protocol.Request,
# protocol.Decoder, protocol.ProtocolError (and protocol.REQUEST == Kind.REQUEST).
from .decoder import Decoder
from .events import (
    FRAMES,
    Abort,
    AppError,
    Body,
    BootError,
    Cancel,
    Direct,
    End,
    Event,
    Exited,
    File,
    FileAck,
    Keep,
    Kind,
    Log,
    Offer,
    Ready,
    Rejected,
    Report,
    Request,
    RequestShm,
    ShmBody,
    ShmCredit,
    ShmSetup,
    Spawn,
    Spawned,
    Start,
    Take,
    Usage,
)
from .frames import HEADER, HEADER_SIZE, MAX_PAYLOAD, RID, VERSION, ProtocolError

__all__ = [
    "HEADER", "HEADER_SIZE", "MAX_PAYLOAD", "RID", "VERSION", "ProtocolError", "Kind", "FRAMES", "Event", "Request",
    "Cancel", "Ready", "BootError", "Start", "File", "FileAck", "ShmSetup", "RequestShm", "ShmCredit", "ShmBody",
    "Body", "End", "Abort", "Log", "AppError", "Spawn", "Spawned", "Exited", "Report", "Usage", "Rejected",
    "Offer", "Take", "Keep", "Direct", "encode_offer", "encode_take", "encode_keep", "encode_direct",
    "Decoder", "encode", "encode_request", "encode_cancel", "encode_ready", "encode_boot_error", "encode_start",
    "encode_file", "encode_file_ack", "encode_shm_setup", "encode_request_shm", "encode_shm_credit",
    "encode_shm_body", "encode_report", "encode_usage", "encode_body_header", "encode_body", "encode_end",
    "encode_abort", "encode_log", "encode_app_error", "encode_spawn", "encode_spawned", "encode_exited",
    "HEAD_FIELDS", "head_fields",
]

#: kind number -> name (the tests check that every frame kind round-trips).
_KIND_NAMES = {int(kind): kind.name for kind in Kind}


def __getattr__(name: str) -> Kind:
    """``protocol.REQUEST`` and the like: the :class:`Kind` of that name."""
    try:
        return Kind[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


# ---------------------------------------------------------------- encoding

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


_pack_header = HEADER.pack


def _frame(kind: int, payload: bytes) -> bytes:
    return _pack_header(VERSION, kind, len(payload)) + payload


def encode(event: Event) -> bytes:
    """The frame of any msgpack-array event (every kind but BODY): what a new
    kind needs when it is not on a hot path.  The ``encode_*`` functions below
    are the same, without building the event first."""
    return _frame(int(event.KIND), _packb(event))  # type: ignore[union-attr]


# Plain ints: ``struct.pack`` of an IntEnum member costs ~100 ns more.
_REQUEST = int(Kind.REQUEST)
_CANCEL = int(Kind.CANCEL)
_READY = int(Kind.READY)
_BOOT_ERROR = int(Kind.BOOT_ERROR)
_START = int(Kind.START)
_FILE = int(Kind.FILE)
_FILE_ACK = int(Kind.FILE_ACK)
_SHM_SETUP = int(Kind.SHM_SETUP)
_REQUEST_SHM = int(Kind.REQUEST_SHM)
_SHM_CREDIT = int(Kind.SHM_CREDIT)
_SHM_BODY = int(Kind.SHM_BODY)
_REPORT = int(Kind.REPORT)
_USAGE = int(Kind.USAGE)
_END = int(Kind.END)
_ABORT = int(Kind.ABORT)
_LOG = int(Kind.LOG)
_APP_ERROR = int(Kind.APP_ERROR)
_SPAWN = int(Kind.SPAWN)
_SPAWNED = int(Kind.SPAWNED)
_EXITED = int(Kind.EXITED)
_BODY = int(Kind.BODY)


def encode_request(rid: int, head: dict | tuple, body: bytes | None, body_length: int) -> bytes:
    """``head``: :func:`~a2wsgi_mp.environ.request_head`'s map (and the front's ``header_map``
    and ``direct``); it crosses as the array of :data:`~a2wsgi_mp.environ.HEAD_FIELDS` (``head``
    may be that array already: the lean protocol's)."""
    fields = head if type(head) is tuple else head_fields(head)  # type: ignore[arg-type]
    payload = _packb((rid, fields, body, body_length))  # (_frame() inline: once per request)
    return _pack_header(VERSION, _REQUEST, len(payload)) + payload


def encode_cancel(rid: int) -> bytes:
    return _frame(_CANCEL, _packb((rid,)))


def encode_ready(pid: int) -> bytes:
    return _frame(_READY, _packb((pid, VERSION)))


def encode_boot_error(message: str) -> bytes:
    return _frame(_BOOT_ERROR, _packb((message,)))


def encode_start(rid: int, status: int, headers: list, body: bytes, done: bool) -> bytes:
    payload = _packb((rid, status, headers, body, done))  # (_frame() inline: once per response)
    return _pack_header(VERSION, _START, len(payload)) + payload


def encode_file(rid: int, status: int, headers: list, offset: int, length: int) -> bytes:
    return _frame(_FILE, _packb((rid, status, headers, offset, length)))


def encode_file_ack(rid: int) -> bytes:
    return _frame(_FILE_ACK, _packb((rid,)))


def encode_shm_setup(size: int) -> bytes:
    return _frame(_SHM_SETUP, _packb((size,)))


def encode_request_shm(rid: int, head: dict | tuple, length: int) -> bytes:
    fields = head if type(head) is tuple else head_fields(head)  # type: ignore[arg-type]
    return _frame(_REQUEST_SHM, _packb((rid, fields, length)))


def encode_shm_credit(nbytes: int) -> bytes:
    return _frame(_SHM_CREDIT, _packb((nbytes,)))


def encode_shm_body(rid: int, offset: int, length: int) -> bytes:
    return _frame(_SHM_BODY, _packb((rid, offset, length)))


def encode_report(rss: bool) -> bytes:
    return _frame(_REPORT, _packb((rss,)))


def encode_usage(rss: int) -> bytes:
    return _frame(_USAGE, _packb((rss,)))


def encode_body_header(rid: int, size: int) -> bytes:
    """The header of a BODY frame; the ``size`` data bytes follow it on the wire.

    Separate from the data so a transport can send both with one gathered
    write (``sendmsg``) and never copy the chunk.
    """
    return HEADER.pack(VERSION, _BODY, size + RID.size) + RID.pack(rid)


def encode_body(rid: int, data: bytes) -> bytes:
    return encode_body_header(rid, len(data)) + data


def encode_end(rid: int) -> bytes:
    return _frame(_END, _packb((rid,)))


def encode_abort(rid: int, reason: str) -> bytes:
    return _frame(_ABORT, _packb((rid, reason)))


def encode_log(level: int, message: str) -> bytes:
    return _frame(_LOG, _packb((level, message)))


def encode_app_error(rid: int, message: str) -> bytes:
    return _frame(_APP_ERROR, _packb((rid, message)))


def encode_spawn(worker_id: int, slots: int) -> bytes:
    return _frame(_SPAWN, _packb((worker_id, slots)))


def encode_spawned(worker_id: int, pid: int) -> bytes:
    return _frame(_SPAWNED, _packb((worker_id, pid)))


def encode_exited(pid: int, status: int) -> bytes:
    return _frame(_EXITED, _packb((pid, status)))


#: The ABORT reason of a response whose client left (a CANCEL acknowledged, or a
#: client gone under a worker writing to it directly): not an error.
CLIENT_LEFT = "client disconnected"


# Direct stream (not the hot path of small responses: once per streamed response).


def encode_offer(rid: int) -> bytes:
    return encode(Offer(rid))


def encode_take(rid: int, chunked: bool) -> bytes:
    return encode(Take(rid, chunked))


def encode_keep(rid: int) -> bytes:
    return encode(Keep(rid))


def encode_direct(rid: int, written: int, tail: bytes, done: bool) -> bytes:
    return encode(Direct(rid, written, tail, done))
