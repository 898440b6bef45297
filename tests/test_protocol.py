"""The sans-IO wire protocol: bytes in, events out, and nothing but ProtocolError on garbage."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2wsgi_mp.ipc import protocol as p

# One sample of every frame kind, with the event it must decode to.
SAMPLES = [
    (p.encode_request(7, {"method": "GET", "path": "/x", "headers": [[b"host", b"h"]]}, b"body", 4),
     p.Request(7, p.head_fields({"method": "GET", "path": "/x", "headers": ((b"host", b"h"),)}), b"body", 4)),
    (p.encode_request(8, {"method": "POST"}, None, 123456789),
     p.Request(8, p.head_fields({"method": "POST"}), None, 123456789)),
    (p.encode_cancel(9), p.Cancel(9)),
    (p.encode_spawn(3, 4), p.Spawn(3, 4)),
    (p.encode_ready(4242), p.Ready(4242, p.VERSION)),
    (p.encode_boot_error("Traceback: nope ✗"), p.BootError("Traceback: nope ✗")),
    (p.encode_start(10, 200, [(b"content-type", b"text/plain")], b"hi", False),
     p.Start(10, 200, [(b"content-type", b"text/plain")], b"hi", False)),
    (p.encode_start(11, 204, [], b"", True), p.Start(11, 204, [], b"", True)),
    (p.encode_body(12, b"\x00\xff" * 1000), p.Body(12, b"\x00\xff" * 1000)),
    (p.encode_body(0xFFFFFFFF, b""), p.Body(0xFFFFFFFF, b"")),
    (p.encode_end(13), p.End(13)),
    (p.encode_abort(14, "client went away"), p.Abort(14, "client went away")),
    (p.encode_log(40, "an error line"), p.Log(40, "an error line")),
    (p.encode_app_error(18, "Error in WSGI application (GET /):\nTraceback ✗"),
     p.AppError(18, "Error in WSGI application (GET /):\nTraceback ✗")),
    (p.encode_spawned(5, 999), p.Spawned(5, 999)),
    (p.encode_exited(999, 9), p.Exited(999, 9)),
]
if hasattr(p, "encode_file"):  # the file hand-off frames (response bodies passed by descriptor)
    SAMPLES += [
        (p.encode_file(15, 200, [(b"content-length", b"10")], 5, 10),
         p.File(15, 200, [(b"content-length", b"10")], 5, 10)),
        (p.encode_file_ack(15), p.FileAck(15)),
    ]
if hasattr(p, "encode_shm_body"):  # the shared-memory ring frames (--ipc shm)
    SAMPLES += [
        (p.encode_shm_setup(1 << 20), p.ShmSetup(1 << 20)),
        (p.encode_shm_credit(65536), p.ShmCredit(65536)),
        (p.encode_shm_body(16, 4096, 65536), p.ShmBody(16, 4096, 65536)),
    ]
if hasattr(p, "encode_request_shm"):  # a request body in the slot's ring (--ipc shm)
    SAMPLES += [(p.encode_request_shm(17, {"method": "POST"}, 40000),
                 p.RequestShm(17, p.head_fields({"method": "POST"}), 40000))]
if hasattr(p, "encode_usage"):  # RSS reports for max_rss (version 2)
    SAMPLES += [(p.encode_report(True), p.Report(True)), (p.encode_report(False), p.Report(False)),
                (p.encode_usage(215 << 20), p.Usage(215 << 20))]
if hasattr(p, "encode_offer"):  # the direct stream (a worker writes a streamed body to the client)
    SAMPLES += [(p.encode_offer(19), p.Offer(19)), (p.encode_take(19, True), p.Take(19, True)),
                (p.encode_keep(20), p.Keep(20)), (p.encode_direct(19, 1 << 33, b"5\r\nab", False),
                                                 p.Direct(19, 1 << 33, b"5\r\nab", False))]
STREAM = b"".join(frame for frame, _ in SAMPLES)
EXPECTED = [event for _, event in SAMPLES]


def decode_all(*pieces: bytes) -> list[p.Event]:
    decoder = p.Decoder()
    events: list[p.Event] = []
    for piece in pieces:
        decoder.feed(piece)
        events.extend(decoder.events())
    assert decoder.pending == 0
    return events


def test_every_kind_is_sampled() -> None:
    kinds = {frame[1] for frame, _ in SAMPLES}
    assert kinds >= {p.REQUEST, p.CANCEL, p.SPAWN, p.READY, p.BOOT_ERROR, p.START, p.BODY, p.END, p.ABORT,
                     p.LOG, p.SPAWNED, p.EXITED}
    assert kinds == set(p._KIND_NAMES), "a frame kind without a round-trip sample"


@pytest.mark.parametrize("frame,event", SAMPLES, ids=[type(e).__name__ for _, e in SAMPLES])
def test_round_trip(frame: bytes, event: p.Event) -> None:
    version, kind, length = p.HEADER.unpack_from(frame)
    assert version == p.VERSION
    assert length == len(frame) - p.HEADER_SIZE
    assert decode_all(frame) == [event]
    assert type(decode_all(frame)[0]) is type(event)


def test_response_headers_decode_as_a_list_of_byte_tuples() -> None:
    # What ASGI servers and middlewares expect (Starlette's MutableHeaders appends to the list).
    frame = p.encode_start(1, 200, [(b"a", b"1"), (b"b", b"2")], b"", True)
    headers = decode_all(frame)[0].headers
    assert type(headers) is list and all(type(h) is tuple for h in headers)


def test_body_header_plus_data_equals_encode_body() -> None:
    data = b"chunk" * 100
    assert p.encode_body_header(5, len(data)) + data == p.encode_body(5, data)


def test_all_frames_in_one_feed() -> None:
    assert decode_all(STREAM) == EXPECTED


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        assert decode_all(STREAM[:cut], STREAM[cut:]) == EXPECTED, cut


def test_fed_one_byte_at_a_time() -> None:
    decoder = p.Decoder()
    events: list[p.Event] = []
    for i in range(len(STREAM)):
        decoder.feed(STREAM[i : i + 1])
        events.extend(decoder.events())
    assert events == EXPECTED
    assert decoder.pending == 0


def _receive_from_one_buffer(*pieces: bytes, lenient: bool = False) -> list[p.Event]:
    """Each piece as the worker's transport passes it: a view of one receive buffer,
    overwritten (with garbage past the piece) before the next read."""
    decoder = p.Decoder(lenient=lenient)
    events: list[p.Event] = []
    buf = bytearray(len(STREAM) + 64)
    view = memoryview(buf)
    for piece in pieces:
        buf[:] = b"\xee" * len(buf)
        buf[: len(piece)] = piece
        decoder.receive(view[: len(piece)], events)
    buf[:] = b"\xee" * len(buf)  # (nothing decoded later may come from the old bytes)
    decoder.receive(b"", events)
    assert decoder.pending == 0
    return events


def test_memoryviews_of_a_reused_buffer_decode_at_every_split() -> None:
    # The worker decodes straight out of its receive buffer: a partial frame must be
    # copied before the buffer is reused, and nothing decoded may point into it.
    for cut in range(len(STREAM) + 1):
        assert _receive_from_one_buffer(STREAM[:cut], STREAM[cut:]) == EXPECTED, cut


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
@settings(max_examples=200, deadline=None, database=None)
def test_memoryviews_of_a_reused_buffer_decode_at_random_splits(cuts: list[int]) -> None:
    bounds = sorted(set([0, *cuts, len(STREAM)]))
    pieces = [STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert _receive_from_one_buffer(*pieces) == EXPECTED


def test_an_oversized_frame_streams_past_as_memoryviews() -> None:
    # The lenient decoder skips a frame over the limit as it arrives; the frame after it
    # decodes even when it shares a read (a view) with the skipped frame's tail.
    huge = p.HEADER.pack(p.VERSION, p.REQUEST, p.MAX_PAYLOAD + 1) + msgpack.packb([7]) + b"\0" * 40
    after = p.encode_end(8)
    decoder = p.Decoder(lenient=True)
    events: list[p.Event] = []
    decoder.receive(memoryview(bytearray(huge)), events)
    assert [type(e) for e in events] == [p.Rejected] and events[0].rid == 7
    rest = p.MAX_PAYLOAD + 1 - (len(huge) - p.HEADER_SIZE)
    decoder._skip = rest  # (as if the frame's middle had streamed past)
    decoder.receive(memoryview(bytearray(b"\0" * rest + after)), events)
    assert events[1:] == [p.End(8)] and decoder.pending == 0


def test_partial_frame_is_pending_not_an_event() -> None:
    frame = p.encode_end(1)
    decoder = p.Decoder()
    decoder.feed(frame[:-1])
    assert list(decoder.events()) == []
    assert decoder.pending == len(frame) - 1
    decoder.feed(frame[-1:])
    assert list(decoder.events()) == [p.End(1)]
    assert decoder.pending == 0


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
@settings(max_examples=200, deadline=None, database=None)
def test_split_at_random_boundaries(cuts: list[int]) -> None:
    bounds = sorted(set([0, *cuts, len(STREAM)]))
    pieces = [STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert decode_all(*pieces) == EXPECTED


@given(st.lists(st.integers(0, len(STREAM)), max_size=12), st.lists(st.booleans(), max_size=13))
@settings(max_examples=200, deadline=None, database=None)
def test_bytes_bytearray_and_views_mixed(cuts: list[int], kinds: list[bool]) -> None:
    # feed() keeps a bytes object uncopied while nothing is pending; other buffers are copied.
    bounds = sorted(set([0, *cuts, len(STREAM)]))
    pieces = [STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    mixed = [bytearray(x) if i < len(kinds) and kinds[i] else x for i, x in enumerate(pieces)]
    assert decode_all(*mixed) == EXPECTED


def test_fed_again_while_events_are_read() -> None:
    # Two frames and the start of a third; more arrives before the iteration ends.
    stream = p.encode_end(1) + p.encode_end(2) + p.encode_end(3)
    first, rest = stream[: len(stream) - 3], stream[len(stream) - 3 :]
    decoder = p.Decoder()
    decoder.feed(first)
    events = decoder.events()
    assert next(events) == p.End(1)
    decoder.feed(rest)
    assert list(events) == [p.End(2)]
    assert list(decoder.events()) == [p.End(3)]
    assert decoder.pending == 0


# ---------------------------------------------------------------- garbage


def _frame(kind: int, payload: bytes, version: int = p.VERSION) -> bytes:
    return p.HEADER.pack(version, kind, len(payload)) + payload


def _error(data: bytes) -> str:
    decoder = p.Decoder()
    decoder.feed(data)
    with pytest.raises(p.ProtocolError) as info:
        list(decoder.events())
    # The stream is unusable afterwards, and says so.
    with pytest.raises(p.ProtocolError, match="already failed"):
        list(decoder.events())
    return str(info.value)


def test_bad_version() -> None:
    message = _error(_frame(p.END, msgpack.packb([1]), version=p.VERSION + 1))
    assert f"version {p.VERSION + 1}" in message


def test_bad_version_detected_from_the_header_alone() -> None:
    message = _error(p.HEADER.pack(0, p.END, 3))
    assert "version 0" in message


def test_unknown_kind() -> None:
    message = _error(_frame(99, msgpack.packb([1])))
    assert "unknown frame kind 99" in message


def test_oversized_length_detected_from_the_header_alone() -> None:
    message = _error(p.HEADER.pack(p.VERSION, p.BODY, p.MAX_PAYLOAD + 1))
    assert str(p.MAX_PAYLOAD) in message
    assert str(p.MAX_PAYLOAD + 1) in message


def test_bad_msgpack() -> None:
    message = _error(_frame(p.END, b"\xc1"))  # 0xc1 is never valid msgpack
    assert "END" in message and "msgpack" in message


def test_trailing_bytes_in_payload_are_bad_msgpack() -> None:
    message = _error(_frame(p.CANCEL, msgpack.packb([1]) + b"\x00"))
    assert "CANCEL" in message


def test_truncated_msgpack() -> None:
    message = _error(_frame(p.START, msgpack.packb([1, 200, [], b"abc", True])[:-3]))
    assert "START" in message


def test_payload_not_an_array() -> None:
    message = _error(_frame(p.END, msgpack.packb({"rid": 1})))
    assert "END" in message and "array of 1" in message


def test_wrong_number_of_fields() -> None:
    message = _error(_frame(p.ABORT, msgpack.packb([1])))
    assert "ABORT" in message and "array of 2" in message


def test_body_shorter_than_its_request_id() -> None:
    message = _error(_frame(p.BODY, b"\x00\x01"))
    assert "BODY" in message


WRONG_TYPES = [
    (p.REQUEST, ["1", {}, None, 0]),
    (p.REQUEST, [1, [], None, 0]),
    (p.REQUEST, [1, {}, "text", 0]),
    (p.REQUEST, [1, {}, None, -1]),
    (p.REQUEST, [1, {}, None, "0"]),
    (p.CANCEL, [b"1"]),
    (p.END, [1.5]),
    (p.START, [1, "200", [], b"", True]),
    (p.START, [1, 200, [[b"a"]], b"", True]),
    (p.START, [1, 200, [["a", "b"]], b"", True]),
    (p.START, [1, 200, [b"ab"], b"", True]),
    (p.START, [1, 200, {}, b"", True]),
    (p.START, [1, 200, [], "body", True]),
    (p.START, [1, 200, [], b"", 1]),
    (p.ABORT, [1, b"reason"]),
    (p.APP_ERROR, [1, None]),
    (p.APP_ERROR, ["1", "m"]),
    (p.READY, [1, p.VERSION + 1]),
    (p.READY, ["1", p.VERSION]),
    (p.BOOT_ERROR, [b"message"]),
    (p.LOG, ["40", "m"]),
    (p.LOG, [40, None]),
    (p.SPAWN, [1, "2"]),
    (p.SPAWNED, [1, None]),
    (p.EXITED, [1.0, 0]),
]
if hasattr(p, "FILE"):
    WRONG_TYPES += [
        (p.FILE, [1, 200, [], -1, 10]),
        (p.FILE, [1, 200, [], 0, -1]),
        (p.FILE, [1, 200, [["a", "b"]], 0, 1]),
        (p.FILE_ACK, ["1"]),
    ]
if hasattr(p, "SHM_BODY"):
    WRONG_TYPES += [
        (p.SHM_SETUP, ["big"]),
        (p.SHM_CREDIT, [None]),
        (p.SHM_BODY, [1, -1, 10]),
        (p.SHM_BODY, [1, 0, -10]),
        (p.SHM_BODY, [1, b"0", 10]),
    ]
if hasattr(p, "USAGE"):
    WRONG_TYPES += [
        (p.REPORT, [1]),
        (p.REPORT, ["yes"]),
        (p.USAGE, [-1]),
        (p.USAGE, [1.5]),
        (p.USAGE, [None]),
    ]


@pytest.mark.parametrize("kind,fields", WRONG_TYPES, ids=[f"{p._KIND_NAMES[k]}-{i}" for i, (k, _) in
                                                          enumerate(WRONG_TYPES)])
def test_wrong_field_types(kind: int, fields: list) -> None:
    message = _error(_frame(kind, msgpack.packb(fields, use_bin_type=True)))
    assert "malformed" in message


def test_error_after_good_frames_yields_them_first() -> None:
    decoder = p.Decoder()
    decoder.feed(p.encode_end(1) + p.encode_cancel(2) + _frame(77, b""))
    events = []
    with pytest.raises(p.ProtocolError, match="unknown frame kind 77"):
        for event in decoder.events():
            events.append(event)
    assert events == [p.End(1), p.Cancel(2)]


# ---------------------------------------------------------------- fuzz


def _only_protocol_errors(*pieces: bytes) -> None:
    decoder = p.Decoder()
    try:
        for piece in pieces:
            decoder.feed(piece)
            for event in decoder.events():
                assert isinstance(event, tuple)
    except p.ProtocolError:
        pass


@given(st.binary(max_size=2048))
@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_protocol_errors(data)


@given(st.sampled_from(sorted(p._KIND_NAMES)), st.binary(max_size=512))
@settings(max_examples=500, deadline=None, database=None)
def test_fuzz_random_payload_behind_a_valid_header(kind: int, payload: bytes) -> None:
    _only_protocol_errors(_frame(kind, payload))


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, width=32)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=8,
)


@given(st.sampled_from(sorted(p._KIND_NAMES)), st.lists(_msgpack_values, max_size=6))
@settings(max_examples=200, deadline=None, database=None)
def test_fuzz_well_formed_msgpack_of_any_shape(kind: int, fields: list) -> None:
    _only_protocol_errors(_frame(kind, msgpack.packb(fields, use_bin_type=True)))


@given(st.integers(0, len(STREAM) - 1), st.integers(0, 255), st.integers(1, len(STREAM)))
@settings(max_examples=500, deadline=None, database=None)
def test_fuzz_one_corrupted_byte_in_a_valid_stream(index: int, value: int, cut: int) -> None:
    data = bytearray(STREAM)
    data[index] = value
    _only_protocol_errors(bytes(data[:cut]), bytes(data[cut:]))


def test_header_layout_is_stable() -> None:
    # The wire format since version 1: !BBI header, BODY payload = !I request id + raw bytes.
    # Version 2 added REPORT and USAGE; version 3 made a REQUEST's head an array.
    assert p.VERSION == 3
    assert p.HEADER_SIZE == 6
    assert p.encode_body(1, b"ab") == struct.pack("!BBII", 3, p.BODY, 6, 1) + b"ab"


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_peer_is_refused_at_its_first_frame(version: int) -> None:
    with pytest.raises(p.ProtocolError, match=f"unsupported protocol version {version} .this side speaks 3."):
        list(decode_stream(_frame(p.READY, msgpack.packb([1, version]), version=version)))
    # A version 2 front's REQUEST (a map head) never reaches the app, even in a lenient worker.
    v2_request = _frame(p.REQUEST, msgpack.packb([1, {"method": "GET"}, b"", 0]), version=2)
    with pytest.raises(p.ProtocolError, match="unsupported protocol version 2"):
        p.Decoder(lenient=True).receive(v2_request, [])
    assert p.Decoder(lenient=True).decode_one(v2_request, p.REQUEST) is None


def test_the_request_head_crosses_as_an_array_of_head_fields() -> None:
    head = {"method": "PUT", "scheme": "https", "path": "/p", "query_string": b"q=1", "root_path": "/r",
            "headers": [(b"a", b"b")], "client": ("1.2.3.4", 5), "server": ("h", 443), "http_version": "2",
            "header_map": "refuse", "direct": True}
    assert p.HEAD_FIELDS == (*head,)
    fields = msgpack.unpackb(p.encode_request(1, head, b"", 0)[p.HEADER_SIZE:], use_list=False)[1]
    assert fields == ("PUT", "https", "/p", b"q=1", "/r", ((b"a", b"b"),), ("1.2.3.4", 5), ("h", 443), "2",
                      "refuse", True)
    # Absent keys are nil; ``direct`` is whether the key is there.
    assert p.head_fields({"method": "GET"}) == ("GET", *[None] * 8, None, False)
    shm = msgpack.unpackb(p.encode_request_shm(2, {"method": "GET"}, 9)[p.HEADER_SIZE:], use_list=False)
    assert shm == (2, p.head_fields({"method": "GET"}), 9)


@pytest.mark.parametrize("head", [{"method": "GET"}, ("GET",) * 10, ("GET",) * 12, ["GET"] * 11, None])
def test_a_request_head_not_an_array_of_eleven_is_malformed(head: object) -> None:
    frame = _frame(p.REQUEST, msgpack.packb([1, head, b"", 0]))
    if head == ["GET"] * 11:  # (msgpack has one array type: this one is well-formed)
        assert p.Decoder().decode_one(frame, p.REQUEST) == p.Request(1, ("GET",) * 11, b"", 0)
        return
    with pytest.raises(p.ProtocolError, match="malformed Request"):
        list(decode_stream(frame))


def decode_stream(data: bytes):
    decoder = p.Decoder()
    decoder.feed(data)
    return decoder.events()


# ---------------------------------------------------------------- one frame, one read (Decoder.decode_one)


def _general(data: bytes) -> list[p.Event]:
    """What a lenient decoder's receive() makes of ``data`` (the worker's general way)."""
    out: list[p.Event] = []
    try:
        p.Decoder(lenient=True).receive(data, out)
    except p.ProtocolError:
        out.append(None)  # type: ignore[arg-type]  # (fatal: a wrong version)
    return out


@pytest.mark.parametrize("frame,event", [s for s in SAMPLES if s[1].KIND != p.BODY], ids=lambda v: repr(v)[:30])
def test_decode_one_is_the_frame_s_event(frame: bytes, event: p.Event) -> None:
    kind = int(event.KIND)  # type: ignore[union-attr]
    for data in (frame, memoryview(bytearray(frame))):
        decoder = p.Decoder(lenient=True)
        assert decoder.decode_one(data, kind) == event
        assert decoder.pending == 0
    assert p.Decoder().decode_one(frame, p.REQUEST if kind != p.REQUEST else p.CANCEL) is None  # (another kind)


def test_decode_one_declines_all_but_exactly_one_frame_and_consumes_nothing() -> None:
    frame = p.encode_request(1, {"method": "GET"}, b"", 0)
    decoder = p.Decoder(lenient=True)
    for data in (b"", frame[:6], frame[:-1], frame + frame, frame + p.encode_cancel(1)):
        assert decoder.decode_one(data, p.REQUEST) is None
        assert decoder.pending == 0
    decoder.receive(frame[:3], [])  # a partial frame pending: the next bytes do not start a frame
    assert decoder.decode_one(frame, p.REQUEST) is None
    out: list[p.Event] = []
    decoder.receive(frame[3:], out)
    assert out == [p.Request(1, p.head_fields({"method": "GET"}), b"", 0)]
    assert decoder.decode_one(frame, p.REQUEST) == p.Request(1, p.head_fields({"method": "GET"}), b"", 0)
    skipping = p.Decoder(lenient=True)  # an oversized frame streaming past
    skipping.receive(p.HEADER.pack(p.VERSION, p.REQUEST, p.MAX_PAYLOAD + 1) + msgpack.packb([5]) + b"x" * 10, out)
    assert skipping.decode_one(frame, p.REQUEST) is None
    broken = p.Decoder()
    with pytest.raises(p.ProtocolError):
        broken.receive(_frame(p.REQUEST, b"\xc1"), [])
    assert broken.decode_one(frame, p.REQUEST) is None


def _decode_one_agrees(kind: int, data: bytes) -> None:
    # decode_one is the general way's answer or no answer: never another event, never an error.
    got = p.Decoder(lenient=True).decode_one(data, kind)
    if got is not None:
        assert _general(data) == [got]
        assert not isinstance(got, p.Rejected)


@given(st.sampled_from(sorted(k for k in p._KIND_NAMES if k != p.BODY)), st.binary(max_size=512))
@settings(max_examples=300, deadline=None, database=None)
def test_fuzz_decode_one_random_payload(kind: int, payload: bytes) -> None:
    _decode_one_agrees(kind, _frame(kind, payload))


@given(st.sampled_from(sorted(k for k in p._KIND_NAMES if k != p.BODY)), st.lists(_msgpack_values, max_size=6))
@settings(max_examples=300, deadline=None, database=None)
def test_fuzz_decode_one_msgpack_of_any_shape(kind: int, fields: list) -> None:
    _decode_one_agrees(kind, _frame(kind, msgpack.packb(fields, use_bin_type=True)))


@given(st.integers(0, 64), st.integers(0, 255))
@settings(max_examples=300, deadline=None, database=None)
def test_fuzz_decode_one_corrupted_request(index: int, value: int) -> None:
    data = bytearray(p.encode_request(7, {"method": "GET", "headers": [(b"a", b"b")]}, b"xy", 2))
    data[index % len(data)] = value
    _decode_one_agrees(p.REQUEST, bytes(data))
