"""The deployment options end to end: the real ``a2wsgi-mp`` on 127.0.0.1.

One server per configuration, all booted together (module-scoped): settings
from a config file + environment + command line, proxy headers trusted and
not, TLS with a certificate made here, ``--reload`` on a temporary app, and a
WSGIPool under plain uvicorn (the fallback log format and the layout line).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from .serverproc import HOST, Server, ServerSet, wait_for

APP = "tests.apps.core_app:app"
RELOAD_TIMEOUT = 60.0
XFF = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a2wsgi-mp test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyfile, certfile = directory / "key.pem", directory / "cert.pem"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return keyfile, certfile


RELOAD_APP = '''
import os

VERSION = {version!r}


def app(environ, start_response):
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, module_servers: ServerSet) -> ServerSet:
    tmp = tmp_path_factory.mktemp("deploy")
    config = tmp / "a2wsgi.toml"
    config.write_text("[tool.a2wsgi_mp]\nworkers = 1\nthreads = 3\nroot_path = '/site'\n")
    keyfile, certfile = _self_signed(tmp)
    app_dir = tmp / "reloadable"
    app_dir.mkdir()
    (app_dir / "reload_target.py").write_text(RELOAD_APP.format(version="v1"))
    tls = Server.cli(APP, "--workers", "1", "--ssl-keyfile", str(keyfile), "--ssl-certfile", str(certfile),
                     "--no-proxy-headers")
    uvicorn = Server("uvicorn", [sys.executable, "-m", "uvicorn", "tests.apps.pool_asgi:app", "--host", HOST,
                                 "--port", "{port}"], log_dir=tmp, probe="/hello")
    s = module_servers
    s.add(Server.cli(APP, "--workers", "2", "--config", str(config), env={"A2WSGI_MP_THREADS": "2"},
                     ready_path="/hello"))
    s.servers["layered"] = s.servers.pop(APP)
    s.servers["untrusted"] = Server.cli(APP, "--workers", "1", "--forwarded-allow-ips", "10.1.2.3").start()
    s.servers["tls"] = tls.start()
    s.servers["reload"] = Server.cli("reload_target:app", "--workers", "1", "--app-dir", str(app_dir), "--reload",
                                     env={"PYTHONDONTWRITEBYTECODE": "1"}).start()
    s.servers["uvicorn"] = uvicorn.start()
    s.servers["gunicorn"] = Server("gunicorn", [
        sys.executable, "-m", "gunicorn", "-k", "a2wsgi_mp.workers.gunicorn.PoolWorker", "-b", f"{HOST}:{{port}}",
        "-w", "1", "--threads", "2", APP], log_dir=tmp).start()
    s.app_dir, s.certfile = app_dir, certfile  # type: ignore[attr-defined]
    s.tls_url = f"https://{HOST}:{tls.port}"  # type: ignore[attr-defined]
    return s


def _environ(server: Server, path: str = "/environ", **kwargs) -> dict:
    r = httpx.get(server.url + path, timeout=10, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_command_line_beats_environment_beats_file(servers) -> None:
    server = servers.get("layered")
    log = server.log()
    assert "pool ready" in log and "2 worker(s) x 2 thread(s)" in log, log  # cli workers, env threads
    assert "process layout: 1 front (a2wsgi-mp) x 2 workers x 2 threads" in log, log
    # root_path only in the file: the proxy strips the prefix, the app sees it as SCRIPT_NAME.
    environ = _environ(server, "/environ")
    assert environ["SCRIPT_NAME"] == "/site" and environ["PATH_INFO"] == "/environ"
    assert "settings from environment: threads=2" in log, log


def test_one_log_format_with_time_and_level(servers) -> None:
    log = servers.get("layered").log()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(line.startswith("[20") and "] [INFO] " in line for line in lines[:8]), log
    assert "HTTP parser httptools, event loop uvloop" in log, log
    assert "X-Forwarded-For/-Proto trusted from 127.0.0.1,::1" in log, log


def test_trusted_proxy_headers_reach_the_environ(servers) -> None:
    environ = _environ(servers.get("layered"), headers=XFF)
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert environ["wsgi.url_scheme"] == "https"


def test_untrusted_proxy_headers_do_not(servers) -> None:
    environ = _environ(servers.get("untrusted"), headers=XFF)
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"  # still there, as a plain header


def test_tls_and_no_proxy_headers(servers) -> None:
    server: Server = servers.servers["tls"]
    context = ssl.create_default_context(cafile=str(servers.certfile))

    def answers() -> dict | None:
        if server.proc.poll() is not None:
            pytest.fail(f"TLS server exited:\n{server.log()}")
        try:
            return httpx.get(servers.tls_url + "/environ", verify=context, timeout=2,
                             headers={"X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.7"}).json()
        except httpx.TransportError:
            return None

    environ = wait_for(answers, 30.0, 0.1)
    assert environ, server.log()
    server.remember_descendants()
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"  # --no-proxy-headers: even loopback is not trusted
    assert "TLS on" in server.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(servers.tls_url + "/hello", timeout=5)  # the certificate is not in the system store


def _title(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline()).strip()


def test_process_titles_name_every_role(servers) -> None:
    server = servers.get("layered")
    assert _title(server.pid) == f"a2wsgi-mp: front [{APP}]"
    children = psutil.Process(server.pid).children()
    zygotes = [p for p in children if _title(p.pid) == f"a2wsgi-mp: zygote [{APP}]"]
    assert len(zygotes) == 1, [_title(p.pid) for p in children]
    workers = sorted(_title(p.pid) for p in zygotes[0].children())
    assert workers == [f"a2wsgi-mp: worker 1 [{APP}]", f"a2wsgi-mp: worker 2 [{APP}]"]
    assert httpx.get(server.url + "/pid", timeout=10).json()["forked"] is True  # start method fork (default)


def test_reload_serves_new_code_from_the_same_front(servers) -> None:
    server = servers.get("reload")
    version, pid = httpx.get(server.url + "/", timeout=10).text.split()
    assert version == "v1"
    assert "reload: watching" in server.log()
    (servers.app_dir / "reload_target.py").write_text(RELOAD_APP.format(version="v2-edited"))

    def new_code() -> list[str] | None:
        assert server.proc.poll() is None, server.log()
        answer = httpx.get(server.url + "/", timeout=10).text.split()
        return answer if answer[0] == "v2-edited" else None

    answer = wait_for(new_code, RELOAD_TIMEOUT, 0.1)
    assert answer, server.log()
    assert answer[1] != pid  # a fresh worker imported the new code
    assert wait_for(lambda: "reload complete: 1 worker(s) ready" in server.log(), 30.0), server.log()
    assert "reload_target.py changed" in server.log()
    assert server.proc.poll() is None and _title(server.pid).startswith("a2wsgi-mp: front")


def test_reload_survives_code_that_does_not_import(servers) -> None:
    """Broken code: the old worker serves on while replacements retry; fixed code:
    served, and the pool ends with its one worker (no retry left over as a second)."""
    server = servers.get("reload")
    assert wait_for(lambda: httpx.get(server.url + "/", timeout=10).text.startswith("v2"), RELOAD_TIMEOUT)
    failures = server.log().count("could not load reload_target:app")
    (servers.app_dir / "reload_target.py").write_text("def app(:\n")
    assert wait_for(lambda: server.log().count("could not load reload_target:app") > failures, RELOAD_TIMEOUT), \
        server.log()
    assert httpx.get(server.url + "/", timeout=10).text.startswith("v2-edited ")  # the old worker serves on
    (servers.app_dir / "reload_target.py").write_text(RELOAD_APP.format(version="v3-fixed-again"))
    assert wait_for(lambda: httpx.get(server.url + "/", timeout=10).text.startswith("v3-fixed-again "),
                    RELOAD_TIMEOUT), server.log()
    assert wait_for(lambda: len(server.worker_pids()) == 1, 30.0), (server.worker_pids(), server.log())
    # A back-off retry still pending fires within its announced delay: it must not stay as a second worker.
    delays = [float(line.rsplit(" in ", 1)[1].split()[0]) for line in server.log().splitlines()
              if "starting a new worker in" in line]
    window = time.monotonic() + max(delays, default=0.0) + 3.0
    while time.monotonic() < window:
        assert len(server.worker_pids()) <= 2, server.log()  # (the old worker until its replacement is up)
        time.sleep(0.1)
    assert wait_for(lambda: len(server.worker_pids()) == 1, 30.0), (server.worker_pids(), server.log())
    assert httpx.get(server.url + "/", timeout=10).text.startswith("v3-fixed-again ")


def test_pool_under_plain_uvicorn_logs_with_time_and_level(servers) -> None:
    server = servers.get("uvicorn")
    assert httpx.get(server.url + "/hello", timeout=10).status_code == 200
    log = server.log()
    ready = [line for line in log.splitlines() if "a2wsgi_mp.pool: pool ready" in line]
    assert ready and ready[0].startswith("[20") and "[INFO]" in ready[0], log
    assert "process layout: 1 front (one server process) x 1 worker x 1 thread" in log, log
    assert server.stop() == []
    assert "pool stopped:" in server.log(), server.log()
    assert "draining:" in server.log()


def test_gunicorn_titles_and_threads_mapping(servers) -> None:
    server = servers.get("gunicorn")
    log = server.log()
    assert "--threads 2 means 2 pool process(es)" in log and "1 front x 2 pool processes" in log, log
    assert "process layout: 1 front (gunicorn -w) x 2 workers x 1 thread = 2 app processes" in log, log
    (front,) = psutil.Process(server.pid).children()
    assert _title(front.pid) == f"gunicorn: worker [{APP}]"  # gunicorn's own title, kept
    (zygote,) = front.children()
    assert _title(zygote.pid) == f"gunicorn: pool zygote [{APP}]"
    workers = sorted(_title(p.pid) for p in zygote.children())
    assert workers == [f"gunicorn: pool worker 1 [{APP}]", f"gunicorn: pool worker 2 [{APP}]"]
