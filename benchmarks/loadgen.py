"""Load generators (wrk, curl) and their parsers; the RSS sampler of a server's tree."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any

import psutil

from . import cpu
from .configs import MiB
from .servers import Server


def ensure_wrk() -> str:
    exe = shutil.which("wrk")
    if exe:
        return exe
    print("wrk is missing; it installs with: apt-get install -y wrk", flush=True)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("running as root: trying apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], timeout=300, check=False)
        exe = shutil.which("wrk")
        if not exe:
            subprocess.run(["apt-get", "update"], timeout=300, check=False)
            subprocess.run(["apt-get", "install", "-y", "wrk"], timeout=300, check=False)
            exe = shutil.which("wrk")
    if not exe:
        sys.exit("wrk is required: apt-get install -y wrk")
    return exe


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk_args(url: str, conns: int, duration: float, headers: tuple[str, ...] = (), script: str = "") -> list[str]:
    seconds = max(1, math.ceil(duration))  # wrk takes whole seconds only
    extra = [arg for header in headers for arg in ("-H", header)] + (["-s", script] if script else [])
    return [ensure_wrk(), "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "2s", *extra, url]


def parse_wrk(out: str, duration: float) -> dict[str, Any]:
    r: dict[str, Any] = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["requests"] = int(m.group(1)) if m else 0
    elapsed = _ms(m.group(2) + m.group(3)) / 1e3 if m else duration
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = (dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
                          if m else {})
    r["good_rps"] = max(r["requests"] - r["non2xx"], 0) / elapsed if elapsed > 0 else 0.0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    return r


def run_wrk_best(url: str, conns: int, duration: float, repeat: int,
                 server: Server | None = None) -> dict[str, Any]:
    """Best of ``repeat`` runs (by good rps): the machine is shared, noise only ever slows a run.

    With ``server``, every run also measures CPU per request by role
    (:mod:`benchmarks.cpu`); the best run's figures are kept, and the lowest
    of each role over the runs too (contention only ever adds CPU time).
    """
    def once() -> dict[str, Any]:
        if server is None:
            return run_wrk(url, conns, duration)
        return cpu.measured(server, lambda: run_wrk(url, conns, duration))

    runs = [once() for _ in range(max(1, repeat))]
    best = max(runs, key=lambda r: r["good_rps"])
    if len(runs) > 1:
        best = dict(best, all_good_rps=[round(r["good_rps"], 1) for r in runs])
        if server is not None:
            best["cpu_per_request_all"] = [r["cpu_per_request"] for r in runs]
    return best


def run_wrk(url: str, conns: int, duration: float, headers: tuple[str, ...] = (), script: str = "") -> dict[str, Any]:
    proc = subprocess.run(wrk_args(url, conns, duration, headers, script), capture_output=True, text=True,
                          timeout=duration + 15)
    r = parse_wrk(proc.stdout, duration)
    if proc.returncode != 0 or not r["requests"]:
        r["stderr"] = (proc.stderr or proc.stdout)[-500:]
    return r


class RssSampler:
    """Peak RSS of every process in a server's tree, sampled every 50 ms."""

    def __init__(self, server: Server, interval: float = 0.05) -> None:
        self.server = server
        self.interval = interval
        self.peaks: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for p in self.server.processes():
            try:
                rss = p.memory_info().rss
                entry = self.peaks.get(p.pid)
                if entry is None:
                    cmd = " ".join(p.cmdline()[:4])[:80]
                    self.peaks[p.pid] = {"pid": p.pid, "cmd": cmd, "start_rss": rss, "peak_rss": rss}
                elif rss > entry["peak_rss"]:
                    entry["peak_rss"] = rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sample()

    def summary(self) -> dict[str, Any]:
        procs = sorted(self.peaks.values(), key=lambda e: -e["peak_rss"])
        return {"max_rss_mib": round(procs[0]["peak_rss"] / MiB, 1) if procs else None,
                "processes": [dict(e, peak_rss_mib=round(e["peak_rss"] / MiB, 1),
                                   start_rss_mib=round(e["start_rss"] / MiB, 1)) for e in procs]}


def curl(args: list[str], timeout: float) -> tuple[int, float, str]:
    """(http status, seconds, body/stderr) from a bounded curl run."""
    with tempfile.NamedTemporaryFile(delete=False) as out:
        outpath = out.name
    try:
        proc = subprocess.run(["curl", "-sS", "--max-time", f"{timeout:g}", "-o", outpath,
                               "-w", "%{http_code} %{time_total}", *args],
                              capture_output=True, text=True, timeout=timeout + 10)
        code, _, secs = proc.stdout.strip().partition(" ")
        with open(outpath, "rb") as f:
            body = f.read(200).decode(errors="replace")
        return int(code or 0), float(secs or "nan"), body if proc.returncode == 0 else proc.stderr.strip()
    finally:
        os.unlink(outpath)
