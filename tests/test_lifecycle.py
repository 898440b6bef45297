"""The server's life on a real process: a SIGTERM within the graceful budget, exit statuses
that tell causes apart, health, the shutdown delay, and what systemd hears (sd_notify).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from .serverproc import (
    HOST,
    REPO,
    Server,
    cli_command,
    free_port,
    metrics,
    subprocess_env,
    wait_for,
    wait_gone,
)

APP = "tests.apps.core_app:app"
GRACEFUL = 2.0


def _serve(tmp_path: Path, *options: str, name: str = "life", env: dict[str, str] | None = None) -> Server:
    argv = [*cli_command(), APP, "--host", HOST, "--port", "{port}", *options]
    return Server(name, argv, log_dir=tmp_path, env=subprocess_env(**(env or {})))


def _hang(url: str, results: dict) -> threading.Thread:
    """A request that never ends (the app sleeps 1000 s), in a thread."""
    def run() -> None:
        try:
            r = httpx.get(url + "/sleep?t=1000", timeout=30)
            results["status"] = r.status_code
        except httpx.HTTPError as exc:
            results["status"] = repr(exc)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("everyone", [False, True], ids=["term-to-the-front", "term-to-every-process"])
def test_sigterm_exits_within_the_graceful_timeout_with_a_request_that_never_ends(tmp_path, everyone) -> None:  # type: ignore[no-untyped-def]
    server = _serve(tmp_path, "--workers", "2", "--graceful-timeout", str(GRACEFUL), "--metrics-path", "/metrics")
    server.start().wait_ready()
    try:
        results: dict = {}
        thread = _hang(server.url, results)
        assert wait_for(lambda: metrics(server.url).get("a2wsgi_mp_busy_slots", 0) >= 1, 10), server.log()
        tree = [psutil.Process(server.pid), *server.descendants()]
        began = time.monotonic()
        for p in tree if everyone else tree[:1]:  # systemd's default KillMode: TERM to the whole cgroup
            p.send_signal(signal.SIGTERM)
        code = server.wait(GRACEFUL + 10)
        elapsed = time.monotonic() - began
        thread.join(10)
    finally:
        server.stop()
    log = server.log()
    assert code == 0, log
    assert elapsed <= GRACEFUL + 1.0, (elapsed, log)
    assert results["status"] == 503, (results, log)
    assert log.count("cut after the graceful timeout") == 1, log
    for bad in ("Traceback", "Task was destroyed", "CancelledError", "died", "Cancel "):
        assert bad not in log, (bad, log)
    assert not re.search(r"worker \d+ ready in|starting a new worker", log), log  # no respawn while draining
    assert wait_gone(tree, 5) == []


@pytest.mark.parametrize("options", [[], ["--preload"], ["--fronts", "2"]],
                         ids=["workers-loading", "zygote-preloading", "two-fronts"])
def test_sigterm_while_the_app_loads_stops_at_once_and_exits_0(tmp_path: Path, options: list[str]) -> None:
    """``systemctl stop`` during a slow start: the start-up is abandoned (not waited out to the
    boot timeout, 60 s), nothing is called a failure, and no process is left."""
    loading = tmp_path / "imports"
    loading.touch()
    argv = [*cli_command(), "tests.apps.slow_import:app", "--host", HOST, "--port", "{port}", "--workers", "2",
            *options]
    server = Server("slowboot", argv, log_dir=tmp_path, env=subprocess_env(SLOW_IMPORT_LOG=str(loading)))
    server.start()
    try:
        importing = 2 if "--fronts" in options else 1  # (with two fronts: both are starting)
        assert wait_for(lambda: len(loading.read_text().split()) >= importing, 30), server.log()
        tree = [psutil.Process(server.pid), *server.descendants()]
        os.kill(server.pid, signal.SIGTERM)
        code = server.wait(20)  # (the boot timeout is 60 s: waiting it out fails here)
    finally:
        server.stop()
    log = server.log()
    assert code == 0, log
    assert "start-up abandoned" in log, log
    for bad in ("ERROR", "Traceback", "failed"):
        assert bad not in log, (bad, log)
    assert wait_gone(tree, 5) == []


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*cli_command(), *args], cwd=REPO, env=subprocess_env(**(env or {})),
                          capture_output=True, text=True, timeout=60, check=False)


def test_exit_status_tells_a_port_in_use_from_an_app_that_cannot_load() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        in_use = _run(APP, "--host", HOST, "--port", port)
        in_use_fronts = _run(APP, "--host", HOST, "--port", port, "--fronts", "2")
    broken = _run("tests.apps.core_broken:app", "--host", HOST, "--port", str(free_port()), "--workers", "1")
    broken_fronts = _run("tests.apps.core_broken:app", "--host", HOST, "--port", str(free_port()), "--fronts", "2",
                         "--workers", "2")
    assert in_use.returncode == 4, in_use.stderr
    assert "cannot listen on" in in_use.stderr and "in use" in in_use.stderr, in_use.stderr
    assert in_use_fronts.returncode == 4, in_use_fronts.stderr
    assert broken.returncode == 3, broken.stderr
    assert broken_fronts.returncode == 3, broken_fronts.stderr
    assert "worker 1 (pid " in broken_fronts.stderr and "could not load tests.apps.core_broken:app" in \
        broken_fronts.stderr, broken_fronts.stderr
    assert "Uvicorn running" not in in_use.stderr + broken.stderr


@pytest.mark.parametrize("args,needle", [
    (["--workers-min", "3", "--workers-max", "2"], "--workers-min (3) must not exceed --workers-max (2)"),
    (["--port", "99999"], "99999 is not a TCP port"),
    (["--ssl-certfile", "/nonexistent/cert.pem"], "TLS: cannot use /nonexistent/cert.pem"),
    (["-b", "127.0.0.1:notaport"], "-b/--bind"),
])
def test_configuration_errors_exit_2_naming_the_flag_without_a_traceback(args: list[str], needle: str) -> None:
    result = _run(APP, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_short_flags_and_any_case_log_level(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "server.toml"
    config.write_text('threads = 2\n')
    port = free_port()
    argv = [*cli_command(), APP, "-b", f"{HOST}:{port}", "-w", "1", "-c", str(config), "--log-level", "DEBUG"]
    server = Server("short-flags", argv, log_dir=tmp_path)
    server.port = port
    with server:
        assert httpx.get(server.url + "/hello", timeout=10).text == "Hello, world!"
        assert len(server.worker_pids()) == 1
    log = server.log()
    assert "threads=2" in log and "workers=1" in log, log
    assert "[DEBUG]" in log, log


class _NotifySocket:
    """The NOTIFY_SOCKET systemd would open: a thread collects every datagram the server sends
    (as systemd does: its queue holds only a few, and a sender must never block on it)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, OSError):
                pass

    def read(self) -> list[str]:
        return list(self.messages)

    def saw(self, line: str, after: int = 0) -> bool:
        return any(line in m.splitlines() for m in self.read()[after:])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_health_shutdown_delay_and_sd_notify(tmp_path) -> None:  # type: ignore[no-untyped-def]
    notify = _NotifySocket(tmp_path / "notify")
    delay = 2.5
    server = _serve(tmp_path, "--workers", "1", "--health-path", "/healthz", "--metrics-path", "/metrics",
                    "--shutdown-delay", str(delay), "--graceful-timeout", str(GRACEFUL),
                    env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
    try:
        server.start().wait_ready()
        assert wait_for(lambda: notify.saw("READY=1"), 10), notify.messages
        assert any(m.startswith("STATUS=serving") for msg in notify.messages for m in msg.splitlines())
        # Watchdog pings every WATCHDOG_USEC / 2.
        assert wait_for(lambda: sum("WATCHDOG=1" in m for m in notify.read()) >= 3, 10), notify.messages

        with httpx.Client(base_url=server.url, timeout=10) as client:
            served = metrics(server.url)["a2wsgi_mp_requests_total"]
            for _ in range(5):
                r = client.get("/healthz")
                assert r.status_code == 200 and r.text.startswith("ok"), r.text
            assert metrics(server.url)["a2wsgi_mp_requests_total"] == served  # never sent to a worker

            # SIGHUP: RELOADING=1, then READY=1 once the fresh worker serves.
            mark = len(notify.read())
            old = server.worker_pids()
            os.kill(server.pid, signal.SIGHUP)
            assert wait_for(lambda: notify.saw("RELOADING=1", mark), 10), notify.messages
            assert wait_for(lambda: notify.saw("READY=1", mark + 1), 30), notify.messages
            assert server.worker_pids().isdisjoint(old)

            # SIGTERM: STOPPING=1, health 503 at once, requests still served during the delay.
            began = time.monotonic()
            os.kill(server.pid, signal.SIGTERM)
            assert wait_for(lambda: notify.saw("STOPPING=1"), 5), notify.messages
            assert client.get("/healthz").status_code == 503
            served_during_delay = 0
            while time.monotonic() - began < delay - 1.0:  # (a second to spare: the last one may be slow)
                assert client.get("/hello").status_code == 200
                with httpx.Client(timeout=5) as fresh:  # new connections are still accepted too
                    assert fresh.get(server.url + "/hello").status_code == 200
                served_during_delay += 1
        assert served_during_delay >= 1
        code = server.wait(delay + GRACEFUL + 10)
        elapsed = time.monotonic() - began
    finally:
        server.stop()
        notify.close()
    log = server.log()
    assert code == 0, log
    assert delay <= elapsed <= delay + 1.5, (elapsed, log)  # nothing in flight: the drain is quick
    assert "Traceback" not in log, log


def test_systemd_socket_activation_serves_on_the_passed_socket(tmp_path) -> None:  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # As systemd does: the socket on fd 3, LISTEN_PID the server's own pid (exec keeps it).
    launcher = (f"import os, sys; os.dup2({fd}, 3); os.close({fd}); "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='web'); "
                "os.execvp(sys.argv[1], sys.argv[1:])")
    argv = [sys.executable, "-c", launcher, *cli_command(), APP, "--workers", "1"]
    log_path = tmp_path / "activated.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, cwd=REPO, env=subprocess_env(), stdout=log_file, stderr=subprocess.STDOUT,
                                pass_fds=(fd,), start_new_session=True)
    listener.close()  # the server holds it now
    try:
        url = f"http://{HOST}:{port}"
        assert wait_for(lambda: proc.poll() is not None or _answers(url), 30), log_path.read_text()
        assert proc.poll() is None, log_path.read_text()
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)]
        for p in workers:  # the variables were for the server only
            assert "LISTEN_FDS" not in p.environ(), p.cmdline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert "settings from systemd socket activation (LISTEN_FDS): fd=3" in log, log
    assert f"listening on http://{HOST}:{port} (fd 3)" in log, log
    assert "Traceback" not in log, log


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/hello", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
