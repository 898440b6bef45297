"""Real server processes on 127.0.0.1 for end-to-end tests, and the clean-up after them.

Every process a test starts is stopped by pid (TERM, then KILL), and so is every
descendant it ever had, so a failing test never leaves workers behind.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

#: Bound on every wait for a server to come up (it usually takes ~1 s).
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cli_command() -> list[str]:
    """The installed ``a2wsgi-mp`` console script (``python -m a2wsgi_mp`` as a fallback)."""
    script = shutil.which("a2wsgi-mp")
    return [script] if script else [sys.executable, "-m", "a2wsgi_mp"]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class ServerFailed(Exception):
    """The server exited or did not answer in time; the message carries its log."""


class Server:
    """A server subprocess: ``start()`` returns at once, ``wait_ready()`` blocks (bounded).

    ``probe`` is the path polled until it answers; with ``ok_only`` it must answer 200.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        probe: str = "/hello",
        ok_only: bool = True,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self._own_log_dir = log_dir is None
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="server-"))) / f"{name.replace(':', '_')}.log"
        self.env = env if env is not None else subprocess_env()
        self.probe = probe
        self.ok_only = ok_only
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._stopped = False
        self._known: dict[int, psutil.Process] = {}

    @classmethod
    def cli(cls, app: str, *options: str, env: dict[str, str] | None = None, ready_path: str = "/") -> "Server":
        """``python -m a2wsgi_mp APP`` on a free port; ready when ``ready_path`` answers at all."""
        argv = [sys.executable, "-m", "a2wsgi_mp", app, "--host", HOST, "--port", "{port}", *options]
        return cls(app, argv, env=subprocess_env(**(env or {})), probe=ready_path, ok_only=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Server":
        if self.proc is not None:  # a second process would be one nobody stops
            raise RuntimeError(f"server {self.name} started twice")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _RUNNING.add(self)
        _cover_sigterm()
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Server":
        if self._ready:
            return self
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"server {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + self.probe, timeout=1.0)
                if r.status_code == 200 or not self.ok_only:
                    self._ready = True
                    self.remember_descendants()
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerFailed(f"server {self.name} did not answer within {timeout} s:\n{self.log()}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def remember_descendants(self) -> None:
        for p in self.descendants():
            self._known.setdefault(p.pid, p)

    def worker_pids(self) -> set[int]:
        """Pids of the pool's worker processes: the zygote's children."""
        return {p.pid for p in self.descendants() if _alive(p) and _ppid(p) not in (self.pid, None)}

    def signal(self, sig: int) -> None:
        self.remember_descendants()
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> list[psutil.Process]:
        """TERM, wait, KILL; returns the descendants that outlived it (should be none),
        after killing them so they do not leak into the rest of the run."""
        if self.proc is None or self._stopped:
            return []
        self._stopped = True
        _RUNNING.discard(self)
        self.remember_descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        survivors = wait_gone(list(self._known.values()), 5.0)
        for p in survivors:
            try:
                p.kill()
            except psutil.Error:
                pass
        if self._own_log_dir:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)
        return survivors

    def __enter__(self) -> "Server":
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: The name the supervision and transport suites use.
ServerProcess = Server

#: Servers started and not stopped yet.
_RUNNING: set[Server] = set()


@atexit.register
def stop_leftovers() -> list[Server]:
    """Stop every server a test started and never stopped (one that raised between ``start()``
    and the ``with`` or fixture meant to stop it): none outlives the test run."""
    left = list(_RUNNING)
    for server in left:
        print(f"serverproc: stopping server {server.name} (pid {server.pid}), left running by a test",
              file=sys.stderr)
        server.stop()
    return left


def _stop_then_die(signum: int, frame: object) -> None:
    """SIGTERM (a shell's ``timeout``, CI's job limit) ends a run without its at-exit handlers:
    stop the servers first (each in a session of its own, the signal never reached them), then
    die of the signal as the default action would."""
    signal.signal(signum, signal.SIG_DFL)
    stop_leftovers()
    os.kill(os.getpid(), signum)


def _cover_sigterm() -> None:
    """Install :func:`_stop_then_die` for SIGTERM, unless someone else handles it (or this is
    not the main thread, where handlers cannot be set)."""
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _stop_then_die)
    except ValueError:
        pass


class ServerSet:
    """Several servers started together (they boot in parallel), stopped together."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {}

    def add(self, server: Server) -> Server:
        self.servers[server.name] = server.start()
        return server

    def get(self, name: str) -> Server:
        return self.servers[name].wait_ready()

    def stop_all(self) -> dict[str, list[psutil.Process]]:
        return {name: s.stop() for name, s in self.servers.items()}


def _ppid(p: psutil.Process) -> int | None:
    try:
        return p.ppid()
    except psutil.Error:
        return None


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pid_gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie).  Race-free: it may vanish between any two
    psutil calls, which must read as gone, not raise."""
    try:
        return not _alive(psutil.Process(pid))
    except psutil.Error:
        return True


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still alive (and not zombies) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = processes
    while True:
        alive = [p for p in alive if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def metrics(url: str) -> dict[str, float]:
    """The unlabelled samples (and worker states) of the Prometheus endpoint."""
    text = httpx.get(url + "/metrics", timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = values.get(name, 0.0) + float(value) if "{pid=" in name else float(value)
    return values


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, *,
             what: str | None = None) -> Any:
    """``predicate()``'s first true value within ``timeout`` s; its last (false) value after, or,
    if ``what`` says what was awaited, an AssertionError that says it."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            if not result and what is not None:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            return result
        time.sleep(interval)


async def until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """:func:`wait_for` inside an event loop (which keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)
