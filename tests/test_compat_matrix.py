"""Compatibility matrix, WSGI side: real frameworks × HTTP implementations × entry points.

One server per cell (module-scoped, so one runs at a time) serves every
framework through :mod:`tests.apps.compat_wsgi` — a stock Django 5.2 site
(admin, auth, sessions, CSRF, sqlite), Flask, Bottle and a bare WSGI app,
mounted by path prefix.  Every case is a real request from httpx following the
cookie/CSRF flow a browser follows.

Cells (entry point / HTTP implementation), chosen so each runs distinct code:

* ``cli-httptools``, ``cli-h11``: ``a2wsgi-mp APP`` (uvicorn), with httptools
  installed and without it, as where it is not installed (tests/shims/no_httptools):
  uvicorn's ``auto`` then picks h11.
* ``pool-uvicorn-h11``, ``pool-hypercorn``: a ``WSGIPool`` object under
  another ASGI server (hypercorn has its own h11 glue and ASGI checks), with
  ``raise_app_errors=True`` behind an error tracker (the CLI and gunicorn cells
  run the default, which only logs).
* ``gunicorn-poolworker`` (httptools), ``gunicorn-poolh11worker`` (h11).
* ``middleware-uvicorn-httptools``, ``middleware-uvicorn-h11``,
  ``middleware-hypercorn``: the in-process ``WSGIMiddleware``.
* ``a2wsgi-uvicorn-h11``: a2wsgi 1.10's ``WSGIMiddleware`` in the same line of
  code (one import changed) — the reference the others must match.

Docs: README "switching from a2wsgi", notes/compat-matrix.md has the table.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import h11
import httpx
import pytest

from .serverproc import HOST, REPO, Server, subprocess_env, wait_for

pytestmark = pytest.mark.timeout(120)

APP = "tests.apps.compat_wsgi:application"
POOL_RAISING = "tests.apps.compat_asgi_entry:pool_raising"
MIDDLEWARE = "tests.apps.compat_asgi_entry:middleware"
CLI = [sys.executable, "-m", "a2wsgi_mp", APP, "--host", HOST, "--port", "{port}", "--workers", "2"]
NO_HTTPTOOLS = REPO / "tests" / "shims" / "no_httptools"
UVICORN = [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", "{port}", "--log-level", "info"]
HYPERCORN = [sys.executable, "-m", "hypercorn", "--bind", f"{HOST}:{{port}}", "--error-logfile", "-"]
GUNICORN = [sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{{port}}", "-w", "1", "--threads", "2",
            "--no-control-socket", "--graceful-timeout", "5"]
WORKERS = "a2wsgi_mp.gunicorn."

#: cell -> (argv, extra environment)
CELLS: dict[str, tuple[list[str], dict[str, str]]] = {
    "cli-httptools": (CLI, {}),
    # Where httptools is not installed, uvicorn's auto picks h11.
    "cli-h11": (CLI, {"PYTHONPATH": str(NO_HTTPTOOLS)}),
    "pool-uvicorn-h11": ([*UVICORN, "--http", "h11", POOL_RAISING], {"COMPAT_WORKERS": "2"}),
    "pool-hypercorn": ([*HYPERCORN, POOL_RAISING], {"COMPAT_WORKERS": "2"}),
    "gunicorn-poolworker": ([*GUNICORN, "-k", WORKERS + "PoolWorker", APP], {}),
    "gunicorn-poolh11worker": ([*GUNICORN, "-k", WORKERS + "PoolH11Worker", APP], {}),
    "middleware-uvicorn-httptools": ([*UVICORN, "--http", "httptools", MIDDLEWARE], {"COMPAT_PRELOAD": "1"}),
    "middleware-uvicorn-h11": ([*UVICORN, "--http", "h11", MIDDLEWARE], {"COMPAT_PRELOAD": "1"}),
    "middleware-hypercorn": ([*HYPERCORN, MIDDLEWARE], {"COMPAT_PRELOAD": "1"}),
    "a2wsgi-uvicorn-h11": ([*UVICORN, "--http", "h11", MIDDLEWARE], {"COMPAT_PRELOAD": "1", "A2WSGI_IMPL": "a2wsgi"}),
}

MiB = 1024 * 1024
TIMEOUT = httpx.Timeout(30.0)

#: Open defects the matrix found, as strict xfails (an XPASS fails the run: then delete the entry).
#: (It found one: a re-raised app error after a keep-alive 500 made uvicorn close the connection
#: unannounced; the 500 now says ``Connection: close``.)
OPEN_DEFECTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def django_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated sqlite DB with the superuser, made once for every cell."""
    directory = tmp_path_factory.mktemp("djsite")
    subprocess.run([sys.executable, "-m", "tests.apps.djsite.prepare", str(directory)],
                   cwd=REPO, env=subprocess_env(), check=True, timeout=120)
    return directory


@pytest.fixture(scope="module", params=list(CELLS))
def cell(request: pytest.FixtureRequest, django_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    argv, extra = CELLS[request.param]
    marks = tmp_path_factory.mktemp("shim-marks")
    env = subprocess_env(COMPAT_DJANGO_DIR=str(django_dir), COMPAT_SHIM_MARKS=str(marks), **extra)
    if "PYTHONPATH" in extra:  # in front of the repo, which subprocess_env put first
        env["PYTHONPATH"] = os.pathsep.join([extra["PYTHONPATH"], subprocess_env()["PYTHONPATH"]])
    server = Server(request.param, argv, log_dir=marks, env=env, probe="/raw/hello")  # log kept for failures
    with server:
        if "PYTHONPATH" in extra:
            # The front really ran without httptools (so on h11), not by luck.
            assert (marks / f"httptools-refused.{server.pid}").exists(), list(marks.iterdir())
        yield server
    assert not server.stop(), f"processes outlived the {request.param} server"


@pytest.fixture(autouse=True)
def open_defect(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    reason = OPEN_DEFECTS.get((request.node.originalname, callspec.params.get("cell") if callspec else ""))
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.fixture()
def client(cell: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cell.url, timeout=TIMEOUT) as c:
        yield c


def hidden(html: str, name: str) -> str:
    """The value of a form's hidden input, as a browser would submit it."""
    match = re.search(rf'name="{name}" value="([^"]+)"', html) or re.search(rf'value="([^"]+)" name="{name}"', html)
    assert match, f"no {name} input in:\n{html[:2000]}"
    return match.group(1)


def assert_logged(server: Server, text: str) -> None:
    """The app's exception reached the server's log (its traceback, not just a 500)."""
    assert wait_for(lambda: text in server.log(), 10), f"{text!r} not in the log:\n{server.log()[-4000:]}"


def payload(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


# ---------------------------------------------------------------- Django


def test_django_csrf_form(client: httpx.Client) -> None:
    page = client.get("/dj/form/")
    assert page.status_code == 200, page.text
    assert "csrftoken" in client.cookies, page.headers
    token = hidden(page.text, "csrfmiddlewaretoken")
    posted = client.post("/dj/form/", data={"csrfmiddlewaretoken": token, "name": "Zoë"})
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"name": "Zoë"}
    # The token really is checked: without it, Django refuses.
    assert client.post("/dj/form/", data={"name": "x"}).status_code == 403


def test_django_admin_login(client: httpx.Client) -> None:
    start = client.get("/dj/admin/")
    assert start.status_code == 302
    assert start.headers["location"] == "/dj/admin/login/?next=/dj/admin/"
    login = client.get(start.headers["location"])
    assert login.status_code == 200, login.text
    form = {"csrfmiddlewaretoken": hidden(login.text, "csrfmiddlewaretoken"), "username": "admin",
            "password": "compat-pass", "next": "/dj/admin/"}
    done = client.post("/dj/admin/login/?next=/dj/admin/", data=form)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/dj/admin/"
    assert "sessionid" in client.cookies
    home = client.get("/dj/admin/")
    assert home.status_code == 200
    assert "Site administration" in home.text
    users = client.get("/dj/admin/auth/user/")
    assert users.status_code == 200 and "admin@example.com" in users.text
    # Logging out is a CSRF-protected POST (Django 5); afterwards the admin asks for a login again.
    out = client.post("/dj/admin/logout/", data={"csrfmiddlewaretoken": hidden(home.text, "csrfmiddlewaretoken")})
    assert out.status_code == 200 and "Logged out" in out.text
    assert client.get("/dj/admin/").status_code == 302


def test_django_session_counter(client: httpx.Client) -> None:
    counts = [client.get("/dj/counter/").json()["count"] for _ in range(3)]
    assert counts == [1, 2, 3]


def test_django_upload(client: httpx.Client) -> None:
    token = hidden(client.get("/dj/form/").text, "csrfmiddlewaretoken")
    data = payload(4 * MiB + 123, 1)
    r = client.post("/dj/upload/", data={"csrfmiddlewaretoken": token, "name": "big"},
                    files={"file": ("big.bin", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "big.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "field": "big"}


def test_django_file_response(client: httpx.Client, django_dir: Path) -> None:
    r = client.get("/dj/file/")
    assert r.status_code == 200
    expected = (django_dir / "served.bin").read_bytes()
    assert r.content == expected
    assert r.headers["content-length"] == str(len(expected))
    assert r.headers["content-disposition"] == 'attachment; filename="served.bin"'


def test_django_streaming(client: httpx.Client) -> None:
    with client.stream("GET", "/dj/stream/") as r:
        assert r.status_code == 200
        body = b"".join(r.iter_bytes())
    assert body == b"".join(f"line {i}\n".encode() for i in range(100))


def test_django_view_raises(client: httpx.Client, cell: Server) -> None:
    r = client.get("/dj/raise/")
    assert r.status_code == 500
    assert "Server Error (500)" in r.text
    assert_logged(cell, "compat-matrix: django view failed")


# ---------------------------------------------------------------- Flask


def test_flask_session(client: httpx.Client) -> None:
    counts = [client.get("/flask/counter").json()["count"] for _ in range(3)]
    assert counts == [1, 2, 3]
    assert "session" in client.cookies


def test_flask_upload(client: httpx.Client) -> None:
    data = payload(3 * MiB, 2)
    r = client.post("/flask/upload", data={"name": "f"}, files={"file": ("f.bin", data)})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "f.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "field": "f"}


def test_flask_streaming(client: httpx.Client) -> None:
    r = client.get("/flask/stream")
    assert r.status_code == 200
    assert r.text == "".join(f"line {i} /stream\n" for i in range(100))


def test_flask_view_raises(client: httpx.Client, cell: Server) -> None:
    r = client.get("/flask/raise")
    assert r.status_code == 500
    assert_logged(cell, "compat-matrix: flask view failed")


# ---------------------------------------------------------------- Bottle and bare WSGI


def test_bottle_cookie(client: httpx.Client) -> None:
    seen = [client.get("/bottle/cookie").json()["seen"] for _ in range(3)]
    assert seen == [0, 1, 2]


def test_bottle_upload_and_stream(client: httpx.Client) -> None:
    data = payload(2 * MiB, 3)
    r = client.post("/bottle/upload", files={"file": ("b.bin", data)})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "b.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    s = client.get("/bottle/stream")
    assert s.status_code == 200 and s.text == "".join(f"line {i}\n" for i in range(100))


def test_bottle_view_raises(client: httpx.Client, cell: Server) -> None:
    # Bottle answers 500 itself and writes the traceback to wsgi.errors.
    r = client.get("/bottle/raise")
    assert r.status_code == 500
    assert_logged(cell, "compat-matrix: bottle view failed")


def test_bare_wsgi_app_raises(client: httpx.Client, cell: Server) -> None:
    # Nothing catches this one: the adapter answers 500 and logs the traceback.
    r = client.get("/raw/raise")
    assert r.status_code == 500
    assert_logged(cell, "compat-matrix: bare WSGI app failed")
    argv = CELLS[cell.name][0]
    if MIDDLEWARE in argv:
        # In process, the exception then reaches the ASGI server, through the
        # error tracker wrapped around the middleware (as a2wsgi's does).
        assert_logged(cell, "error tracker saw RuntimeError: compat-matrix: bare WSGI app failed")
    if POOL_RAISING in argv:
        # From a pool worker, with raise_app_errors=True: its traceback as text.
        assert_logged(cell, "error tracker saw RemoteAppError: RuntimeError: compat-matrix: bare WSGI app failed")
    # And keeps serving (on a new connection: reusing this one after the error
    # is test_error_response_keeps_or_closes_the_connection's subject).
    assert httpx.get(cell.url + "/raw/hello", timeout=TIMEOUT).text == "hello"


def _exchange(conn: h11.Connection, sock: socket.socket) -> h11.Response | None:
    """The next response's head (its body read through), or None if the server hung up."""
    response = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.EndOfMessage):
            return response
        elif isinstance(event, h11.ConnectionClosed):
            return None


def test_error_response_keeps_or_closes_the_connection(cell: Server) -> None:
    """After the app raised, the client's connection is either kept (a pipelined
    request is answered) or the 500 says ``Connection: close``; never a keep-alive
    500 followed by a silent hang-up, which drops the client's next request."""
    def request(target: str) -> tuple[h11.Connection, bytes]:
        conn = h11.Connection(h11.CLIENT)
        head = conn.send(h11.Request(method="GET", target=target, headers=[("Host", HOST)]))
        return conn, head + conn.send(h11.EndOfMessage())

    conn, first = request("/raw/raise")
    _, second = request("/raw/hello")
    with socket.create_connection((HOST, cell.port), timeout=30) as sock:
        sock.sendall(first + second)  # pipelined, as a client reusing the connection may
        failed = _exchange(conn, sock)
        assert failed is not None and failed.status_code == 500
        if conn.their_state is h11.MUST_CLOSE:
            return  # the 500 said Connection: close: the client will not reuse it
        conn.start_next_cycle()
        conn.send(h11.Request(method="GET", target="/raw/hello", headers=[("Host", HOST)]))
        conn.send(h11.EndOfMessage())
        answer = _exchange(conn, sock)
        assert answer is not None, (
            f"{cell.name}: a keep-alive 500, then the connection was dropped with the pipelined request unanswered"
        )
        assert answer.status_code == 200
