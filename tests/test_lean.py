"""The CLI's own protocol (a2wsgi_mp.headlimits.lean) and its hand-over to uvicorn's.

End to end, on a real server with raw sockets and httpx: what the lean protocol serves
itself (counted by ``a2wsgi_mp_handovers_total`` not moving), and that every hand-over
(a body, a streamed answer it adopts, a pipelined request, a client that leaves) loses
nothing and keeps the connection's order.  The fast path's other cases (timeouts,
crashes, non-reading clients, metrics, shutdown) are in tests/test_fastpath.py, which
runs on the same protocol.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest

from .serverproc import HOST, Server, metrics, wait_for
from .wire import h11_responses

APP = "tests.apps.fastpath_app:app"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lean-records")


@pytest.fixture(scope="module")
def lean(records: Path):
    server = Server.cli(APP, "--workers", "1", "--threads", "1", "--timeout", "5", "--metrics-path", "/metrics",
                        env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello").start()
    try:
        yield server.wait_ready()
    finally:
        assert server.stop() == []


def _handovers(server: Server) -> float:
    """The counter, read on a connection of its own: each read is itself a hand-over (/metrics is
    uvicorn's protocol's), counted before it is rendered, so a read's own is taken off here and
    the read before is one of what a later read counts."""
    return metrics(server.url)["a2wsgi_mp_handovers_total"] - 1


def _recv_until(sock: socket.socket, count: int, methods: list[str]) -> list:
    """Read from ``sock`` until ``count`` whole responses are in."""
    data = b""
    while True:
        try:
            answers = h11_responses(data, methods[:count])
            if len(answers) == count:
                return answers
        except Exception:
            pass
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk


def test_plain_requests_are_served_without_a_hand_over(lean: Server) -> None:
    before = _handovers(lean)
    with httpx.Client(base_url=lean.url, timeout=10) as c:
        for i in range(30):
            r = c.get(f"/hello?i={i}", headers={"Content-Length": "0", "Accept": "*/*"})
            assert r.status_code == 200 and r.content == b"Hello, world!"
            assert r.headers["content-length"] == "13" and r.headers["server"] == "uvicorn" and "date" in r.headers
        assert c.get("/nolength").headers["content-length"] == "15"
        assert c.delete("/hello").status_code == 200  # (any body-less method)
    assert _handovers(lean) == before + 1  # (the read of `before`)


def test_a_body_hands_the_connection_over_and_back_once_idle(lean: Server) -> None:
    """A keep-alive connection that sends a body now and then (a browser's form, a proxy's pooled
    upstream connection) is uvicorn's protocol's for that request and the lean protocol's again
    once a body-less request is answered: each body is a hand-over of its own."""
    before = _handovers(lean)
    with httpx.Client(base_url=lean.url, timeout=10) as c:
        assert c.get("/hello").status_code == 200
        for _ in range(3):
            assert c.post("/echo", content=b"ping" * 1000).content == b"ping" * 1000
            assert c.head("/hello").status_code == 200  # (HEAD: uvicorn's protocol's too)
            for _ in range(20):
                assert c.get("/hello").content == b"Hello, world!"
    assert _handovers(lean) == before + 3 + 1  # (3 bodies; and the read of `before`)


def test_a_connection_that_sends_bodies_often_stays_with_uvicorns_protocol(lean: Server) -> None:
    """Bodies every other request (an API's POSTs): handed back once, then the connection came
    back too soon, so uvicorn's protocol keeps it (two hand-overs a body cost more than the lean
    protocol saves on the requests between)."""
    before = _handovers(lean)
    with httpx.Client(base_url=lean.url, timeout=10) as c:
        for i in range(10):
            assert c.post("/echo", content=b"x%d" % i).content == b"x%d" % i
            assert c.get("/hello").content == b"Hello, world!"
    assert _handovers(lean) == before + 2 + 1


def test_a_next_head_begun_in_the_same_read_keeps_the_connection_until_it_is_answered(lean: Server) -> None:
    """The first bytes of the next request came with a body: they are in uvicorn's parser, so the
    connection goes back to the lean protocol only after that request's answer."""
    before = _handovers(lean)
    with socket.create_connection((HOST, lean.port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /hel")
        assert _recv_until(s, 1, ["POST"])[0].body == b"hi"
        s.sendall(b"lo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_until(s, 1, ["GET"])[0].body == b"Hello, world!"
        for _ in range(3):
            s.sendall(b"GET /nolength HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _recv_until(s, 1, ["GET"])[0].body == b"no length given"
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nho")
        assert _recv_until(s, 1, ["POST"])[0].body == b"ho"
    assert _handovers(lean) == before + 2 + 1


def test_without_keep_alive_a_connection_is_not_handed_back_but_closed(records: Path) -> None:
    """``--timeout-keep-alive 0``: uvicorn's protocol closes the connection once its answers are out
    (here a body and a request pipelined behind it); it is not handed back to be held open."""
    with Server.cli(APP, "--workers", "1", "--timeout-keep-alive", "0", ready_path="/hello") as server:
        with socket.create_connection((HOST, server.port), timeout=10) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                      b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):  # (the socket's own timeout, 10 s, if never closed)
                data += chunk
            assert [a.body for a in h11_responses(data, ["POST", "GET"])] == [b"hi", b"Hello, world!"]


def test_a_connection_handed_back_keeps_its_keep_alive_timeout(records: Path) -> None:
    with Server.cli(APP, "--workers", "1", "--timeout-keep-alive", "1", "--metrics-path", "/metrics",
                    env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello") as server:
        with socket.create_connection((HOST, server.port), timeout=10) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            assert _recv_until(s, 1, ["POST"])[0].body == b"hi"
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # (answered: handed back)
            assert _recv_until(s, 1, ["GET"])[0].body == b"Hello, world!"
            t0 = time.monotonic()
            assert s.recv(65536) == b""  # closed by the server (the socket's own timeout: 10 s)
            assert time.monotonic() - t0 < 5, f"closed after {time.monotonic() - t0:.2f} s"


@pytest.mark.parametrize("first", [b"HEAD /hello", b"OPTIONS *", b"GET /client"])
def test_what_the_lean_protocol_leaves_alone_is_answered_as_before(lean: Server, first: bytes) -> None:
    """HEAD; a request target uvicorn decides on; RFC 7239's Forwarded (nothing of ours reads it)."""
    extra = b"Forwarded: for=203.0.113.9\r\n" if first.endswith(b"client") else b""
    with socket.create_connection((HOST, lean.port), timeout=10) as s:
        s.sendall(first + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        method = first.split()[0].decode()
        answer = _recv_until(s, 1, [method])[0]
        assert answer.response.status_code in (200, 404)
        if extra:
            assert answer.body == b"127.0.0.1 http"  # (uvicorn does not read Forwarded either)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_until(s, 1, ["GET"])[0].body == b"Hello, world!"


def test_a_proxys_forwarded_requests_stay_on_the_lean_protocol(lean: Server) -> None:
    """Behind a proxy every request has X-Forwarded-For/-Proto: they are applied to the scope by
    uvicorn's proxy-headers middleware's own code (from a trusted peer: 127.0.0.1 is one by
    default), and the connection stays the lean protocol's; a request without them on the same
    connection gets its own peer address, not the one before's."""
    before = _handovers(lean)
    forwarded = b"X-Forwarded-For: 198.51.100.1, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
    with socket.create_connection((HOST, lean.port), timeout=10) as s:
        for headers, expected in ((forwarded, b"203.0.113.9 https"), (b"", b"127.0.0.1 http"),
                                  (b"X-Forwarded-Proto: wss\r\n", b"127.0.0.1 wss"),
                                  (b"X-Forwarded-Host: example.org\r\n", b"127.0.0.1 http")):
            s.sendall(b"GET /client HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            assert _recv_until(s, 1, ["GET"])[0].body == expected
    assert _handovers(lean) == before + 1  # (the first read of the counter's own connection only)


def test_a_streamed_answer_is_adopted_not_sent_again(lean: Server, records: Path) -> None:
    """The request was at a worker when its answer turned out to stream: the relay of the
    protocol it is handed to picks up that exchange (the app runs once)."""
    before_served = metrics(lean.url)["a2wsgi_mp_requests_total"]
    before = _handovers(lean)
    with socket.create_connection((HOST, lean.port), timeout=10) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_until(s, 1, ["GET"])[0].body == b"part 0;part 1;part 2;"
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_until(s, 1, ["GET"])[0].body == b"Hello, world!"
    assert _handovers(lean) == before + 1 + 1
    # Two requests to the worker, not three (the stream sent again by the new protocol).
    assert metrics(lean.url)["a2wsgi_mp_requests_total"] - before_served == 2


def test_a_request_sent_while_one_is_at_a_worker_waits_its_turn(lean: Server, records: Path) -> None:
    """Pipelining across reads: the second request arrives while the first sleeps at the only worker."""
    token = uuid.uuid4().hex
    with socket.create_connection((HOST, lean.port), timeout=20) as s:
        s.sendall(f"GET /sleep?s=0.5&token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_for((records / token).exists, 10, 0.01, what="the first request at the worker")
        s.sendall(b"GET /nolength HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = _recv_until(s, 2, ["GET", "GET"])
        assert [a.body for a in answers] == [b"slept", b"no length given"]
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_until(s, 1, ["GET"])[0].body == b"Hello, world!"


def test_pipelined_in_one_read_is_handed_over_and_answered_in_order(lean: Server) -> None:
    before = _handovers(lean)
    with socket.create_connection((HOST, lean.port), timeout=20) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /nolength HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = _recv_until(s, 3, ["GET"] * 3)
        assert [a.body for a in answers] == [b"Hello, world!", b"part 0;part 1;part 2;", b"no length given"]
    assert _handovers(lean) == before + 1 + 1


def test_a_client_that_leaves_while_its_request_is_at_a_worker_frees_it(lean: Server, records: Path) -> None:
    token = uuid.uuid4().hex
    with socket.create_connection((HOST, lean.port), timeout=10) as s:
        s.sendall(f"GET /sleep?s=0.3&token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_for((records / token).exists, 10, 0.01, what="the request at the worker")
    # The only worker finishes that request for nobody, then serves this one.
    t0 = time.monotonic()
    assert httpx.get(f"{lean.url}/hello", timeout=10).content == b"Hello, world!"
    assert time.monotonic() - t0 < 8
    with socket.create_connection((HOST, lean.port), timeout=10) as s:  # a stream, left at once
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(3):
        assert httpx.get(f"{lean.url}/hello", timeout=10).content == b"Hello, world!"


def test_a_head_that_grows_past_the_limits_in_pieces_is_refused(lean: Server) -> None:
    """A field that never ends: the lean protocol hands it over before it holds more than the
    limits allow, and uvicorn's bounded protocol refuses it (431)."""
    with socket.create_connection((HOST, lean.port), timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Long: ")
        answer = b""
        try:
            for _ in range(200):
                s.sendall(b"a" * 4096)
        except OSError:
            pass  # (refused, then closed while we were still sending)
        s.settimeout(10)
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_without_the_fast_path_uvicorn_serves_every_connection(records: Path) -> None:
    with Server.cli(APP, "--workers", "1", "--no-fast-path", "--metrics-path", "/metrics",
                    env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello") as plain:
        with httpx.Client(base_url=plain.url, timeout=10) as c:
            r = c.get("/nolength")
            assert r.content == b"no length given" and r.headers.get("transfer-encoding") == "chunked"
        assert metrics(plain.url)["a2wsgi_mp_handovers_total"] == 0


def test_complete_answers_to_a_client_that_reads_nothing_meet_the_send_timeout(records: Path) -> None:
    """Complete answers (under 1 MiB: one write each) to a client that asks again and again and
    reads nothing: once the socket's buffers are full the transport stops taking writes, the
    lean protocol hands the connection to uvicorn's, and its send timeout drops the client
    (nginx's send_timeout); the only worker was free all along."""
    size, count = 1_000_000, 16  # (16 MB: more than loopback's send and receive buffers take)
    with Server.cli(APP, "--workers", "1", "--send-timeout", "1", "--timeout", "0", "--metrics-path", "/metrics",
                    env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello") as server:
        with socket.create_connection((HOST, server.port), timeout=10) as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            served = metrics(server.url)["a2wsgi_mp_requests_total"]
            for i in range(count):  # one at a time: each answered (written) before the next is sent
                slow.sendall(f"GET /big?n={size}&i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert wait_for(lambda n=served: metrics(server.url)["a2wsgi_mp_requests_total"] > n
                                or "send timeout" in server.log(), 20), f"request {i} never answered"
                served += 1
                if "send timeout" in server.log():
                    break
            assert wait_for(lambda: "send timeout" in server.log(), 20), "the non-reader was never dropped"
        # (What the kernel had queued still trickles to a client that reads: nginx's default too.)
        assert httpx.get(f"{server.url}/hello", timeout=10).content == b"Hello, world!"


# ---------------------------------------------------------------- review (2026-12-07, helper "review")

_FAIL_SEND_HOOK = '''
import os
from a2wsgi_mp.ipc import pipe as _pipe

_send = _pipe.FrontPipe.send_request


def send_request(self, *args, **kwargs):
    trigger = os.environ.get("LEAN_TEST_FAIL_SEND")
    if trigger and os.path.exists(trigger):  # once per trigger: as a worker that died unnoticed
        os.unlink(trigger)
        raise BrokenPipeError("test: the worker's end is gone")
    return _send(self, *args, **kwargs)


_pipe.FrontPipe.send_request = send_request
'''


def test_a_request_its_worker_never_got_is_sent_again_once_and_answered_once(tmp_path: Path, records: Path) -> None:
    """The send to the worker fails (its end is gone, not yet noticed): the request is dispatched
    again, once, and answered once -- by the lean protocol's dispatch and by uvicorn's fast path
    (a connection handed over by a body first).  The failed send feeds the exchange its Lost at
    once: with the waiter already set, that handed the connection over (adopting the exchange,
    whose relay dispatched it again) and then over a second time (dispatched again too): two
    answers, the app run twice, and the first new protocol orphaned in the server's connections,
    so that shutdown waited for it forever."""
    (tmp_path / "sitecustomize.py").write_text(_FAIL_SEND_HOOK)
    trigger = tmp_path / "fail"
    env = {"FASTPATH_RECORD_DIR": str(records), "LEAN_TEST_FAIL_SEND": str(trigger),
           "PYTHONPATH": os.pathsep.join((str(tmp_path), str(Path(__file__).resolve().parent.parent)))}
    server = Server.cli(APP, "--workers", "1", "--metrics-path", "/metrics", env=env, ready_path="/hello").start()
    try:
        server.wait_ready()
        for first in (b"", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"):
            token = uuid.uuid4().hex
            with socket.create_connection((HOST, server.port), timeout=10) as s:
                if first:
                    s.sendall(first)
                    assert _recv_until(s, 1, ["POST"])[0].body == b"hi"
                trigger.touch()
                s.sendall(f"GET /record?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert _recv_until(s, 1, ["GET"])[0].body == b"recorded"
                s.settimeout(1.0)
                try:
                    extra = s.recv(65536)
                except socket.timeout:
                    extra = b""
                assert extra == b"", f"a second answer: {extra!r}"
            assert not trigger.exists()
            assert wait_for(lambda t=token: server.log().count(f"token={t} HTTP/1.1\" 200") >= 1, 5)
            time.sleep(0.3)
            assert server.log().count(f"token={token} HTTP/1.1\" 200") == 1, "the app ran it twice"
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, "shutdown waited for a connection that is gone"
    finally:
        assert server.stop() == []


def _fill_then(server: Server, last: bytes, size: int = 200_000) -> socket.socket:
    """A client that reads nothing: complete answers of ``size`` bytes, one at a time, until the
    kernel's buffers are full (found on a first connection: the request whose write pauses the
    transport, counted as a hand-over), then on a second one as many less one, then ``last``.
    (A fresh server: its hand-overs are ours, each read of /metrics one of them.)"""
    reads = [0]

    def counts() -> tuple[float, float]:
        values = metrics(server.url)
        reads[0] += 1
        return values["a2wsgi_mp_requests_total"], values["a2wsgi_mp_handovers_total"] - reads[0]

    def ask(s: socket.socket, request: bytes) -> float:
        served = counts()[0]
        s.sendall(request)
        assert wait_for(lambda: counts()[0] > served, 10), "not answered"
        return counts()[1]

    fill = f"GET /big?n={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection((HOST, server.port), timeout=10) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        count = 1
        while ask(probe, fill) == 0:
            count += 1
            assert count < 200, "the transport never stopped taking writes"
    slow = socket.create_connection((HOST, server.port), timeout=10)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for _ in range(count - 1):
        ask(slow, fill)
    ask(slow, last)
    return slow


def test_a_last_answer_to_a_client_that_reads_nothing_meets_the_send_timeout(records: Path) -> None:
    """``Connection: close`` on the request whose answer fills the buffers: the lean protocol
    closed the transport without handing it over, and a transport closed with a full buffer
    waits for the client forever (no send timeout; shutdown waited for it too)."""
    with Server.cli(APP, "--workers", "1", "--send-timeout", "1", "--timeout", "0", "--metrics-path", "/metrics",
                    env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello") as server:
        with _fill_then(server, b"GET /big?n=200000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            assert wait_for(lambda: "send timeout" in server.log(), 10), "the non-reader was never dropped"


def test_a_slow_head_handed_over_midway_keeps_its_clock(records: Path) -> None:
    """A head whose rule-out header comes late is handed over with its clock: 408 at the header
    timeout from its first byte, not a second header timeout from the hand-over."""
    with Server.cli(APP, "--workers", "1", "--header-timeout", "2", "--metrics-path", "/metrics",
                    env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello") as server:
        with socket.create_connection((HOST, server.port), timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(b"GET /hello HTTP/1.1\r\n")
            time.sleep(1.5)
            s.sendall(b"Transfer-Encoding: chunked\r\nX-B: 1")  # (on_header runs as the next field starts)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - t0 < 3.0, f"408 after {time.monotonic() - t0:.2f} s"


def test_clients_that_leave_while_queued_free_their_places_at_once(records: Path) -> None:
    """Clients that leave while queued: their places in the queue are freed when they leave (as
    the ASGI path's tasks free theirs), not when a worker comes free -- then, each handed the slot
    in turn, they passed it on recursively (_offer -> set_result -> _dispatch -> _offer...):
    past ~330 of them a RecursionError in the worker's pipe lost the answer in flight there."""
    with Server.cli(APP, "--workers", "1", "--threads", "1", "--backlog", "600", "--metrics-path", "/metrics",
                    env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello") as server:
        token = uuid.uuid4().hex
        with socket.create_connection((HOST, server.port), timeout=15) as busy:
            busy.sendall(f"GET /sleep?s=2&token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            wait_for((records / token).exists, 10, 0.01, what="the request at the worker")
            ghosts = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(500)]
            for ghost in ghosts:
                ghost.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert wait_for(lambda: metrics(server.url).get("a2wsgi_mp_queue_depth", 0) >= len(ghosts), 20,
                            what="every ghost's request in the queue")
            for ghost in ghosts:
                ghost.close()
            assert _recv_until(busy, 1, ["GET"])[0].body == b"slept"
        assert httpx.get(f"{server.url}/hello", timeout=10).content == b"Hello, world!"
        assert "RecursionError" not in server.log()


def test_limit_concurrency_is_uvicorns_limit_with_the_lean_protocol(records: Path) -> None:
    """--limit-concurrency (and gunicorn's worker_connections): requests within the limit are the
    lean protocol's (before, every connection went to uvicorn's protocol and its ASGI task);
    past it, the request is handed over and uvicorn answers its 503."""
    with Server.cli(APP, "--workers", "1", "--limit-concurrency", "3", "--metrics-path", "/metrics",
                    env={"FASTPATH_RECORD_DIR": str(records)}, ready_path="/hello") as server:
        before = _handovers(server)
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for _ in range(10):
                assert c.get("/hello").content == b"Hello, world!"
        assert _handovers(server) == before + 1
        held = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(2)]
        try:
            for sock in held:  # (answered: the server holds them, as uvicorn counts them)
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _recv_until(sock, 1, ["GET"])[0].body == b"Hello, world!"
            with socket.create_connection((HOST, server.port), timeout=10) as s:  # the third: 3 >= 3
                s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _recv_until(s, 1, ["GET"])[0].response.status_code == 503
        finally:
            for sock in held:
                sock.close()
        assert httpx.get(f"{server.url}/hello", timeout=10).content == b"Hello, world!"


def test_header_names_are_lowered_through_a_bounded_cache_of_plain_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """on_header's cache (raw name -> lower-cased) holds only names that never rule a request
    out nor are a proxy's, so a body's framing, Expect or X-Forwarded-* is noted every time; it
    stops growing at its bound, and names past it are lower-cased all the same."""
    from a2wsgi_mp.headlimits import lean as module

    monkeypatch.setattr(module, "_PLAIN", {})
    monkeypatch.setattr(module, "_PLAIN_MAX", 4)
    proto = module.LeanProtocol.__new__(module.LeanProtocol)
    proto._headers = []
    proto._fields = proto._head_bytes = 0
    proto.on_header(b"X-Thing", b"v \t")
    proto.on_header(b"X-Thing", b"w")
    assert proto._headers == [(b"x-thing", b"v"), (b"x-thing", b"w")] and module._PLAIN == {b"X-Thing": b"x-thing"}
    for name, value in ((b"Content-Length", b"5"), (b"Expect", b"100-continue"),
                        (b"Transfer-Encoding", b"chunked"), (b"Forwarded", b"for=203.0.113.9")):
        for _ in range(2):
            with pytest.raises(module._HandOver):
                proto.on_header(name, value)
        assert name not in module._PLAIN
    for _ in range(2):
        proto._forwarded = False
        proto.on_header(b"X-Forwarded-For", b"203.0.113.9")
        assert proto._forwarded and b"X-Forwarded-For" not in module._PLAIN
    proto.on_header(b"Content-Length", b"0")  # (no body: still plain, but never cached)
    assert b"Content-Length" not in module._PLAIN
    for i in range(10):
        proto.on_header(b"X-Name-%d" % i, b"v")
    assert len(module._PLAIN) == 4 and proto._headers[-1] == (b"x-name-9", b"v")
