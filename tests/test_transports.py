"""Both IPC transports (``--ipc pipe`` and ``--ipc shm``) through a real server.

Also the sans-IO pieces of the shm transport (frames, ring bookkeeping), and
the promise that nothing is left behind: no /dev/shm entry, no temp file, no
stray memfd, even after a worker is SIGKILLed mid-transfer.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time

import httpx
import psutil
import pytest

from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.ipc.shm import Region, RingWriter

from .apps.transport_app import BLOCK
from .serverproc import ServerProcess, wait_for

APP = "tests.apps.transport_app:app"
MB = 1024 * 1024
RSS_LIMIT = 64 * MB

# ------------------------------------------------------------ sans-IO


def test_shm_frames_round_trip():
    dec = protocol.Decoder()
    dec.feed(protocol.encode_shm_setup(4096) + protocol.encode_shm_credit(10) + protocol.encode_shm_body(3, 100, 200))
    assert list(dec.events()) == [protocol.ShmSetup(4096), protocol.ShmCredit(10), protocol.ShmBody(3, 100, 200)]


def test_request_shm_frame_round_trip_and_needs_a_ring():
    from a2wsgi_mp.ipc.worker_pipe import WorkerPipe

    dec = protocol.Decoder()
    dec.feed(protocol.encode_request_shm(9, {"method": "POST"}, 5))
    assert list(dec.events()) == [protocol.RequestShm(9, protocol.head_fields({"method": "POST"}), 5)]
    a, b = socket.socketpair()
    pipe = WorkerPipe(b)
    a.sendall(protocol.encode_request_shm(9, {}, 5))
    with pytest.raises(protocol.ProtocolError):
        pipe.next_event()
    pipe.close()
    a.close()


@pytest.mark.parametrize("kind,fields", [(protocol.SHM_BODY, (1, -1, 5)), (protocol.SHM_CREDIT, ("x",)),
                                         (protocol.SHM_SETUP, (1, 2)), (protocol.REQUEST_SHM, (1, {}, -1))])
def test_malformed_shm_frames(kind, fields):
    dec = protocol.Decoder()
    dec.feed(protocol._frame(kind, protocol._packb(fields)))
    with pytest.raises(protocol.ProtocolError):
        list(dec.events())


def test_ring_pieces_never_wrap_and_reuse_space():
    region = Region.create(1000)
    try:
        ring = RingWriter(region)
        reader = Region(os.dup(region.fd), 1000)  # a second mapping, as in the other process
        pending: list[tuple[int, int]] = []
        out = bytearray()
        data = os.urandom(10_000)
        view = memoryview(data)
        step = 0
        while view or pending:
            if view:
                offset, n = ring.put(view[: 1 + (step * 137) % 700])
                if n:
                    assert offset + n <= 1000
                    pending.append((offset, n))
                    view = view[n:]
            step += 1
            if pending and (not view or step % 3 == 0 or ring.contiguous() == 0):
                offset, n = pending.pop(0)
                out += reader.read(offset, n)
                ring.credit(n)
        assert bytes(out) == data and ring.outstanding == 0
        with pytest.raises(ValueError):
            ring.credit(1)
        with pytest.raises(ValueError):
            reader.read(900, 200)
        reader.close()
    finally:
        region.close()


def _dev_shm() -> set[str]:
    """/dev/shm entries that could be ours.  ``sem.*`` are POSIX semaphores that
    multiprocessing creates in any program on a shared machine (and that come and
    go while a test runs); this package creates none, nor anything else there."""
    return {name for name in os.listdir("/dev/shm") if not name.startswith("sem.")}


def test_memfd_region_has_no_name_on_disk():
    before = _dev_shm()
    region = Region.create(1 << 20)
    link = os.readlink(f"/proc/self/fd/{region.fd}")
    region.close()
    assert link.startswith("/memfd:") and _dev_shm() == before


# ------------------------------------------------------------ end to end


@pytest.fixture(scope="module", params=["pipe", "shm"])
def srv(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"ipc-{request.param}")
    shm_before = _dev_shm()
    proc = ServerProcess.cli(APP, "--workers", "2", "--ipc", request.param, "--no-access-log",
                             "--spool-dir", str(tmp), env={"TMPDIR": str(tmp)}, ready_path="/hello")
    proc.start().wait_ready()
    proc.ipc = request.param  # type: ignore[attr-defined]
    proc.tmp = tmp  # type: ignore[attr-defined]
    yield proc
    proc.stop()
    assert _dev_shm() == shm_before, "a /dev/shm entry was left behind"
    assert os.listdir(tmp) == [], f"temp files left behind: {os.listdir(tmp)}"


def _memfds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:a2wsgi-mp-slot"):
                count += 1
        except OSError:
            pass
    return count


def _all_rss(proc: ServerProcess) -> dict[int, int]:
    out = {}
    for p in [psutil.Process(proc.pid), *proc.descendants()]:
        try:
            out[p.pid] = p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return out


def test_hello(srv):
    with httpx.Client(base_url=srv.url) as c:
        for _ in range(20):
            r = c.get("/hello")
            assert r.status_code == 200 and r.text == "Hello world!"
    assert _memfds(srv.pid) == (2 if srv.ipc == "shm" else 0)


def test_upload_64mib_sha256(srv):
    def body():
        for i in range(64):
            yield BLOCK[i:] + BLOCK[:i]

    expected = hashlib.sha256(b"".join(BLOCK[i:] + BLOCK[:i] for i in range(64))).hexdigest()
    r = httpx.post(srv.url + "/upload", content=body(), headers={"content-length": str(64 * MB)}, timeout=60)
    assert r.text == f"{64 * MB} {expected}"
    assert wait_for(lambda: os.listdir(srv.tmp) == [], 10), os.listdir(srv.tmp)


def test_inline_uploads_interleaved_with_downloads(srv):
    # Request bodies up to the spool threshold go through the ring with --ipc shm;
    # responses reuse the same ring in between.
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for size in (10, 40_000, MB - 1, MB, 300_000):
            body = os.urandom(size)
            assert c.post("/upload", content=body).text == f"{size} {hashlib.sha256(body).hexdigest()}"
            r = c.get(f"/once?size={5 * MB}")
            assert len(r.content) == 5 * MB and r.content[:4] == BLOCK[:4]


@pytest.mark.parametrize("size", [1, 40_000, 5 * MB, 64 * MB + 1])
def test_single_body_sizes(srv, size):
    # 64 MiB + 1 in one chunk: more than one frame may carry (it used to be a 502 with pipes).
    r = httpx.get(srv.url + f"/once?size={size}", timeout=60)
    assert r.status_code == 200 and len(r.content) == size
    assert r.content == (BLOCK * (size // len(BLOCK) + 1))[:size]


def test_streaming_is_incremental(srv):
    arrivals = []
    with httpx.stream("GET", srv.url + "/stream?n=5&delay=0.2", timeout=30) as r:
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic(), len(chunk)))
    assert sum(n for _, n in arrivals) == sum(len(f"chunk {i}\n".encode() * 1000) for i in range(5))
    # The first bytes came long before the last: not buffered until the end.
    assert arrivals[-1][0] - arrivals[0][0] > 0.5


def test_disconnect_closes_the_iterable_and_slow_reader_is_bounded(srv, tmp_path):
    marker = tmp_path / "closed"
    with httpx.stream("GET", srv.url + f"/endless?marker={marker}", timeout=30) as r:
        it = r.iter_raw(MB)
        next(it)
        time.sleep(1.5)  # a client that stops reading: the worker must block, not the front buffer
        rss = _all_rss(srv)
        assert max(rss.values()) < RSS_LIMIT, {pid: v / MB for pid, v in rss.items()}
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "close() was not called after the client left"
    assert httpx.get(srv.url + "/hello").text == "Hello world!"


def test_1gib_download_sha256_with_bounded_rss(srv):
    mib = 1024
    expected = hashlib.sha256()
    for _ in range(mib):
        expected.update(BLOCK)
    got = hashlib.sha256()
    size = 0
    peak: dict[int, int] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for pid, v in _all_rss(srv).items():
                peak[pid] = max(peak.get(pid, 0), v)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with httpx.stream("GET", srv.url + f"/download?mib={mib}", timeout=120) as r:
            for chunk in r.iter_raw(MB):
                got.update(chunk)
                size += len(chunk)
    finally:
        stop.set()
        sampler.join()
    assert size == mib * MB and got.hexdigest() == expected.hexdigest()
    assert peak and max(peak.values()) < RSS_LIMIT, {pid: v / MB for pid, v in peak.items()}


def test_sigkill_worker_mid_transfer_leaves_nothing(srv):
    shm_before = _dev_shm()
    workers_before = srv.worker_pids()
    with httpx.stream("GET", srv.url + "/download?mib=4096", timeout=30) as r:
        it = r.iter_raw(MB)
        next(it)
        victim = int(r.headers["x-pid"])
        assert victim in workers_before
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(httpx.HTTPError):
            for _ in it:
                pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len(srv.worker_pids()) == len(workers_before) and victim not in srv.worker_pids():
            try:
                if httpx.get(srv.url + "/hello", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    for _ in range(10):
        assert httpx.get(srv.url + "/hello", timeout=5).status_code == 200
    # The dead worker's ring went with it: one memfd per live slot, none stray.
    assert wait_for(lambda: _memfds(srv.pid) == (2 if srv.ipc == "shm" else 0), 10), _memfds(srv.pid)
    assert _dev_shm() == shm_before
    assert os.listdir(srv.tmp) == []
