"""Run a real server process on 127.0.0.1 for end-to-end tests, and clean up after it.

Every process a test starts is stopped by pid (TERM, then KILL), and so is every
descendant it had, so a failing test never leaves workers behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None, ready_path: str = "/") -> None:
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")]))
        self.ready_path = ready_path
        self.log_file = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None
        self._known: dict[int, psutil.Process] = {}

    @classmethod
    def cli(cls, app: str, *options: str, env: dict[str, str] | None = None, ready_path: str = "/") -> "ServerProcess":
        argv = [sys.executable, "-m", "a2wsgi_mp", app, "--host", "127.0.0.1", "--port", "{port}", *options]
        return cls(argv, env, ready_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(self.url + self.ready_path, timeout=1.0)
                self.remember_descendants()
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def remember_descendants(self) -> None:
        for p in self.descendants():
            self._known.setdefault(p.pid, p)

    def worker_pids(self) -> set[int]:
        """Pids of the pool's worker processes (the zygote's children)."""
        pids = set()
        for child in self.descendants():
            try:
                if child.ppid() != self.pid:
                    pids.add(child.pid)
            except psutil.NoSuchProcess:
                pass
        return pids

    def signal(self, sig: int) -> None:
        self.remember_descendants()
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """TERM, then KILL; then make sure no descendant survives."""
        if self.proc is None:
            return
        self.remember_descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        survivors = wait_gone(list(self._known.values()), 5.0)
        for p in survivors:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.log_file.close()
        os.unlink(self.log_file.name)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still alive (and not zombies) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = processes
    while True:
        alive = [p for p in alive if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def metrics(url: str) -> dict[str, float]:
    """Parse the unlabelled samples (and worker states) of the Prometheus endpoint."""
    text = httpx.get(url + "/metrics", timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = values.get(name, 0.0) + float(value) if "{pid=" in name else float(value)
    return values


def wait_for(predicate, timeout: float, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
