"""``wsgi.file_wrapper``: a regular file leaves the worker by descriptor (FILE frame)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os

import pytest

from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.pool import app as front_mod
from a2wsgi_mp.pool import filesend
from a2wsgi_mp.pool.app import WSGIPool
from a2wsgi_mp.workers.filewrapper import FileWrapper, file_span

from .serverproc import until

# ------------------------------------------------------------ sans-IO frames


def test_file_frames_round_trip():
    dec = protocol.Decoder()
    dec.feed(protocol.encode_file(7, 200, [[b"a", b"b"]], 10, 20) + protocol.encode_file_ack(7))
    assert list(dec.events()) == [protocol.File(7, 200, [(b"a", b"b")], 10, 20), protocol.FileAck(7)]


@pytest.mark.parametrize("fields", [(1, 200, [], -1, 5), (1, 200, [], 0, -5), (1, 200, [[b"a"]], 0, 0),
                                    (1, "200", [], 0, 0)])
def test_malformed_file_frame(fields):
    dec = protocol.Decoder()
    dec.feed(protocol._frame(protocol.FILE, protocol._packb(fields)))
    with pytest.raises(protocol.ProtocolError):
        list(dec.events())


def test_file_span(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    with open(p, "rb") as f:
        f.seek(3)
        fd, offset, length = file_span(FileWrapper(f), None)
        assert (fd, offset, length) == (f.fileno(), 3, 7)
        assert file_span(FileWrapper(f), 4)[2] == 4
        assert file_span(FileWrapper(f), 8) is None  # shorter than Content-Length: iterate
        assert file_span(iter([f]), None) is None
    assert file_span(FileWrapper(io.BytesIO(b"x")), None) is None
    r, w = os.pipe()
    with open(r, "rb") as pr, open(w, "wb"):
        assert file_span(FileWrapper(pr), None) is None


# ------------------------------------------------------------ through a real pool

CONTENT = os.urandom(3 * 1024 * 1024 + 123)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fw") / "data.bin"
    path.write_bytes(CONTENT)
    old = os.environ.get("FW_TEST_FILE")
    os.environ["FW_TEST_FILE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FW_TEST_FILE", None)
    else:
        os.environ["FW_TEST_FILE"] = old


def _scope(path: str, extensions: dict | None = None) -> dict:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
        "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80),
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


async def _call(pool: WSGIPool, path: str, extensions: dict | None = None, on_send=None) -> list[dict]:
    sent: list[dict] = []
    requested = False
    done = asyncio.Event()

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if on_send is not None:
            await on_send(message)
        sent.append(message)
        if message["type"] == "http.response.pathsend" or (
            message["type"] == "http.response.body" and not message.get("more_body", False)
        ):
            done.set()

    await pool(_scope(path, extensions), receive, send)
    return sent


def _body(messages: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def _complete(messages: list[dict]) -> bool:
    return any(m["type"] == "http.response.body" and not m.get("more_body", False) for m in messages)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def _fds_settled(before: set[str], timeout: float = 10.0) -> set[str]:
    """Our descriptors once they are back within ``before`` (closing may lag a loop turn or two)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not _open_fds() <= before and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return _open_fds()


@pytest.fixture
def handoffs(monkeypatch):
    calls = []
    real = front_mod.send_file

    async def counting(handoff, *args):
        calls.append(handoff)
        await real(handoff, *args)

    monkeypatch.setattr(front_mod, "send_file", counting)
    return calls


LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    return request.param


def _run(coro_fn, loop: str = "asyncio", **options):
    async def main():
        pool = WSGIPool("tests.apps.fw_app:app", workers=1, threads=1, timeout=20, **options)
        await pool.startup()
        try:
            return await coro_fn(pool)
        finally:
            await pool.shutdown()

    factory = None
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def test_file_goes_by_descriptor(data_file, handoffs, loop_kind):
    async def go(pool):
        before = _open_fds()
        out = await _call(pool, "/file")
        after_first = await _call(pool, "/")  # the worker is free and fine
        return out, after_first, before, await _fds_settled(before)

    out, ok, before, after = _run(go, loop_kind)
    assert out[0]["status"] == 200
    assert [b"content-type", b"application/octet-stream"] in [list(h) for h in out[0]["headers"]]
    assert _complete(out)
    body = _body(out)
    assert len(body) == len(CONTENT) and hashlib.sha256(body).digest() == hashlib.sha256(CONTENT).digest()
    assert max(len(m.get("body", b"")) for m in out[1:]) <= filesend.FILE_CHUNK
    assert len(handoffs) == 1 and handoffs[0].offset == 0 and handoffs[0].length == len(CONTENT)
    assert _body(ok) == b"ok"
    assert after <= before, f"descriptors leaked: {after - before}"


def test_content_length_offset_and_fallbacks(data_file, handoffs):
    async def go(pool):
        return [await _call(pool, p) for p in ("/file-cl", "/file-seek", "/bytesio", "/file-short", "/empty")]

    cl, seek, bio, short, empty = _run(go)
    assert _body(cl) == CONTENT[:1000] and _complete(cl)
    assert _body(seek) == CONTENT[100:] and _complete(seek)
    assert _body(bio) == b"x" * 100_000 and _complete(bio)
    # A file shorter than its Content-Length is iterated and the response cut.
    assert _body(short) == CONTENT and not _complete(short)
    assert empty[0]["status"] == 204 and _body(empty) == b"" and _complete(empty)
    assert [(h.offset, h.length) for h in handoffs] == [(0, 1000), (100, len(CONTENT) - 100), (0, 0)]


def test_pathsend_when_the_server_offers_it(data_file, handoffs):
    seen = {}

    async def on_send(message):
        if message["type"] == "http.response.pathsend":
            with open(message["path"], "rb") as f:  # what the server would do
                seen["body"] = f.read()

    async def go(pool):
        full = await _call(pool, "/file", {"http.response.pathsend": {}}, on_send)
        part = await _call(pool, "/file-seek", {"http.response.pathsend": {}}, on_send)
        return full, part

    full, part = _run(go)
    assert [m["type"] for m in full] == ["http.response.start", "http.response.pathsend"]
    assert full[1]["path"].startswith("/proc/self/fd/")
    assert seen["body"] == CONTENT
    # Not the whole file: pathsend cannot express an offset, so the front streams it.
    assert _body(part) == CONTENT[100:] and _complete(part)


def test_worker_is_free_while_the_front_sends_the_file(data_file, handoffs, loop_kind):
    async def go(pool):
        gate = asyncio.Event()

        async def slow(message):
            if message["type"] == "http.response.body":
                await gate.wait()

        slow_task = asyncio.ensure_future(_call(pool, "/file", None, slow))
        assert await until(lambda: handoffs, 10)  # the worker handed the file to the front
        # One worker, one thread: this only completes if the file handoff freed it.
        quick = await asyncio.wait_for(_call(pool, "/"), 10)
        gate.set()
        return quick, await slow_task

    quick, slow = _run(go, loop_kind)
    assert _body(quick) == b"ok"
    assert _body(slow) == CONTENT


def test_client_gone_mid_file(data_file, handoffs, loop_kind):
    async def go(pool):
        before = _open_fds()
        count = 0

        async def breaks(message):
            nonlocal count
            if message["type"] == "http.response.body":
                count += 1
                if count == 2:
                    raise OSError("client gone")

        with pytest.raises(OSError):
            await _call(pool, "/file", None, breaks)
        ok = await _call(pool, "/")
        return ok, before, await _fds_settled(before)

    ok, before, after = _run(go, loop_kind)
    assert _body(ok) == b"ok"
    assert after <= before


# ------------------------------------------------------------ end to end, real server


def test_big_file_through_uvicorn(tmp_path):
    import httpx
    import psutil

    from .serverproc import ServerProcess

    path = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(256):
            f.write(block)
            digest.update(block)
    env = {"FW_TEST_FILE": str(path)}
    with ServerProcess.cli("tests.apps.fw_app:app", "--workers", "1", "--no-access-log", env=env) as srv:
        procs = [psutil.Process(srv.pid), *srv.descendants()]
        peak = 0
        got = hashlib.sha256()
        size = 0
        with httpx.stream("GET", srv.url + "/file", timeout=60) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw(1024 * 1024):
                got.update(chunk)
                size += len(chunk)
                for p in procs:
                    peak = max(peak, p.memory_info().rss)
        assert size == 256 * 1024 * 1024 and got.hexdigest() == digest.hexdigest()
        assert peak < 64 * 1024 * 1024, f"peak RSS {peak / 2**20:.1f} MiB"
        assert httpx.get(srv.url + "/").text == "ok"


def test_pathsend_hold_is_bounded(data_file, monkeypatch):
    monkeypatch.setattr(filesend, "PATHSEND_HOLD", 0.2)

    async def go(pool):
        sent = []
        first = True

        async def receive():
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.sleep(3600)  # a server that never reports the end

        async def send(message):
            sent.append(message)

        before = _open_fds()
        await asyncio.wait_for(pool(_scope("/file", {"http.response.pathsend": {}}), receive, send), 10)
        return sent, before, _open_fds()

    sent, before, after = _run(go)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    assert after <= before
