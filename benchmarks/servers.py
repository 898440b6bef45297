"""Server subprocesses: start one, wait until it answers, stop its whole process tree."""

from __future__ import annotations

import atexit
import http.client
import os
import re
import signal
import socket
import subprocess
import time
from typing import Any

import psutil

from .configs import REPO, TREES, Config, server_command

_LIVE: dict[int, "Server"] = {}


class ServerError(RuntimeError):
    pass


class Server:
    def __init__(self, cfg: Config, logdir: str) -> None:
        self.cfg = cfg
        self.port = free_port()
        self.argv, extra_env = server_command(cfg, self.port)
        self.repo = TREES.get(cfg.server, REPO)  # (``-m`` imports from the working directory first)
        self.env = dict(os.environ, PYTHONPATH=self.repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        BENCH_TMPDIR=logdir, **extra_env)  # BENCH_TMPDIR: where the Django site's DB goes
        self.logpath = os.path.join(logdir, re.sub(r"[^\w.-]+", "_", cfg.key) + ".log")
        self.proc: subprocess.Popen | None = None
        self.started = False
        self.notes: list[str] = []
        self.ready_path = "/ping" if cfg.app == "router" else "/hello"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> float:
        t0 = time.monotonic()
        self.log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=self.repo, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE[self.proc.pid] = self
        deadline = t0 + timeout
        ok = 0
        self.started = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.cfg.key} exited with {self.proc.returncode} while starting:\n{self.tail()}")
            # For P3 check the pool path too: the pool must be up, not only /ping.
            status = http_status(self.port, "/hello")
            ok = ok + 1 if status == 200 else 0
            if ok >= 5:  # several answers in a row: every worker is probably up
                self.started = True
                time.sleep(0.2)
                return time.monotonic() - t0
            time.sleep(0.05 if ok else 0.2)
        raise ServerError(f"{self.cfg.key} did not answer within {timeout:.0f} s:\n{self.tail()}")

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        try:
            tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        pgid = proc.pid  # start_new_session: the server leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.notes.append(f"did not exit within {grace:.0f} s of SIGTERM; SIGKILLed")
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
        # Children that left the group or outlived the parent: wait briefly, then kill by pid.
        deadline = time.monotonic() + 3.0
        left = tree
        while left and time.monotonic() < deadline:
            left = [pid for pid in left if psutil.pid_exists(pid) and _not_zombie(pid)]
            time.sleep(0.05)
        if left:
            self.notes.append(f"{len(left)} child process(es) outlived the server by 3 s; SIGKILLed by pid")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        _LIVE.pop(proc.pid, None)
        self.log.close()

    def log_text(self) -> str:
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 30) -> str:
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join("    | " + line for line in lines[-n:])
        except OSError:
            return ""

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stop_tree(proc: "subprocess.Popen[Any]", descendants: list[psutil.Process], grace: float) -> None:
    """TERM ``proc``, KILL it after ``grace`` seconds, then give ``descendants``
    (looked up while it ran) 5 s to follow and KILL the rest by pid."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    _, alive = psutil.wait_procs(descendants, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_all() -> None:
    for server in list(_LIVE.values()):
        try:
            server.stop(grace=2.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_stop_all)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
