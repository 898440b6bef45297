"""The access log: gunicorn's atoms (unit), and one line per request, refusals
included, from a real ``a2wsgi-mp`` (text and ``--log-format json``)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import threading

import httpx
import pytest

from a2wsgi_mp.accesslog import DEFAULT_FORMAT, GUNICORN_FORMAT, AccessLog, Atoms
from a2wsgi_mp.admin import fetch
from a2wsgi_mp.logs import JsonFormatter
from a2wsgi_mp.record import Record

from .serverproc import HOST, Server, ServerSet, wait_for

APP = "tests.apps.core_app:app"

SCOPE = {
    "type": "http", "http_version": "1.1", "method": "GET", "scheme": "https", "path": "/a b",
    "raw_path": b"/a%20b", "query_string": b"x=1&y=\"2\"", "root_path": "/site", "client": ("203.0.113.9", 5555),
    "headers": [(b"user-agent", b"curl/8"), (b"referer", b"http://r/"), (b"x-trace", b"abc"),
                (b"authorization", b"Basic " + base64.b64encode(b"alice:secret"))],
}


def _record() -> Record:
    r = Record(SCOPE, 0.0)
    r.duration, r.queued, r.pid, r.status = 1.2345678, 0.25, 4242, 201
    r.bytes_in, r.bytes_out, r.headers = 7, 99, [(b"content-type", b"text/plain"), (b"x-id", b"9")]
    return r


def test_gunicorn_atoms_mean_what_they_mean_in_gunicorn() -> None:
    a = Atoms(_record())
    assert a["h"] == "203.0.113.9" and a["l"] == "-" and a["u"] == "alice"
    assert a["r"] == 'GET /a%20b?x=1&y=\\"2\\" HTTP/1.1'  # the raw URI, quotes escaped as gunicorn does
    assert (a["m"], a["U"], a["H"], a["s"]) == ("GET", "/a b", "HTTP/1.1", 201)
    assert (a["b"], a["B"], a["f"], a["a"]) == ("99", 99, "http://r/", "curl/8")
    assert (a["T"], a["M"], a["D"], a["L"]) == (1, 1234, 1234568, "1.234568")  # rounded as a timedelta is
    assert a["t"].startswith("[") and a["t"].endswith("]") and "/" in a["t"]
    assert a["p"].startswith("<") and a["p"].endswith(">")
    assert a["{X-Trace}i"] == "abc" and a["{content-type}o"] == "text/plain" and a["{missing}i"] == "-"
    assert a["{REQUEST_METHOD}e"] == "GET" and a["{script_name}e"] == "/site" and a["{HOME}e"] == "-"
    assert a["nope"] == "-"


def test_our_atoms_queue_worker_bytes_in_and_reason() -> None:
    r = _record()
    a = Atoms(r)
    assert (a["w"], a["Q"], a["I"], a["R"]) == (4242, "0.250000", 7, "-")
    r.pid, r.status, r.reason, r.bytes_out = None, 0, "client gone", 0
    assert (a["w"], a["s"], a["b"], a["R"]) == ("-", "-", "-", "client gone")


def test_the_line_is_formatted_only_when_logged(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.access.lazy")
    access = AccessLog("%(s)s %(D)s %(w)s", log)
    log.setLevel(logging.WARNING)
    calls = []
    r = _record()

    class Spy(Record):
        __slots__ = ()

        @property
        def status(self) -> int:  # type: ignore[override]
            calls.append(1)
            return 201

    spy = Spy.__new__(Spy)
    for name in ("scope", "start", "duration", "queued", "pid", "reason", "bytes_in", "bytes_out", "headers"):
        setattr(spy, name, getattr(r, name))
    access(spy)
    assert calls == []  # off: no atom computed
    log.setLevel(logging.INFO)
    with caplog.at_level(logging.INFO, logger="test.access.lazy"):
        access(r)
    assert caplog.messages == ["201 1234568 4242"]


def test_a_bad_format_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="bad access log format"):
        AccessLog("%(h)s %(")
    AccessLog(GUNICORN_FORMAT)
    AccessLog(DEFAULT_FORMAT)


def test_json_lines_carry_the_access_fields() -> None:
    log = logging.getLogger("test.access.json")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    AccessLog("%(s)s %(r)s", log)(_record())
    data = json.loads(handler.stream.getvalue())
    assert data["message"] == '201 GET /a%20b?x=1&y=\\"2\\" HTTP/1.1'
    assert data["logger"] == "test.access.json" and data["level"] == "INFO" and data["pid"]
    assert (data["status"], data["worker_pid"], data["queued"], data["duration"]) == (201, 4242, 0.25, 1.234568)
    assert (data["bytes_in"], data["bytes_out"], data["path"], data["query"]) == (7, 99, "/a b", 'x=1&y=\\"2\\"')
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        error = logging.LogRecord("a2wsgi_mp", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    data = json.loads(JsonFormatter().format(error))
    assert data["message"] == "failed x" and "RuntimeError: boom" in data["exc_info"]


# ------------------------------------------------------------------ end to end

FORMAT = "ACCESS %(s)s|%(r)s|%(w)s|%(Q)s|%(D)s|%(I)s|%(B)s|%({x-trace}i)s|%({content-type}o)s|%(R)s"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    s = ServerSet()
    common = ("--workers", "1", "--max-body-size", "100", "--header-timeout", "1", "--queue-timeout", "0.3")
    s.add(Server.cli(APP, *common, "--access-log-format", FORMAT, "--admin-socket", str(tmp / "text.sock"),
                     ready_path="/hello"))
    s.servers["text"] = s.servers.pop(APP)
    s.servers["json"] = Server.cli(APP, *common, "--log-format", "json", "--admin-socket", str(tmp / "json.sock"),
                                   ready_path="/hello").start()
    s.servers["text"].admin, s.servers["json"].admin = tmp / "text.sock", tmp / "json.sock"  # type: ignore[attr-defined]
    try:
        for server in s.servers.values():
            server.wait_ready()
        yield s
    finally:
        leftovers = s.stop_all()
        assert not any(leftovers.values()), leftovers


def _raw(server: Server, data: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection((HOST, server.port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def _every_kind_of_request(server: Server) -> dict[str, int]:
    """One of each outcome; returns status by name (all distinct paths, for the log lines)."""
    url = server.url
    got = {}
    got["ok"] = httpx.get(url + "/hello?ok", headers={"x-trace": "t-1"}, timeout=10).status_code
    got["upload"] = httpx.post(url + "/upload?small", content=b"x" * 40, timeout=10).status_code
    got["413"] = httpx.post(url + "/upload?big", content=b"x" * 200, timeout=10).status_code
    got["414"] = httpx.get(url + "/long-" + "u" * 5000, timeout=10).status_code
    got["431"] = httpx.get(url + "/big-header", headers={"x-big": "h" * 9000}, timeout=10).status_code
    got["400"] = int(_raw(server, b"BLAH\x01 / HTTP/1.1\r\n\r\n").split(b" ")[1])
    got["408"] = int(_raw(server, b"GET /slow-head HTTP/1.1\r\nHost: x\r\n").split(b" ")[1])
    # The only worker busy for 2 s: a request queued behind it gives up after 0.3 s (503) — long
    # before the worker is free, however slowly a busy machine gets the test to send it.
    slow = threading.Thread(target=lambda: got.__setitem__("slow", httpx.get(url + "/sleep?t=2", timeout=10)
                                                          .status_code))
    slow.start()
    assert wait_for(lambda: _serving(server) == ["/sleep"], 10), "the sleeper never reached the worker"
    got["503"] = httpx.get(url + "/hello?queued", timeout=10).status_code
    slow.join(10)
    return got


def _serving(server: Server) -> list[str]:
    """The paths the pool's workers serve now, from the admin socket."""
    status, body = asyncio.run(fetch(str(server.admin), "/status"))  # type: ignore[attr-defined]
    assert status == 200
    return [s["path"] for w in json.loads(body)["stats"]["workers"] for s in w["serving"]]


def _lines(server: Server, prefix: str) -> list[str]:
    return [line for line in server.log().splitlines() if line.startswith(prefix)]


def test_every_request_leaves_one_line_refusals_included(servers) -> None:
    server = servers.get("text")
    got = _every_kind_of_request(server)
    assert got == {"ok": 200, "upload": 200, "413": 413, "414": 414, "431": 431, "400": 400, "408": 408,
                   "slow": 200, "503": 503}, got
    assert wait_for(lambda: len([x for x in _lines(server, "ACCESS ") if "/hello|" not in x]) >= 9, 10), \
        server.log()
    lines = [x.split("ACCESS ", 1)[1] for x in _lines(server, "ACCESS ") if "/hello HTTP" not in x]
    by_status: dict[str, list[list[str]]] = {}
    for line in lines:
        fields = line.split("|")
        by_status.setdefault(fields[0], []).append(fields)
    pid = str(server.worker_pids().pop())
    ok = next(f for f in by_status["200"] if f[1] == "GET /hello?ok HTTP/1.1")
    assert ok[2] == pid and ok[7] == "t-1" and ok[8] == "text/plain" and ok[9] == "-" and int(ok[4]) > 0
    upload = next(f for f in by_status["200"] if f[1].startswith("POST /upload?small"))
    assert upload[5] == "40" and upload[2] == pid
    slow = next(f for f in by_status["200"] if f[1].startswith("GET /sleep"))
    assert int(slow[4]) >= 1_000_000
    (too_big,) = by_status["413"]
    assert too_big[1].startswith("POST /upload?big") and too_big[2] == "-" and too_big[9] == "Request body too large"
    (long_uri,) = by_status["414"]
    assert long_uri[1] == "-" and long_uri[9] == "URI Too Long"
    (big_header,) = by_status["431"]
    assert "too long" in big_header[9]
    (bad,) = by_status["400"]
    assert bad[9] == "Invalid HTTP request received."
    (slow_head,) = by_status["408"]
    assert "took too long" in slow_head[9] and int(slow_head[4]) >= 900_000
    (queued,) = by_status["503"]
    assert queued[1] == "GET /hello?queued HTTP/1.1"
    assert queued[9] == "Service Unavailable: timed out waiting for a worker"
    assert 0.25 <= float(queued[3]) < 5, queued
    # Exactly one line per request: nothing above was logged twice (and uvicorn logs none of its own).
    assert sum(len(v) for v in by_status.values()) == 9, lines
    assert "uvicorn.access" not in server.log()


def test_json_log_format_one_object_per_line(servers) -> None:
    server = servers.get("json")
    got = _every_kind_of_request(server)
    assert got["503"] == 503 and got["431"] == 431
    assert wait_for(lambda: sum('"status": 503' in x for x in server.log().splitlines()) == 1, 10), server.log()
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]  # every line is JSON
    access = [r for r in records if r["logger"] == "a2wsgi_mp.access"]
    assert {r["status"] for r in access} >= {200, 400, 408, 413, 414, 431, 503}
    queued = next(r for r in access if r["status"] == 503)
    assert queued["worker_pid"] is None and queued["queued"] >= 0.25 and "timed out" in queued["reason"]
    served = next(r for r in access if r["path"] == "/sleep")
    assert served["worker_pid"] in server.worker_pids() and served["duration"] >= 1.0
    assert any(r["logger"] == "a2wsgi_mp.pool" and "pool ready" in r["message"] for r in records)


def test_no_access_log(tmp_path) -> None:
    with Server.cli(APP, "--workers", "1", "--no-access-log", ready_path="/hello") as server:
        httpx.get(server.url + "/hello?quiet", timeout=10)
        httpx.get(server.url + "/" + "u" * 5000, timeout=10)
        assert "/hello?quiet" not in server.log() and "URI Too Long" not in server.log()
