"""The wire protocol between the front and a worker: bytes in, events out.

Sans-IO in the manner of h11: nothing here touches a socket, a thread or an
event loop, so the whole protocol is testable (and fuzzable) with plain bytes.
Transports (:mod:`a2wsgi_mp.ipc.pipe`) only move the bytes this module makes.

A frame is a 6-byte header — version (u8), kind (u8), payload length (u32, big
endian) — then the payload.  Control payloads are msgpack arrays; BODY payloads
are a 4-byte request id then raw bytes, so a response chunk is never copied into
a msgpack buffer on its way out.  A file descriptor that travels with a frame
(SCM_RIGHTS) is announced by a flag in the frame's payload, never by the frame
layout, so the decoder stays blind to fds.  See ``docs/protocol.md``.
"""

from __future__ import annotations

import msgpack

# The frame layout, the events and the decoder live in their own modules;
# re-exported here, the protocol's entry point: protocol.REQUEST, protocol.Request,
# protocol.Decoder, protocol.ProtocolError.
from . import frames as _frames
from .frames import (
    ABORT, APP_ERROR, BODY, BOOT_ERROR, CANCEL, END, EXITED, FILE, FILE_ACK, HEADER, HEADER_SIZE, LOG,
    MAX_PAYLOAD, READY, REPORT, REQUEST, REQUEST_SHM, RID, SHM_BODY, SHM_CREDIT, SHM_SETUP, SPAWN, SPAWNED, START,
    USAGE, VERSION, ProtocolError,
)
from .events import (
    Event,
    Request,
    Cancel,
    Ready,
    BootError,
    Start,
    File,
    FileAck,
    ShmSetup,
    RequestShm,
    ShmCredit,
    ShmBody,
    Body,
    End,
    Abort,
    Log,
    AppError,
    Spawn,
    Spawned,
    Exited,
    Report,
    Usage,
    Rejected,
)
from .decoder import Decoder

__all__ = [
    "ABORT", "APP_ERROR", "BODY", "BOOT_ERROR", "CANCEL", "END", "EXITED", "FILE", "FILE_ACK", "HEADER",
    "HEADER_SIZE", "LOG", "MAX_PAYLOAD", "READY", "REPORT", "REQUEST", "REQUEST_SHM", "RID", "SHM_BODY",
    "SHM_CREDIT", "SHM_SETUP", "SPAWN", "SPAWNED", "START", "USAGE", "VERSION", "ProtocolError", "Event", "Request",
    "Cancel", "Ready", "BootError", "Start", "File", "FileAck", "ShmSetup", "RequestShm", "ShmCredit", "ShmBody",
    "Body", "End", "Abort", "Log", "AppError", "Spawn", "Spawned", "Exited", "Report", "Usage", "Rejected",
    "Decoder", "encode_request", "encode_cancel", "encode_ready", "encode_boot_error", "encode_start",
    "encode_file", "encode_file_ack", "encode_shm_setup", "encode_request_shm", "encode_shm_credit",
    "encode_shm_body", "encode_report", "encode_usage", "encode_body_header", "encode_body", "encode_end",
    "encode_abort", "encode_log", "encode_app_error", "encode_spawn", "encode_spawned", "encode_exited",
]

_KIND_NAMES = _frames._KIND_NAMES  # (the tests check that every frame kind round-trips)


# ---------------------------------------------------------------- encoding

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(VERSION, kind, len(payload)) + payload


def encode_request(rid: int, head: dict, body: bytes | None, body_length: int) -> bytes:
    return _frame(REQUEST, _packb((rid, head, body, body_length)))


def encode_cancel(rid: int) -> bytes:
    return _frame(CANCEL, _packb((rid,)))


def encode_ready(pid: int) -> bytes:
    return _frame(READY, _packb((pid, VERSION)))


def encode_boot_error(message: str) -> bytes:
    return _frame(BOOT_ERROR, _packb((message,)))


def encode_start(rid: int, status: int, headers: list, body: bytes, done: bool) -> bytes:
    return _frame(START, _packb((rid, status, headers, body, done)))


def encode_file(rid: int, status: int, headers: list, offset: int, length: int) -> bytes:
    return _frame(FILE, _packb((rid, status, headers, offset, length)))


def encode_file_ack(rid: int) -> bytes:
    return _frame(FILE_ACK, _packb((rid,)))


def encode_shm_setup(size: int) -> bytes:
    return _frame(SHM_SETUP, _packb((size,)))


def encode_request_shm(rid: int, head: dict, length: int) -> bytes:
    return _frame(REQUEST_SHM, _packb((rid, head, length)))


def encode_shm_credit(nbytes: int) -> bytes:
    return _frame(SHM_CREDIT, _packb((nbytes,)))


def encode_shm_body(rid: int, offset: int, length: int) -> bytes:
    return _frame(SHM_BODY, _packb((rid, offset, length)))


def encode_report(rss: bool) -> bytes:
    return _frame(REPORT, _packb((rss,)))


def encode_usage(rss: int) -> bytes:
    return _frame(USAGE, _packb((rss,)))


def encode_body_header(rid: int, size: int) -> bytes:
    """The header of a BODY frame; the ``size`` data bytes follow it on the wire.

    Separate from the data so a transport can send both with one gathered
    write (``sendmsg``) and never copy the chunk.
    """
    return HEADER.pack(VERSION, BODY, size + RID.size) + RID.pack(rid)


def encode_body(rid: int, data: bytes) -> bytes:
    return encode_body_header(rid, len(data)) + data


def encode_end(rid: int) -> bytes:
    return _frame(END, _packb((rid,)))


def encode_abort(rid: int, reason: str) -> bytes:
    return _frame(ABORT, _packb((rid, reason)))


def encode_log(level: int, message: str) -> bytes:
    return _frame(LOG, _packb((level, message)))


def encode_app_error(rid: int, message: str) -> bytes:
    return _frame(APP_ERROR, _packb((rid, message)))


def encode_spawn(worker_id: int, slots: int) -> bytes:
    return _frame(SPAWN, _packb((worker_id, slots)))


def encode_spawned(worker_id: int, pid: int) -> bytes:
    return _frame(SPAWNED, _packb((worker_id, pid)))


def encode_exited(pid: int, status: int) -> bytes:
    return _frame(EXITED, _packb((pid, status)))
