"""A head over the IPC frame limit, or a garbled frame, fails one request and
never the worker (issue 11, item 1): the front refuses such heads (431), and a
worker that still gets a bad frame answers for that request and lives on."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import threading
from typing import Any

import msgpack
import pytest

from a2wsgi_mp.environ import build_environ
from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.ipc.worker_pipe import WorkerPipe
from a2wsgi_mp.pool import app as front
from a2wsgi_mp.pool.app import WSGIPool
from a2wsgi_mp.workers.process import serve_slot

from . import inprocess

HEAD = {"method": "GET", "scheme": "http", "path": "/hello", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"x")], "client": ["127.0.0.1", 5], "server": ["127.0.0.1", 80], "http_version": "1.1"}


def _oversized_request(rid: int) -> bytes:
    """A REQUEST frame past MAX_PAYLOAD whose payload starts like a real one."""
    head = dict(HEAD, headers=[(b"x-big", b"a" * (protocol.MAX_PAYLOAD + 1024))])
    return protocol.encode_request(rid, head, b"", 0)


# ---------------------------------------------------------------- the decoder


def test_lenient_decoder_skips_an_oversized_frame_streaming_and_goes_on() -> None:
    decoder = protocol.Decoder(lenient=True)
    big = _oversized_request(7)
    good = protocol.encode_request(8, HEAD, b"", 0)
    events: list[Any] = []
    stream = big + good
    for i in range(0, len(stream), 1 << 20):  # in reads, never holding the big frame
        decoder.feed(stream[i : i + (1 << 20)])
        events.extend(decoder.events())
        assert decoder.pending <= 1 << 20
    assert len(events) == 2
    rejected, request = events
    assert isinstance(rejected, protocol.Rejected) and rejected.rid == 7 and rejected.oversized
    assert rejected.kind == protocol.REQUEST
    assert isinstance(request, protocol.Request) and request.rid == 8


def test_lenient_decoder_reports_a_garbled_frame_with_its_request_id() -> None:
    decoder = protocol.Decoder(lenient=True)
    garbled = protocol._frame(protocol.REQUEST, msgpack.packb([9, "not a head", None, 0]))
    decoder.feed(garbled + protocol.encode_cancel(3))
    events = list(decoder.events())
    assert isinstance(events[0], protocol.Rejected) and events[0].rid == 9 and not events[0].oversized
    assert events[1] == protocol.Cancel(3)


def test_strict_decoder_still_fails_the_stream() -> None:
    decoder = protocol.Decoder()
    decoder.feed(_oversized_request(1)[:64])
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        list(decoder.events())


# ---------------------------------------------------------------- the worker


def _hello(environ: dict, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"keys " + ",".join(sorted(k for k in environ if k.startswith("HTTP_"))).encode()]


def _responses(sock: socket.socket, count: int) -> dict[int, tuple[int, bytes]]:
    """``count`` complete responses from a worker, by request id."""
    decoder = protocol.Decoder()
    got: dict[int, list[Any]] = {}
    done: dict[int, tuple[int, bytes]] = {}
    sock.settimeout(30)
    while len(done) < count:
        data = sock.recv(1 << 16)
        assert data, "the worker hung up"
        decoder.feed(data)
        for event in decoder.events():
            if isinstance(event, protocol.Start):
                got[event.rid] = [event.status, event.body]
                if event.done:
                    done[event.rid] = (event.status, event.body)
            elif isinstance(event, protocol.Body):
                got[event.rid][1] += event.data
            elif isinstance(event, protocol.End):
                done[event.rid] = (got[event.rid][0], got[event.rid][1])
    return done


def test_worker_answers_a_bad_frame_and_serves_the_next_request() -> None:
    front_end, worker_end = socket.socketpair()
    pipe = WorkerPipe(worker_end)
    worker = threading.Thread(target=serve_slot, args=(_hello, pipe, False), daemon=True)
    worker.start()
    try:
        sender = threading.Thread(target=front_end.sendall, args=(
            _oversized_request(1)
            + protocol._frame(protocol.REQUEST, msgpack.packb([2, {"headers": 5}, None, 0]))
            + protocol.encode_request(3, dict(HEAD, headers=[(b"x_forwarded_for", b"6.6.6.6"), (b"x-ok", b"1")]),
                                      b"", 0)
            + protocol.encode_request(4, dict(HEAD, headers=[(b"x_a", b"1")], header_map="refuse"), b"", 0),
        ), daemon=True)
        sender.start()
        answers = _responses(front_end, 4)
        sender.join(30)
    finally:
        front_end.close()
        worker.join(30)
    assert answers[1][0] == 431
    assert answers[2][0] == 500
    assert answers[3] == (200, b"keys HTTP_X_OK")
    assert answers[4][0] == 400
    assert not worker.is_alive(), "the slot ends at EOF, not on a bad frame"


def test_worker_answers_frames_that_come_one_read_each() -> None:
    # A read that is exactly one REQUEST frame skips the decoder (WorkerPipe._read); a bad
    # one alone in its read must still be answered as one in a stream is.
    front_end, worker_end = socket.socketpair()
    pipe = WorkerPipe(worker_end)
    worker = threading.Thread(target=serve_slot, args=(_hello, pipe, False), daemon=True)
    worker.start()
    frames = [
        (1, protocol.encode_request(1, dict(HEAD, headers=[(b"x-ok", b"1")]), b"", 0)),
        (2, protocol._frame(protocol.REQUEST, msgpack.packb([2, {"headers": 5}, None, 0]))),
        (3, protocol._frame(protocol.REQUEST, msgpack.packb([3, HEAD, 7, 0]))),  # (a body that is no bytes)
        (4, protocol._frame(protocol.REQUEST, msgpack.packb([4, HEAD, b""]))),  # (a field short)
        (5, protocol._frame(protocol.REQUEST, b"\xc1")),  # (no msgpack at all: no request id either)
        (6, protocol.encode_request(6, dict(HEAD, headers=[(b"x_a", b"1")], header_map="refuse"), b"", 0)),
        (7, protocol.encode_request(7, dict(HEAD, headers=[(b"x-ok", b"1")]), b"", 0)),
    ]
    answers = {}
    try:
        for rid, frame in frames:
            front_end.sendall(frame)
            if rid != 5:
                answers.update(_responses(front_end, 1))
    finally:
        front_end.close()
        worker.join(30)
    assert answers[1] == (200, b"keys HTTP_X_OK") and answers[7] == (200, b"keys HTTP_X_OK")
    assert answers[2][0] == 500 and answers[3][0] == 500 and answers[4][0] == 500
    assert answers[6][0] == 400
    assert not worker.is_alive(), "the slot ends at EOF, not on a bad frame"


# ---------------------------------------------------------------- the front


def test_front_refuses_a_head_past_the_ipc_limit_and_keeps_its_worker() -> None:
    async def main() -> tuple[Any, ...]:
        pool = WSGIPool("tests.apps.core_app:app", workers=1, threads=1, timeout=30)
        await pool.startup()
        try:
            first = await inprocess.call(pool, headers=[(b"host", b"x")])
            # 70 MB of headers: more than one IPC frame may carry.
            huge = [(b"x-h%d" % i, b"v" * 7000) for i in range(10_000)]
            refused = await inprocess.call(pool, headers=huge)
            second = await inprocess.call(pool, headers=[(b"host", b"x")])
            return first, refused, second
        finally:
            await pool.shutdown()

    with asyncio.Runner() as runner:
        first, refused, second = runner.run(main())
    assert refused[0]["status"] == 431
    assert first[0]["status"] == second[0]["status"] == 200
    pid = json.loads(first[1]["body"])["pid"]
    assert json.loads(second[1]["body"])["pid"] == pid != os.getpid(), "the same worker serves on"


def test_pool_header_map_reaches_the_worker() -> None:
    async def main() -> tuple[dict, dict]:
        seen = []
        for header_map in ("drop", "dangerous"):
            pool = WSGIPool("tests.apps.core_app:app", workers=1, threads=1, timeout=30, header_map=header_map)
            await pool.startup()
            try:
                sent = await inprocess.call(pool, "/environ", [(b"host", b"x"), (b"x_forwarded_for", b"6.6.6.6")])
            finally:
                await pool.shutdown()
            seen.append(json.loads(b"".join(m.get("body", b"") for m in sent[1:])))
        return seen[0], seen[1]

    with asyncio.Runner() as runner:
        dropped, kept = runner.run(main())
    assert "HTTP_X_FORWARDED_FOR" not in dropped
    assert kept["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"


def test_front_head_bound_leaves_room_for_the_largest_inline_body() -> None:
    assert front.MAX_HEAD + front.MAX_INLINE + 1024 * 1024 < protocol.MAX_PAYLOAD


def test_in_process_environ_drops_underscore_names_by_default() -> None:
    scope = dict(HEAD, headers=[(b"x_forwarded_for", b"6.6.6.6"), (b"x-forwarded-for", b"1.2.3.4")])
    assert build_environ(scope, io.BytesIO())["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    kept = build_environ(scope, io.BytesIO(), header_map="dangerous")
    assert kept["HTTP_X_FORWARDED_FOR"] == "6.6.6.6,1.2.3.4"
