"""Test helpers: run gunicorn and scenario scripts as subprocesses, always reaped by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

APPS = Path(__file__).resolve().parent
ROOT = APPS.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """A gunicorn sync server serving ``a2wsgi_gunicorn_app`` on an ephemeral port."""

    def __init__(self, impl: str, marker_dir: Path, preload: bool, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.marker_dir = marker_dir
        args = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(workers),
            "--worker-class", "sync",
            "--timeout", "30",
            "--graceful-timeout", "5",
            "--pythonpath", str(APPS),
        ]
        if preload:
            args.append("--preload")
        args.append("a2wsgi_gunicorn_app:application")
        env = dict(os.environ, A2WSGI_IMPL=impl, A2WSGI_MARKER_DIR=str(marker_dir), PYTHONPATH=str(ROOT))
        self.log_path = marker_dir / "gunicorn.log"  # a file, not a pipe nobody drains
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
        self._children: dict[int, psutil.Process] = {}

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.output()}")
            self.remember_children()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("gunicorn did not start listening")

    def remember_children(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._children.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def terminate(self, timeout: float = 15.0) -> int:
        """Graceful stop (SIGTERM); returns the exit code."""
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Teardown: whatever is left, by pid."""
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for child in self._children.values():
            try:
                if child.is_running():  # psutil checks the pid was not reused
                    child.kill()
            except psutil.Error:
                pass

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_scenario(impl: str, scenario: str, timeout: float = 20.0) -> dict:
    """Run ``a2wsgi_scenarios.py`` in a child (a hung thread must not hang pytest)."""
    proc = subprocess.Popen(
        [sys.executable, str(APPS / "a2wsgi_scenarios.py"), impl, scenario],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        return {"result": "killed", "stderr": err.decode(errors="replace")[-2000:]}
    lines = out.decode().strip().splitlines()
    if not lines:
        return {"result": "no output", "stderr": err.decode(errors="replace")[-2000:]}
    return json.loads(lines[-1])
