"""Shared helpers for the core suite: real server processes on 127.0.0.1.

Nothing here is autouse: other test modules that do not ask for these
fixtures pay nothing for them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

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


class Server:
    """A server subprocess; ``start()`` returns at once, ``wait_ready()`` blocks (bounded)."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str], probe: str = "/hello"):
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.probe = probe
        self.proc: subprocess.Popen | None = None
        self._ready = False
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Server":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
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
                pytest.fail(f"server {self.name} exited with {self.proc.returncode} before answering:\n{self.log()}")
            try:
                r = httpx.get(self.url + self.probe, timeout=1.0)
                if r.status_code == 200:
                    self._ready = True
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server {self.name} did not answer within {timeout} s:\n{self.log()}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> set[int]:
        """Pids of the worker processes: the leaves of the server's process tree
        (server -> zygote -> workers; the test apps start no processes of their own)."""
        procs = [p for p in self.descendants() if _alive(p)]
        parents = {_ppid(p) for p in procs}
        return {p.pid for p in procs if p.pid not in parents}

    def stop(self) -> list[psutil.Process]:
        """TERM, wait, KILL; returns the descendants that outlived it (should be none)."""
        if self.proc is None or self._stopped:
            return []
        self._stopped = True
        children = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        deadline = time.monotonic() + 5.0
        survivors = [p for p in children if _alive(p)]
        while survivors and time.monotonic() < deadline:
            time.sleep(0.05)
            survivors = [p for p in survivors if _alive(p)]
        for p in survivors:  # don't leak them into the rest of the run
            try:
                p.kill()
            except psutil.Error:
                pass
        return survivors


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
