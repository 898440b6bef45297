"""The sans-IO connection objects of both ends of the IPC: bytes and descriptors
in, events out, every rule of the conversation inside.  No sockets: the two
ends talk through byte strings (and, for the ring, one memfd mapped twice)."""

from __future__ import annotations

import os
from typing import NamedTuple

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2wsgi_mp.ipc import events as ev
from a2wsgi_mp.ipc import protocol as p
from a2wsgi_mp.ipc.fds import FileHandoff
from a2wsgi_mp.ipc.front_connection import FrontConnection
from a2wsgi_mp.ipc.shm import MIN_CHUNK
from a2wsgi_mp.ipc.worker_connection import PIECE, WorkerConnection

HEAD = {"method": "GET", "path": "/"}
WIRE_HEAD = p.head_fields(HEAD)  # (as a worker gets it)
RING = 256 * 1024


def _front(**kw) -> FrontConnection:
    conn = FrontConnection(**kw)
    assert conn.receive_data(p.encode_ready(42)) == [p.Ready(42, p.VERSION)]
    return conn


def _frame(kind: int, fields: list) -> bytes:
    return p._frame(kind, msgpack.packb(fields, use_bin_type=True))


def _worker_for(front: FrontConnection, rss: int = 123) -> WorkerConnection:
    """A worker connection that got everything ``front`` queued (the ring's memfd: a dup)."""
    worker = WorkerConnection(rss=lambda: rss)
    for data, fds in front.outbox:
        worker.receive_data(data, [os.dup(fd) for fd in fds])
        for fd in fds:
            os.close(fd)
    front.outbox.clear()
    return worker


# ---------------------------------------------------------------- the front: sequencing


def test_a_plain_response_ends_the_request() -> None:
    conn = _front()
    data = conn.send_request(1, HEAD, b"hi", 2)
    assert _decode(data) == [p.Request(1, WIRE_HEAD, b"hi", 2)]
    assert conn.in_flight == 1 and not conn.started
    events = conn.receive_data(p.encode_usage(7) + p.encode_start(1, 200, [], b"ok", True))
    assert events == [p.Usage(7), p.Start(1, 200, [], b"ok", True)]
    assert conn.in_flight is None and conn.error is None
    conn.send_request(2, HEAD, b"", 0)  # the slot takes the next one
    assert conn.in_flight == 2


def test_a_streamed_response_in_pieces_of_any_size() -> None:
    conn = _front()
    conn.send_request(5, HEAD, b"", 0)
    stream = p.encode_start(5, 200, [(b"a", b"b")], b"", False) + p.encode_body(5, b"x" * 1000) + p.encode_end(5)
    got = []
    for i in range(0, len(stream), 7):
        got += conn.receive_data(stream[i : i + 7])
        if i + 7 < len(stream):
            assert conn.in_flight == 5
    assert got == [p.Start(5, 200, [(b"a", b"b")], b"", False), p.Body(5, b"x" * 1000), p.End(5)]
    assert conn.in_flight is None and conn.error is None


def test_a_second_request_while_one_is_in_flight_is_refused() -> None:
    conn = _front()
    conn.send_request(1, HEAD, b"", 0)
    with pytest.raises(RuntimeError, match="in flight"):
        conn.send_request(2, HEAD, b"", 0)


OUT_OF_TURN = [
    ("body before start", [p.encode_body(1, b"x")]),
    ("end before start", [p.encode_end(1)]),
    ("another request's start", [p.encode_start(2, 200, [], b"", True)]),
    ("a second start", [p.encode_start(1, 200, [], b"", False), p.encode_start(1, 200, [], b"", False)]),
    ("a frame after the last", [p.encode_start(1, 200, [], b"", True), p.encode_end(1)]),
    ("abort of another request", [p.encode_abort(9, "no")]),
    ("an app error of another request", [p.encode_app_error(9, "boom")]),
    ("a file after start", [p.encode_start(1, 200, [], b"", False), p.encode_file(1, 200, [], 0, 1)]),
    ("a worker-bound frame", [p.encode_cancel(1)]),
    ("a second ready", [p.encode_ready(42)]),
    ("shm without a ring", [p.encode_start(1, 200, [], b"", False), p.encode_shm_body(1, 0, 10)]),
]


@pytest.mark.parametrize("frames", [f for _, f in OUT_OF_TURN], ids=[n for n, _ in OUT_OF_TURN])
def test_frames_out_of_turn_are_a_protocol_error_after_the_good_ones(frames: list[bytes]) -> None:
    conn = _front()
    conn.send_request(1, HEAD, b"", 0)
    events = conn.receive_data(b"".join(frames))
    assert len(events) == len(frames) - 1  # every frame before the fault is an event
    assert isinstance(conn.error, p.ProtocolError)
    assert conn.receive_data(p.encode_end(1)) == []  # and nothing after it
    assert conn.receive_eof() is conn.error


def test_an_abort_may_end_a_request_that_never_started() -> None:
    conn = _front()
    conn.send_request(3, HEAD, b"", 0)
    assert conn.send_cancel(3) == p.encode_cancel(3)
    assert conn.send_cancel(3) == b""  # once
    assert conn.receive_data(p.encode_abort(3, "client disconnected")) == [p.Abort(3, "client disconnected")]
    assert conn.in_flight is None
    assert conn.send_cancel(3) == b""  # nothing to cancel any more


def test_the_zygote_connection_has_no_request() -> None:
    conn = FrontConnection()
    stream = p.encode_ready(7) + p.encode_spawned(1, 100) + p.encode_exited(100, 9) + p.encode_log(20, "hi")
    assert conn.receive_data(stream) == [p.Ready(7, p.VERSION), p.Spawned(1, 100), p.Exited(100, 9),
                                         p.Log(20, "hi")]
    assert conn.error is None and conn.outbox == []


# ---------------------------------------------------------------- the front: after READY


def test_ready_sets_up_the_ring_then_report_before_anything_else() -> None:
    conn = FrontConnection(shm_size=RING, report_rss=True)
    conn.receive_data(p.encode_ready(1))
    (setup, fds), (report, no_fds) = conn.outbox
    try:
        assert _decode(setup) == [p.ShmSetup(RING)] and len(fds) == 1
        assert _decode(report) == [p.Report(True)] and no_fds == []
        assert conn.region is not None and conn.region.fd == -1  # the message owns the memfd
    finally:
        os.close(fds[0])
        conn.close()
    assert conn.region is None


def test_no_ring_and_no_report_by_default() -> None:
    conn = _front()
    assert conn.outbox == [] and conn.region is None


# ---------------------------------------------------------------- the front: how a request's body travels


@pytest.mark.parametrize("size,how", [(0, "inline"), (MIN_CHUNK - 1, "inline"), (MIN_CHUNK, "ring"),
                                      (RING, "ring"), (RING + 1, "inline")])
def test_send_request_chooses_inline_or_the_ring(size: int, how: str) -> None:
    front = _front(shm_size=RING)
    worker = _worker_for(front)
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    data = front.send_request(4, HEAD, body, size)
    assert p.HEADER.unpack_from(data)[1] == (p.Kind.REQUEST_SHM if how == "ring" else p.Kind.REQUEST)
    worker.receive_data(data)
    assert worker.next_event() == p.Request(4, WIRE_HEAD, body, size)  # the same event either way
    front.close()
    worker.close()


def test_send_request_with_a_spooled_body_passes_its_descriptor() -> None:
    conn = _front(shm_size=RING)
    for fd in conn.outbox[0][1]:
        os.close(fd)
    data = conn.send_request(6, HEAD, None, 10 << 20, fd=99)
    assert _decode(data) == [p.Request(6, WIRE_HEAD, None, 10 << 20)]  # (the transport sends fd 99 with it)
    conn.close()


# ---------------------------------------------------------------- the front: shm responses


def test_shm_pieces_become_body_events_and_one_credit_per_read() -> None:
    front = _front(shm_size=RING)
    worker = _worker_for(front)
    front.send_request(1, HEAD, b"", 0)
    frames = [worker.start(1, 200, [], b"", False)]
    chunk = os.urandom(100_000)
    view = memoryview(chunk)
    while view:
        frame, n = worker.shm_piece(1, view)
        assert n
        frames.append(frame)
        view = view[n:]
    frames.append(worker.end(1))
    events = front.receive_data(b"".join(frames))
    assert b"".join(e.data for e in events if isinstance(e, p.Body)) == chunk
    assert events[-1] == p.End(1)
    (credit, fds), = front.outbox
    assert _decode(credit) == [p.ShmCredit(len(chunk))] and fds == []
    worker.receive_data(credit)
    assert worker.ring is not None and worker.ring.outstanding == 0
    front.close()
    worker.close()


def test_an_shm_piece_outside_the_ring_is_a_protocol_error() -> None:
    front = _front(shm_size=RING)
    for fd in front.outbox[0][1]:
        os.close(fd)
    front.send_request(1, HEAD, b"", 0)
    front.receive_data(p.encode_start(1, 200, [], b"", False) + p.encode_shm_body(1, RING - 10, 11))
    assert front.error is not None and "outside" in str(front.error)
    front.close()


def test_a_dead_workers_last_frames_are_all_read_before_the_end() -> None:
    # What the front must do before it calls a request lost: every complete frame
    # (its ring pieces too) is an event; only then does EOF say what was missing.
    front = _front(shm_size=RING)
    worker = _worker_for(front)
    front.send_request(1, HEAD, b"", 0)
    piece, _ = worker.shm_piece(1, memoryview(b"y" * MIN_CHUNK))
    last = worker.start(1, 200, [], b"", False) + piece + p.encode_body(1, b"tail")
    events = front.receive_data(last + p.encode_end(1)[:3])  # the worker died mid-frame
    assert [type(e) for e in events] == [p.Start, p.Body, p.Body]
    assert events[1].data == b"y" * MIN_CHUNK
    error = front.receive_eof()
    assert error is not None and "3 bytes into a frame" in str(error)
    assert front.in_flight == 1 and front.started  # the loss cuts a started response
    front.close()
    worker.close()


def test_eof_between_requests_is_clean() -> None:
    conn = _front()
    conn.send_request(1, HEAD, b"", 0)
    conn.receive_data(p.encode_start(1, 200, [], b"", True))
    assert conn.receive_eof() is None and conn.in_flight is None


def test_eof_before_any_response_says_nothing_was_delivered() -> None:
    conn = _front()
    conn.send_request(1, HEAD, b"", 0)
    assert conn.receive_eof() is None
    assert conn.in_flight == 1 and not conn.started  # never delivered: safe to retry elsewhere


# ---------------------------------------------------------------- the FILE handshake


def test_file_handshake() -> None:
    front = _front()
    worker = WorkerConnection()
    front.send_request(1, HEAD, b"", 0)
    frame = worker.file(1, 200, [(b"content-length", b"5")], 0, 5)
    assert front.receive_data(frame) == []  # nothing until the descriptor
    assert front.awaiting_fd and front.in_flight == 1
    (ack, fds), = front.outbox
    assert fds == [] and _decode(ack) == [p.FileAck(1)]
    assert not worker.file_acked(1)
    worker.receive_data(ack)
    assert worker.file_acked(1)
    r, w = os.pipe()
    os.close(w)
    handoff = front.receive_fd(b"F", [r])
    assert handoff == FileHandoff(1, 200, [(b"content-length", b"5")], 0, 5, r)
    assert not front.awaiting_fd and front.in_flight is None
    os.close(r)
    # An error from the app's close() comes after the FILE: still this request's.
    assert front.receive_data(p.encode_app_error(1, "close failed")) == [p.AppError(1, "close failed")]


def _offered(front: FrontConnection, worker: WorkerConnection) -> None:
    front.send_request(1, HEAD, b"", 0)
    start = worker.start(1, 200, [], b"first", False)
    assert start is not None
    assert front.receive_data(start + worker.offer(1)) == [p.Start(1, 200, [], b"first", False), p.Offer(1)]
    assert front.offered == 1 and worker.offer_answer(1) is None


def test_direct_stream_take_then_the_worker_writes_and_reports() -> None:
    front = _front()
    worker = WorkerConnection()
    _offered(front, worker)
    take = front.send_take(1, True)
    assert front.offered is None and front.direct == 1
    r, w = os.pipe()
    worker.receive_data(take, [r])  # (the client socket rides along)
    assert worker.offer_answer(1) == (r, True)
    assert worker.next_event() is None  # a control frame: applied, not queued
    # After a TAKE nothing but DIRECT (or ABORT, APP_ERROR) may come: no BODY.
    handed = worker.direct(1, 300, b"tail", False)
    assert front.receive_data(handed) == [p.Direct(1, 300, b"tail", False)]
    assert front.direct is None and front.in_flight == 1  # the rest comes by the pipe
    assert front.receive_data(p.encode_body(1, b"more") + worker.end(1)) == [p.Body(1, b"more"), p.End(1)]
    assert front.in_flight is None and front.error is None
    os.close(r)
    os.close(w)


def test_direct_stream_done_ends_the_request_and_keep_relays() -> None:
    front = _front()
    worker = WorkerConnection()
    _offered(front, worker)
    worker.receive_data(front.send_keep(1))
    assert worker.offer_answer(1) == ()
    assert front.receive_data(p.encode_body(1, b"b") + p.encode_end(1)) == [p.Body(1, b"b"), p.End(1)]
    front.send_request(2, HEAD, b"", 0)
    start = worker.start(2, 200, [], b"x", False)
    assert start is not None
    front.receive_data(start + worker.offer(2))
    worker.receive_data(front.send_take(2, False), [os.dup(0)])
    fd, chunked = worker.offer_answer(2)  # type: ignore[misc]
    os.close(fd)
    assert front.receive_data(worker.direct(2, 10, b"", True)) == [p.Direct(2, 10, b"", True)]
    assert front.in_flight is None and front.error is None


@pytest.mark.parametrize("after_take, frame", [
    (False, p.encode_body(1, b"b")),  # a BODY while the OFFER awaits its answer
    (False, p.encode_end(1)),
    (False, p.encode_offer(1)),  # a second OFFER
    (False, p.encode_direct(1, 1, b"", True)),  # DIRECT without a TAKE
    (True, p.encode_body(1, b"b")),  # a BODY after the TAKE, before DIRECT
    (True, p.encode_end(1)),
    (True, p.encode_direct(2, 1, b"", True)),  # another request's
])
def test_direct_stream_frames_out_of_turn(after_take: bool, frame: bytes) -> None:
    front = _front()
    _offered(front, WorkerConnection())
    if after_take:
        front.send_take(1, False)
    assert front.receive_data(frame) == []
    assert isinstance(front.error, p.ProtocolError) and "out of turn" in str(front.error)


def test_an_offer_before_start_and_answers_nobody_asked_for() -> None:
    front = _front()
    front.send_request(1, HEAD, b"", 0)
    assert front.receive_data(p.encode_offer(1)) == []
    assert "out of turn" in str(front.error)
    with pytest.raises(RuntimeError):
        _front().send_take(1, True)  # no OFFER awaits an answer
    worker = WorkerConnection()
    with pytest.raises(p.ProtocolError, match="awaits none"):
        worker.receive_data(p.encode_keep(1))
    worker = WorkerConnection()
    worker.offer(1)
    with pytest.raises(p.ProtocolError, match="without the client's socket"):
        worker.receive_data(p.encode_take(1, False))


def test_a_cancel_while_an_offer_awaits_its_answer() -> None:
    front = _front()
    worker = WorkerConnection()
    _offered(front, worker)
    worker.receive_data(front.send_cancel(1))
    assert worker.cancelled(1)
    worker.abandon_offer(1)  # the worker stops waiting and acknowledges the cancel
    assert front.receive_data(worker.abort(1, p.CLIENT_LEFT)) == [p.Abort(1, p.CLIENT_LEFT)]
    assert front.in_flight is None and front.offered is None and front.error is None
    # An answer already on its way is dropped by the worker (a TAKE's socket closed).
    late = os.dup(0)
    worker.receive_data(p.encode_take(1, True), [late])
    with pytest.raises(OSError):
        os.fstat(late)
    assert worker.next_event() is None
    front.send_request(2, HEAD, b"", 0)
    worker.receive_data(p.encode_request(2, HEAD, b"", 0))
    assert worker.next_event() == p.Request(2, WIRE_HEAD, b"", 0)


def test_an_abort_after_take_ends_the_request_and_close_drops_an_unused_socket() -> None:
    front = _front()
    worker = WorkerConnection()
    _offered(front, worker)
    fd = os.dup(0)
    worker.receive_data(front.send_take(1, True), [fd])
    assert front.receive_data(worker.abort(1, "client disconnected")) == [p.Abort(1, "client disconnected")]
    assert front.in_flight is None and front.direct is None
    worker.close()  # the TAKE's descriptor was never taken: closed here
    with pytest.raises(OSError):
        os.fstat(fd)


def test_data_after_a_file_frame_is_a_protocol_error() -> None:
    front = _front()
    front.send_request(1, HEAD, b"", 0)
    front.receive_data(p.encode_file(1, 200, [], 0, 5) + p.encode_log(20, "x"))
    assert front.error is not None and "FILE_ACK" in str(front.error)


@pytest.mark.parametrize("data,count", [(b"", 0), (b"F", 0), (b"F", 2), (b"X", 1)])
def test_a_file_descriptor_that_does_not_arrive_as_agreed(data: bytes, count: int) -> None:
    front = _front()
    front.send_request(1, HEAD, b"", 0)
    front.receive_data(p.encode_file(1, 200, [], 0, 5))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]
    with pytest.raises(p.ProtocolError):
        front.receive_fd(data, fds)
    for fd in fds:  # closed by the connection
        with pytest.raises(OSError):
            os.fstat(fd)


def test_eof_while_a_file_descriptor_is_awaited() -> None:
    front = _front()
    front.send_request(1, HEAD, b"", 0)
    front.receive_data(p.encode_file(1, 200, [], 0, 5))
    assert "before passing its file" in str(front.receive_eof())


def test_the_worker_refuses_a_file_ack_it_did_not_ask_for() -> None:
    worker = WorkerConnection()
    with pytest.raises(p.ProtocolError, match="FILE_ACK"):
        worker.receive_data(p.encode_file_ack(3))
    worker = WorkerConnection()
    worker.file(4, 200, [], 0, 1)
    with pytest.raises(p.ProtocolError, match="FILE_ACK"):
        worker.receive_data(p.encode_file_ack(5))


# ---------------------------------------------------------------- the worker


def test_worker_control_frames_are_applied_not_queued() -> None:
    worker = WorkerConnection(rss=lambda: 4096)
    worker.receive_data(p.encode_request(1, HEAD, b"", 0) + p.encode_cancel(1) + p.encode_report(True))
    assert worker.cancelled(1) and not worker.cancelled(2)
    assert worker.next_event() == p.Request(1, WIRE_HEAD, b"", 0)
    assert worker.next_event() is None
    worker.forget(1)
    assert not worker.cancelled(1)
    # REPORT: USAGE in the same write as, and just before, every last frame.
    assert _decode(worker.end(1)) == [p.Usage(4096), p.End(1)]
    assert _decode(worker.abort(1, "x")) == [p.Usage(4096), p.Abort(1, "x")]
    assert _decode(worker.start(1, 200, [], b"", True)) == [p.Usage(4096), p.Start(1, 200, [], b"", True)]
    assert _decode(worker.start(1, 200, [], b"", False)) == [p.Start(1, 200, [], b"", False)]


def test_a_read_that_is_one_request_frame_is_the_request() -> None:
    frame = p.encode_request(1, HEAD, b"", 0)
    assert WorkerConnection().whole_request(memoryview(bytearray(frame))) == p.Request(1, WIRE_HEAD, b"", 0)
    assert WorkerConnection().whole_request(frame) == p.Request(1, WIRE_HEAD, b"", 0)


@pytest.mark.parametrize("data", [
    p.encode_request(1, HEAD, b"", 0)[:-1],  # a part
    p.encode_request(1, HEAD, b"", 0) + p.encode_cancel(1),  # more than one frame
    p.encode_cancel(1),  # another kind
    _frame(p.REQUEST, [1, "no head", None, 0]),  # malformed: the decoder's to reject
    _frame(p.REQUEST, [1, HEAD, None]),
    p.HEADER.pack(p.VERSION, p.REQUEST, 1) + b"\xc1",
    p.HEADER.pack(p.VERSION + 1, p.REQUEST, 1) + b"\x01",
    b"",
])
def test_anything_else_goes_the_general_way(data: bytes) -> None:
    assert WorkerConnection().whole_request(data) is None


def test_no_shortcut_while_something_is_pending_or_queued() -> None:
    frame = p.encode_request(2, HEAD, b"", 0)
    worker = WorkerConnection()
    worker.receive_data(frame[:3])  # a partial frame pending
    assert worker.whole_request(frame) is None
    worker = WorkerConnection()
    worker.receive_data(p.encode_request(1, HEAD, b"", 0))  # a request queued
    assert worker.whole_request(frame) is None
    assert worker.next_event() == p.Request(1, WIRE_HEAD, b"", 0)
    assert worker.whole_request(frame) == p.Request(2, WIRE_HEAD, b"", 0)


def test_worker_eof_cancels_everything() -> None:
    worker = WorkerConnection()
    worker.receive_data(b"")
    assert worker.eof and worker.cancelled(7)


def test_worker_body_frames_are_pieces() -> None:
    worker = WorkerConnection()
    chunk = os.urandom(2 * PIECE + 10)
    frames = worker.body(9, chunk)
    assert [len(data) for _, data in frames] == [PIECE, PIECE, 10]
    assert _decode(b"".join(bytes(h) + bytes(d) for h, d in frames)) == [
        p.Body(9, chunk[:PIECE]), p.Body(9, chunk[PIECE : 2 * PIECE]), p.Body(9, chunk[2 * PIECE :])]
    assert worker.start(9, 200, [], chunk[: PIECE + 1], True) is None  # too big for START: as BODY frames
    assert worker.start(9, 200, [], chunk[:PIECE], True) is not None


@pytest.mark.parametrize("stream,match", [
    (p.encode_request_shm(1, HEAD, 5), "REQUEST_SHM"),
    (p.encode_shm_credit(1), "SHM_CREDIT"),
    (p.encode_shm_setup(4096), "memfd"),
])
def test_worker_ring_frames_need_a_ring(stream: bytes, match: str) -> None:
    worker = WorkerConnection()
    with pytest.raises(p.ProtocolError, match=match):
        worker.receive_data(stream)


def test_worker_refuses_credit_beyond_what_is_outstanding_and_a_second_ring() -> None:
    front = _front(shm_size=RING)
    worker = _worker_for(front)
    with pytest.raises(p.ProtocolError, match="outstanding"):
        worker.receive_data(p.encode_shm_credit(1))
    r = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(p.ProtocolError, match="second SHM_SETUP"):
        worker.receive_data(p.encode_shm_setup(RING), [r])
    worker.close()  # closes the descriptor left over
    with pytest.raises(OSError):
        os.fstat(r)
    front.close()


def test_worker_refuses_a_ring_it_cannot_map() -> None:
    worker = WorkerConnection()
    r = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(p.ProtocolError, match="cannot map"):
        worker.receive_data(p.encode_shm_setup(0), [r])
    with pytest.raises(OSError):
        os.fstat(r)


def test_worker_descriptors_in_order() -> None:
    worker = WorkerConnection()
    a, b = os.pipe()
    worker.receive_data(p.encode_spawn(1, 2), [a, b])
    assert worker.next_event() == p.Spawn(1, 2)
    with pytest.raises(p.ProtocolError, match="expected 3"):
        worker.take_fds(3)
    assert worker.take_fds(2) == [a, b]
    with pytest.raises(p.ProtocolError, match="none arrived"):
        worker.take_fd()
    os.close(a)
    os.close(b)


def test_the_worker_rejects_a_bad_request_and_goes_on() -> None:
    worker = WorkerConnection()
    worker.receive_data(_frame(p.Kind.REQUEST, [3, "not a head", None, 0]) + p.encode_request(4, HEAD, b"", 0))
    rejected = worker.next_event()
    assert isinstance(rejected, p.Rejected) and rejected.rid == 3
    assert worker.next_event() == p.Request(4, WIRE_HEAD, b"", 0)


# ---------------------------------------------------------------- both ends, all in memory


def test_both_ends_through_a_whole_conversation() -> None:
    front = FrontConnection(shm_size=RING, report_rss=True)
    assert front.receive_data(p.encode_ready(5)) == [p.Ready(5, p.VERSION)]
    worker = _worker_for(front, rss=1 << 20)
    assert worker.report_rss and worker.ring is not None
    for rid in range(1, 4):
        body = os.urandom(MIN_CHUNK * rid)
        data = front.send_request(rid, HEAD, body, len(body))
        worker.receive_data(data)
        request = worker.next_event()
        assert request == p.Request(rid, WIRE_HEAD, body, len(body))
        out = [worker.start(rid, 200, [], b"", False)]
        view = memoryview(body[::-1])
        while view:
            frame, n = worker.shm_piece(rid, view)
            if not n:  # full: the front reads and credits
                break
            out.append(frame)
            view = view[n:]
        out.append(worker.end(rid))
        events = front.receive_data(b"".join(out))
        assert b"".join(e.data for e in events if type(e) is p.Body) == body[::-1]
        assert events[-2:] == [p.Usage(1 << 20), p.End(rid)]
        for data, fds in front.outbox:
            worker.receive_data(data, fds)
        front.outbox.clear()
        assert worker.ring.outstanding == 0 and front.in_flight is None
    front.close()
    worker.close()


# ---------------------------------------------------------------- a frame kind is one place


def test_a_new_kind_needs_only_its_event_class() -> None:
    # A kind registered next to its event is decoded, checked and encoded with
    # no change to the decoder or the connections' plumbing.
    kind = 99

    @ev.frame(kind, lambda worker_id, trace: isinstance(worker_id, int) and isinstance(trace, str))
    class Dump(NamedTuple):
        worker_id: int
        trace: str

    try:
        decoder = p.Decoder()
        decoder.feed(p.encode(Dump(3, "Thread 1:\n  frame")) + _frame(kind, [3, None]))
        events = decoder.events()
        assert next(events) == Dump(3, "Thread 1:\n  frame")
        with pytest.raises(p.ProtocolError, match="malformed Dump"):
            next(events)
        with pytest.raises(ValueError, match="twice"):
            ev.frame(kind)(Dump)
    finally:
        del ev.FRAMES[kind]


def test_every_kind_has_its_event_and_the_generic_encoder_matches() -> None:
    assert set(ev.FRAMES) == set(p.Kind)
    for kind, (cls, _) in ev.FRAMES.items():
        assert cls.KIND == kind
    assert p.encode(p.Start(1, 200, [(b"a", b"b")], b"x", True)) == p.encode_start(1, 200, [(b"a", b"b")], b"x", True)
    assert p.encode(p.Request(1, WIRE_HEAD, None, 5)) == p.encode_request(1, HEAD, None, 5)
    assert p.REQUEST is p.Kind.REQUEST and p._KIND_NAMES[1] == "REQUEST"


# ---------------------------------------------------------------- fuzz: never a crash, never a hang


def _valid_conversation() -> bytes:
    return (p.encode_usage(5) + p.encode_app_error(1, "e") + p.encode_start(1, 200, [(b"a", b"b")], b"x", False)
            + p.encode_body(1, b"y" * 300) + p.encode_shm_body(1, 0, 10) + p.encode_log(40, "l") + p.encode_end(1))


def _feed_front(pieces: list[bytes], shm: bool) -> FrontConnection:
    conn = FrontConnection(shm_size=RING if shm else 0)
    conn.receive_data(p.encode_ready(1))
    for _, fds in conn.outbox:
        for fd in fds:
            os.close(fd)
    conn.outbox.clear()
    conn.send_request(1, HEAD, b"", 0)
    for piece in pieces:
        events = conn.receive_data(piece)
        assert all(isinstance(e, tuple) for e in events)
        if conn.awaiting_fd:
            with pytest.raises(p.ProtocolError):
                conn.receive_fd(b"", [])
            break
    error = conn.receive_eof()
    assert error is None or isinstance(error, p.ProtocolError)
    assert conn.error is error or (error is None and conn.error is None)
    conn.close()
    return conn


_SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@given(st.lists(st.binary(max_size=300), max_size=6), st.booleans())
@_SETTINGS
def test_fuzz_front_connection_random_bytes(pieces: list[bytes], shm: bool) -> None:
    _feed_front(pieces, shm)


@given(st.integers(0, len(_valid_conversation())), st.integers(0, len(_valid_conversation())), st.booleans())
@_SETTINGS
def test_fuzz_front_connection_truncated_valid_stream(cut: int, split: int, shm: bool) -> None:
    data = _valid_conversation()[:cut]
    split = min(split, cut)
    conn = _feed_front([data[:split], data[split:]], shm)
    if cut == len(_valid_conversation()):
        assert conn.error is None or not shm and "SHM_BODY" in str(conn.error)
    elif conn.error is None:
        assert conn.in_flight == 1  # a cut stream never ends the request


@given(st.integers(0, len(_valid_conversation()) - 1), st.integers(0, 255), st.booleans())
@_SETTINGS
def test_fuzz_front_connection_one_corrupted_byte(index: int, value: int, shm: bool) -> None:
    data = bytearray(_valid_conversation())
    data[index] = value
    _feed_front([bytes(data)], shm)


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)


_FEW = settings(_SETTINGS, max_examples=80)


@given(st.lists(st.tuples(st.sampled_from(sorted(p.Kind)), st.lists(_msgpack_values, max_size=6)), max_size=5),
       st.booleans())
@_FEW
def test_fuzz_front_connection_well_framed_frames_of_any_shape(frames: list, shm: bool) -> None:
    _feed_front([b"".join(_frame(kind, fields) for kind, fields in frames)], shm)


#: Valid frames, mostly for request 1: in random orders they break every sequencing rule.
_TO_FRONT = [
    p.encode_start(1, 200, [], b"", False), p.encode_start(1, 200, [], b"x", True), p.encode_body(1, b"b"),
    p.encode_end(1), p.encode_abort(1, "r"), p.encode_app_error(1, "e"), p.encode_file(1, 200, [], 0, 1),
    p.encode_shm_body(1, 0, 8), p.encode_shm_body(1, RING - 4, 8), p.encode_usage(1), p.encode_log(10, "l"),
    p.encode_ready(3), p.encode_start(2, 200, [], b"", False), p.encode_cancel(1), p.encode_exited(2, 0),
    p.encode_offer(1), p.encode_direct(1, 5, b"", False), p.encode_direct(1, 5, b"t", True),
]
_TO_WORKER = [
    p.encode_request(1, HEAD, b"", 0), p.encode_request_shm(1, HEAD, 4), p.encode_request(1, HEAD, None, 9),
    p.encode_cancel(1), p.encode_file_ack(1), p.encode_report(True), p.encode_shm_credit(4),
    p.encode_shm_setup(4096), p.encode_spawn(1, 1), p.encode_end(1), _frame(p.Kind.REQUEST, [2, "bad", None, 0]),
    p.encode_take(1, True), p.encode_keep(1),
]
_MANY = settings(_SETTINGS, max_examples=500)


@given(st.lists(st.sampled_from(_TO_FRONT), max_size=8), st.booleans())
@_MANY
def test_fuzz_front_connection_valid_frames_in_any_order(frames: list[bytes], shm: bool) -> None:
    _feed_front([b"".join(frames)], shm)


@given(st.lists(st.sampled_from(_TO_WORKER), max_size=8))
@_MANY
def test_fuzz_worker_connection_valid_frames_in_any_order(frames: list[bytes]) -> None:
    _feed_worker([b"".join(frames)])


def _feed_worker(pieces: list[bytes]) -> None:
    worker = WorkerConnection(rss=lambda: 1)
    try:
        for piece in pieces:
            worker.receive_data(piece)
            while (event := worker.next_event()) is not None:
                assert isinstance(event, tuple)
    except p.ProtocolError:
        pass
    finally:
        worker.close()


@given(st.lists(st.binary(max_size=300), max_size=6))
@_SETTINGS
def test_fuzz_worker_connection_random_bytes(pieces: list[bytes]) -> None:
    _feed_worker(pieces)


@given(st.lists(st.tuples(st.sampled_from(sorted(p.Kind)), st.lists(_msgpack_values, max_size=6)), max_size=5))
@_FEW
def test_fuzz_worker_connection_well_framed_frames_of_any_shape(frames: list) -> None:
    _feed_worker([b"".join(_frame(kind, fields) for kind, fields in frames)])


def _decode(data: bytes) -> list:
    decoder = p.Decoder()
    decoder.feed(data)
    return list(decoder.events())
