"""``--fast-path`` end to end: body-less requests skip the ASGI layer in the front.

Real CLI servers (one worker, one thread, so queueing and a busy worker are easy
to arrange) and real clients: httpx, raw sockets read by h11 (pipelining,
HTTP/1.0), a client that does not read.  Whether the fast path answered is
visible on the wire: a complete response without Content-Length gets one there,
where uvicorn's ``send()`` chunks it.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from .serverproc import HOST, Server, metrics, wait_for
from .wire import h11_responses

APP = "tests.apps.fastpath_app:app"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fastpath-records")


@pytest.fixture(scope="module")
def fast(records: Path):
    server = Server.cli(APP, "--workers", "1", "--threads", "1", "--timeout", "2", "--fast-path",
                        "--metrics-path", "/metrics", env={"FASTPATH_RECORD_DIR": str(records)},
                        ready_path="/hello").start()
    try:
        yield server.wait_ready()
    finally:
        assert server.stop() == []


@pytest.fixture(scope="module")
def plain():
    server = Server.cli(APP, "--workers", "1", "--threads", "1", "--no-fast-path", ready_path="/hello").start()
    try:
        yield server.wait_ready()
    finally:
        assert server.stop() == []


def _exchange(server: Server, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection, read until the server closes it."""
    with socket.create_connection((HOST, server.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_complete_responses_take_the_fast_path_on_a_kept_alive_connection(fast: Server, plain: Server) -> None:
    with httpx.Client(base_url=fast.url, timeout=10) as c:
        for _ in range(20):
            r = c.get("/nolength")
            assert r.status_code == 200 and r.content == b"no length given"
            assert r.headers["content-length"] == "15" and "transfer-encoding" not in r.headers
            assert r.headers["x-route"] == "nolength" and "date" in r.headers and r.headers["server"] == "uvicorn"
            h = c.get("/hello")
            assert h.status_code == 200 and h.content == b"Hello, world!"
    with httpx.Client(base_url=plain.url, timeout=10) as c:  # the ASGI path frames the same body by chunks
        r = c.get("/nolength")
        assert r.content == b"no length given" and r.headers.get("transfer-encoding") == "chunked"


def test_pipelined_requests_are_answered_in_order_across_both_paths(fast: Server) -> None:
    requests = [("GET", "/hello"), ("GET", "/stream"), ("GET", "/nolength"), ("POST", "/echo"),
                ("HEAD", "/nolength"), ("GET", "/hello")]
    data = b""
    for i, (method, path) in enumerate(requests):
        extra = b"Content-Length: 4\r\n" if method == "POST" else b""
        last = b"Connection: close\r\n" if i == len(requests) - 1 else b""
        data += f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + last + b"\r\n"
        if method == "POST":
            data += b"ping"
    answers = h11_responses(_exchange(fast, data), [m for m, _ in requests])
    assert [a.response.status_code for a in answers] == [200] * len(requests)
    assert [a.body for a in answers] == [b"Hello, world!", b"part 0;part 1;part 2;", b"no length given",
                                            b"ping", b"", b"Hello, world!"]


def test_a_pipelined_request_is_judged_by_its_own_headers(fast: Server) -> None:
    """The protocol notes while parsing whether a head may take the fast path; a pipelined
    request starts after later heads were parsed, so it must be judged by its own headers:
    the one with a body goes the ASGI path, the forwarded ones get the proxy middleware's
    client and scheme on the fast path, the plain ones their own peer's (the fast path's
    framing: Content-Length where the ASGI path would chunk)."""
    forwarded = b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
    data = (b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /client HTTP/1.1\r\nHost: x\r\n" + forwarded + b"\r\n"
            b"GET /nolength HTTP/1.1\r\nHost: x\r\n" + forwarded + b"\r\n"
            b"POST /client HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + forwarded + b"\r\nhi"
            b"GET /nolength HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /client HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answers = h11_responses(_exchange(fast, data), ["GET", "GET", "GET", "POST", "GET", "GET"])
    assert [a.body for a in answers] == [b"Hello, world!", b"203.0.113.7 https", b"no length given",
                                        b"203.0.113.7 https", b"no length given", b"127.0.0.1 http"]
    assert [dict(answers[i].response.headers).get(b"content-length") for i in (2, 4)] == [b"15", b"15"]


def test_http_1_0_gets_connection_close(fast: Server) -> None:
    raw = _exchange(fast, b"GET /nolength HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nconnection: close" in head.lower()
    assert body == b"no length given"


def test_connection_close_from_the_client_closes_after_the_response(fast: Server) -> None:
    """RFC 9112 §9.6: the server closes after answering a request's ``Connection: close``
    (uvicorn < 0.53 decided that in ``send()``, which the fast path does not call)."""
    t0 = time.monotonic()
    raw = _exchange(fast, b"GET /nolength HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\ncontent-length: 15" in head.lower()  # (the fast path answered)
    assert b"\r\nconnection: close" in head.lower() and body == b"no length given"
    assert time.monotonic() - t0 < 2  # closed by the server at once, not by its keep-alive timeout


def test_connection_close_from_the_app_closes_after_the_response(fast: Server) -> None:
    raw = _exchange(fast, b"GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = h11_responses(raw, ["GET", "GET"])
    assert len(answers) == 1 and answers[0].body == b"ok"


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_statuses_take_the_asgi_path(fast: Server, code: int) -> None:
    r = httpx.get(f"{fast.url}/status?code={code}", timeout=10)
    assert r.status_code == code and r.content == b""


def test_a_crash_is_a_502_then_the_pool_serves_again(fast: Server) -> None:
    r = httpx.get(f"{fast.url}/crash", timeout=20)
    assert r.status_code == 502
    wait_for(lambda: httpx.get(f"{fast.url}/hello", timeout=20).status_code == 200, 20,
             what="the pool to serve again")


def test_a_timeout_is_a_504(fast: Server) -> None:
    r = httpx.get(f"{fast.url}/sleep?s=10", timeout=20)
    assert r.status_code == 504


def test_a_client_that_does_not_read_holds_no_worker(fast: Server) -> None:
    size = 900_000  # complete, under the fast path's 1 MiB: one write into the front's transport
    with socket.create_connection((HOST, fast.port), timeout=20) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(f"GET /big?n={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # The only worker answered it: it must be free for others while this client reads nothing.
        for _ in range(3):
            assert httpx.get(f"{fast.url}/hello", timeout=10).status_code == 200
        slow.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while True:
            chunk = slow.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answers = h11_responses(b"".join(chunks), ["GET", "GET"])
    assert [len(a.body) for a in answers] == [size, 13]


def test_forwarded_headers_still_go_through_the_proxy_middleware(fast: Server) -> None:
    r = httpx.get(f"{fast.url}/client", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
                  timeout=10)
    assert r.text == "203.0.113.7 https"
    assert httpx.get(f"{fast.url}/client", timeout=10).text.split()[0] == "127.0.0.1"


def test_a_client_that_leaves_while_queued_costs_no_worker_run(fast: Server, records: Path) -> None:
    token, sleeping = uuid.uuid4().hex, uuid.uuid4().hex
    with httpx.Client(base_url=fast.url, timeout=20) as busy:
        started = threading.Event()

        def occupy() -> None:
            started.set()
            assert busy.get(f"/sleep?s=1&token={sleeping}").status_code == 200

        t = threading.Thread(target=occupy)
        t.start()
        started.wait(5)
        wait_for((records / sleeping).exists, 10, 0.01, what="the only worker to be asleep")
        # The only worker sleeps; this request queues behind it, then its client leaves.
        with socket.create_connection((HOST, fast.port), timeout=10) as gone:
            gone.sendall(f"GET /record?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            wait_for(lambda: metrics(fast.url).get("a2wsgi_mp_queue_depth", 0) >= 1, 10,
                     what="the request in the pool's queue")
        t.join(20)
    # FIFO: had the queued request run, it would have run before this one.
    after = uuid.uuid4().hex
    assert httpx.get(f"{fast.url}/record?token={after}", timeout=10).text == "recorded"
    assert (records / after).exists() and not (records / token).exists()


def _responses_2xx(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith('a2wsgi_mp_responses_total{status="2xx"}'))
    return float(line.split()[-1])


def test_fast_path_requests_feed_the_metrics(fast: Server) -> None:
    before = _responses_2xx(fast)
    with httpx.Client(base_url=fast.url, timeout=10) as c:
        for _ in range(5):
            r = c.get("/nolength")
            assert r.headers["content-length"] == "15"  # (the fast path's framing)
    assert _responses_2xx(fast) - before >= 5


def test_a_request_queued_on_the_fast_path_at_shutdown_gets_503(records: Path) -> None:
    """The pool gives up on its queue when it stops: a fast-path request waiting there is
    answered 503 (the ASGI path's answer) and the shutdown goes on (it raised AttributeError)."""
    srv = Server.cli(APP, "--workers", "1", "--threads", "1", "--graceful-timeout", "20", "--metrics-path", "/metrics",
                     env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello").start()
    try:
        srv.wait_ready()
        sleeping = uuid.uuid4().hex
        with socket.create_connection((HOST, srv.port), timeout=30) as busy, \
                socket.create_connection((HOST, srv.port), timeout=30) as queued:
            busy.sendall(f"GET /sleep?s=2&token={sleeping} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            wait_for((records / sleeping).exists, 10, 0.01, what="the only worker to be asleep")
            queued.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # behind the only worker
            wait_for(lambda: metrics(srv.url).get("a2wsgi_mp_queue_depth", 0) >= 1, 10,
                     what="the request in the pool's queue")  # (the front answers /metrics itself)
            srv.signal(15)
            answer = queued.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"retry-after" in answer.lower()
            done = b""
            while b"slept" not in done:
                chunk = busy.recv(65536)
                if not chunk:
                    break
                done += chunk
            assert done.startswith(b"HTTP/1.1 200") and done.endswith(b"slept")  # in flight: drained
        assert srv.wait(30) == 0
        assert "AttributeError" not in srv.log() and "Traceback" not in srv.log(), srv.log()
    finally:
        assert srv.stop() == []
