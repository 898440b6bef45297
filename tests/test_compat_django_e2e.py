"""Issue 10 end to end: a real Django page that sets a CSRF cookie, on real uvicorn
with h11 and with httptools, through ``WSGIPool`` and ``WSGIMiddleware``; and what
an app's exception or invalid header becomes on the wire and in the logs.

One uvicorn per cell, all started together once for the module.
"""

from __future__ import annotations

import re
import sys
import time

import httpx
import pytest

from .serverproc import HOST, Server, ServerSet, subprocess_env

MODULE = "tests.apps.django_cookie_asgi"
CELLS = [(entry, http) for entry in ("pool", "middleware") for http in ("h11", "httptools")]


def _uvicorn(name: str, attr: str, http: str, log_dir) -> Server:
    argv = [sys.executable, "-m", "uvicorn", f"{MODULE}:{attr}", "--host", HOST, "--port", "{port}",
            "--http", http, "--log-level", "info"]
    return Server(name, argv, log_dir, subprocess_env(), probe="/hello")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, module_servers: ServerSet) -> ServerSet:
    log_dir = tmp_path_factory.mktemp("compat-logs")
    for entry, http in CELLS:
        module_servers.add(_uvicorn(f"{entry}-{http}", entry, http, log_dir))
    module_servers.add(_uvicorn("pool_raising-h11", "pool_raising", "h11", log_dir))
    return module_servers


def _wait_for_log(server: Server, pattern: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if re.search(pattern, log):
            return log
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} never appeared in the log of {server.name}:\n{server.log()}")


@pytest.mark.parametrize("entry,http", CELLS, ids=[f"{e}-{h}" for e, h in CELLS])
def test_django_csrf_form_get_and_post(servers: ServerSet, entry: str, http: str) -> None:
    server = servers.get(f"{entry}-{http}")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("/form")
        assert page.status_code == 200
        set_cookie = page.headers.get_list("set-cookie")
        assert len(set_cookie) == 1 and set_cookie[0].startswith("csrftoken="), set_cookie
        token = re.search(r'value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        posted = client.post("/form", data={"csrfmiddlewaretoken": token, "name": "ada"})
        assert posted.status_code == 200, posted.text[:300]
        assert posted.text == "posted ada"


@pytest.mark.parametrize("entry,http", CELLS, ids=[f"{e}-{h}" for e, h in CELLS])
def test_invalid_header_is_a_clean_500_naming_it(servers: ServerSet, entry: str, http: str) -> None:
    server = servers.get(f"{entry}-{http}")
    response = httpx.get(server.url + "/bad-header", timeout=10)
    assert response.status_code == 500 and response.text == "Internal Server Error"
    _wait_for_log(server, r'"GET /bad-header HTTP/1.1" 500')
    log = _wait_for_log(server, r"InvalidHeader: header 'X-Bad'")  # ours, or uvicorn's (re-raised)
    assert '"GET /bad-header HTTP/1.1" 200' not in log
    assert httpx.get(server.url + "/hello", timeout=10).text == "hello"  # the server is fine


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_middleware_raises_the_app_error_to_uvicorn_after_the_500(servers: ServerSet, http: str) -> None:
    server = servers.get(f"middleware-{http}")
    response = httpx.get(server.url + "/raw-boom", timeout=10)
    assert response.status_code == 500 and response.text == "Internal Server Error"
    _wait_for_log(server, r"Exception in ASGI application")
    _wait_for_log(server, r"LookupError: raw WSGI app failed")


def test_pool_logs_the_remote_traceback_attributed(servers: ServerSet) -> None:
    server = servers.get("pool-h11")
    response = httpx.get(server.url + "/raw-boom", timeout=10)
    assert response.status_code == 500 and response.text == "Internal Server Error"
    log = _wait_for_log(server, r"LookupError: raw WSGI app failed")
    assert re.search(r"\[worker \d+\] Error in WSGI application \(GET /raw-boom\):\nTraceback", log), log
    assert "Exception in ASGI application" not in log  # raise_app_errors is off by default


def test_pool_raise_app_errors_raises_remote_app_error(servers: ServerSet) -> None:
    server = servers.get("pool_raising-h11")
    response = httpx.get(server.url + "/raw-boom", timeout=10)
    assert response.status_code == 500 and response.text == "Internal Server Error"
    _wait_for_log(server, r"RemoteAppError: in worker \d+: Error in WSGI application \(GET /raw-boom\)")
    log = _wait_for_log(server, r"(?s)RemoteAppError: in worker.*LookupError: raw WSGI app failed")
    assert "Exception in ASGI application" in log
    # A good request on the same server still works, and raises nothing.
    assert httpx.get(server.url + "/hello", timeout=10).text == "hello"


def test_pool_raise_app_errors_after_a_cut_response(servers: ServerSet) -> None:
    server = servers.get("pool_raising-h11")
    with pytest.raises(httpx.RemoteProtocolError):  # cut, never passed off as complete
        httpx.get(server.url + "/raw-cut", timeout=10)
    _wait_for_log(server, r"(?s)RemoteAppError: in worker \d+: Error in WSGI application \(GET /raw-cut\)"
                          r".*LookupError: failed mid-stream")


def test_remote_app_error_is_exported() -> None:
    from a2wsgi_mp import RemoteAppError

    error = RemoteAppError("Error in WSGI application (GET /):\nTraceback ...", 42)
    assert error.worker_pid == 42 and error.remote_traceback.startswith("Error in WSGI")


def test_pool_raise_app_errors_under_starlette_testclient() -> None:
    from starlette.testclient import TestClient

    from a2wsgi_mp import RemoteAppError, WSGIPool

    pool = WSGIPool("tests.apps.django_cookie:application", workers=1, graceful_timeout=5, raise_app_errors=True)
    with TestClient(pool) as client:
        assert client.get("/hello").text == "hello"
        with pytest.raises(RemoteAppError) as caught:
            client.get("/raw-boom")
        assert caught.value.remote_traceback.startswith("Error in WSGI application (GET /raw-boom):\nTraceback")
        assert caught.value.remote_traceback.endswith("LookupError: raw WSGI app failed")
        assert client.get("/form").status_code == 200  # the pool serves on
    with TestClient(WSGIPool("tests.apps.django_cookie:application", workers=1, graceful_timeout=5)) as client:
        response = client.get("/raw-boom")  # default: no exception, just the 500
        assert response.status_code == 500
