"""a2wsgi_mp benchmarks against its peers, side by side, in one run.

    python -m benchmarks --quick                  # <= 2 minutes
    python -m benchmarks --full                   # <= 10 minutes
    python -m benchmarks --quick --only P1,P3 --servers a2wsgi_mp,a2wsgi

Every configuration is a server subprocess on 127.0.0.1 (a free port, its own
process group), driven by ``wrk`` (or curl / raw sockets) and stopped by its
pgid (TERM, then KILL).  Prints a table of raw figures, ratios against the
peers measured in the same run and the goals met / not met; writes
``benchmarks/results/latest.json`` and ``benchmarks/results/chart.png``.

Scenarios (see /work/shared/BRIEF.md for the goals):

P1 hello rps, c=32                         P5 upload of a big body (time, peak RSS of every process)
P2 CPU-bound (~10 ms) rps, c=32            P6 streamed download of a big body (time, peak RSS)
P3 async /ping p99 beside a CPU-saturated  P7 sleep(50 ms) rps, c=32, equal processes x threads
   WSGI app (ASGI router, one front)       P8 P2 with 1, 2, 4 workers (a2wsgi_mp, gunicorn sync)
P4 hello rps while slow uploaders trickle chunked bodies, vs the same server idle
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

if __package__ in (None, ""):  # ``python benchmarks/run.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
PY = sys.executable
MiB = 1024 * 1024

# --- configurations -----------------------------------------------------------

#: a2wsgi_mp configurations: (server name, extra CLI args, extra WSGIPool kwargs).
#: In quick mode only the first runs every scenario; the others get P1, P2, P4, P5, P6
#: (where the transport matters most), to stay within 2 minutes.
MP_VARIANTS: list[tuple[str, list[str], dict[str, Any]]] = [
    ("a2wsgi_mp", [], {}),
    ("a2wsgi_mp-shm", ["--ipc", "shm"], {"ipc": "shm"}),
]
MP_NAMES = [name for name, _, _ in MP_VARIANTS]
PEERS = ["a2wsgi", "gunicorn-sync", "gunicorn-gthread", "granian"]
#: Full mode only (unless named): bare uvicorn, and a2wsgi in ONE uvicorn process (the brief's peer figures).
REFERENCES = ["uvicorn-raw", "a2wsgi-1p"]
ALL_SERVERS = MP_NAMES + PEERS + REFERENCES

SCENARIOS = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"]
#: Order of scenarios sharing one server instance; P4 (slow clients) last, so
#: whatever it leaves behind cannot spoil the others.
SESSION_ORDER = ["P1", "P2", "P7", "P8", "P5", "P6", "P4", "P3"]

MODES = {
    "quick": dict(duration=3.0, short=2.0, idle=1.0, settle=0.0, body=256 * MiB, slow_clients=100, drain=1.0, conns=32, repeat=1, ramp=0.5),
    "full": dict(duration=6.0, short=5.0, idle=3.0, settle=15.0, body=1024 * MiB, slow_clients=200, drain=3.0, conns=32, repeat=2, ramp=1.0),
}


@dataclass(frozen=True)
class Config:
    server: str
    workers: int
    threads: int
    app: str = "wsgi"  # "wsgi" (benchmarks.apps:app) or "router" (P3) or "raw"

    @property
    def key(self) -> str:
        return f"{self.server} w={self.workers} t={self.threads} {self.app}"


def granian_available() -> bool:
    return importlib.util.find_spec("granian") is not None


def mp_command() -> list[str]:
    exe = shutil.which("a2wsgi-mp")
    return [exe] if exe else [PY, "-m", "a2wsgi_mp"]


def server_command(cfg: Config, port: int) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for one configuration."""
    host, p = "127.0.0.1", str(port)
    env: dict[str, str] = {}
    uvicorn_fast = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
    if cfg.app == "router":
        backend = "a2wsgi" if cfg.server == "a2wsgi" else "a2wsgi_mp"
        env.update(BENCH_BACKEND=backend, BENCH_WORKERS=str(cfg.workers), BENCH_THREADS=str(cfg.threads))
        for name, _, kwargs in MP_VARIANTS:
            if name == cfg.server:
                env["BENCH_MP_OPTIONS"] = json.dumps(kwargs)
        # One event-loop process in front: the point is what the WSGI work does to its loop.
        return ([PY, "-m", "uvicorn", "--factory", "benchmarks.apps:make_router", "--host", host,
                 "--port", p, "--workers", "1", *uvicorn_fast], env)
    for name, extra, _ in MP_VARIANTS:
        if cfg.server == name:
            return ([*mp_command(), "benchmarks.apps:app", "--host", host, "--port", p,
                     "--workers", str(cfg.workers), "--threads", str(cfg.threads),
                     "--log-level", "warning", "--no-access-log", *extra], env)
    if cfg.server in ("a2wsgi", "a2wsgi-1p"):
        env["BENCH_THREADS"] = str(cfg.threads)
        return ([PY, "-m", "uvicorn", "--factory", "benchmarks.apps:make_a2wsgi", "--host", host,
                 "--port", p, "--workers", str(cfg.workers), *uvicorn_fast], env)
    if cfg.server == "gunicorn-sync":
        return ([PY, "-m", "gunicorn", "-k", "sync", "-w", str(cfg.workers), "-b", f"{host}:{p}",
                 "--log-level", "warning", "benchmarks.apps:app"], env)
    if cfg.server == "gunicorn-gthread":
        return ([PY, "-m", "gunicorn", "-k", "gthread", "-w", str(cfg.workers), "--threads",
                 str(cfg.threads), "-b", f"{host}:{p}", "--log-level", "warning", "benchmarks.apps:app"], env)
    if cfg.server == "granian":
        return ([PY, "-m", "granian", "--interface", "wsgi", "--host", host, "--port", p,
                 "--workers", str(cfg.workers), "--blocking-threads", str(cfg.threads),
                 "--log-level", "warning", "--no-access-log", "benchmarks.apps:app"], env)
    if cfg.server == "uvicorn-raw":
        return ([PY, "-m", "uvicorn", "benchmarks.apps:raw_hello", "--host", host, "--port", p,
                 "--workers", str(cfg.workers), *uvicorn_fast], env)
    raise ValueError(cfg.server)


def base_config(server: str, workers: int, threads: int) -> Config:
    """The configuration a server runs P1/P2/P4/P5/P6 in."""
    if server in MP_NAMES or server == "gunicorn-sync":
        return Config(server, workers, 1)  # one thread per process, like gunicorn sync
    if server == "uvicorn-raw":
        return Config(server, 1, 1, "raw")  # the brief's reference: one uvicorn process
    if server == "a2wsgi-1p":
        return Config(server, 1, threads)
    return Config(server, workers, threads)


def plan(scenarios: list[str], servers: list[str], workers: int, threads: int,
         quick: bool = False) -> dict[Config, list[str]]:
    """Which scenarios run on which server configuration."""
    jobs: dict[Config, list[str]] = {}
    first_mp = next((s for s in servers if s in MP_NAMES), None)

    def add(cfg: Config, scenario: str) -> None:
        if quick and cfg.server in MP_NAMES and cfg.server != first_mp and scenario in ("P3", "P7", "P8"):
            return
        if cfg.server in servers and scenario in scenarios:
            jobs.setdefault(cfg, []).append(scenario)

    for s in servers:
        base = base_config(s, workers, threads)
        if s in REFERENCES:
            add(base, "P1")
            if s == "a2wsgi-1p":
                add(base, "P2")
            continue
        for sc in ("P1", "P2", "P4", "P5", "P6"):
            add(base, sc)
        if s in MP_NAMES:
            add(Config(s, workers, threads), "P7")
            add(Config(s, workers, 1, "router"), "P3")
        else:
            add(base, "P7")
        if s == "a2wsgi":
            add(Config(s, 1, threads, "router"), "P3")
        if s in MP_NAMES or s == "gunicorn-sync":
            for w in (1, 2, 4):
                add(Config(s, w, 1), "P8")
    for cfg in jobs:
        jobs[cfg].sort(key=SESSION_ORDER.index)
    return jobs


# --- processes ----------------------------------------------------------------

_LIVE: dict[int, "Server"] = {}


class ServerError(RuntimeError):
    pass


class Server:
    def __init__(self, cfg: Config, logdir: str) -> None:
        self.cfg = cfg
        self.port = free_port()
        self.argv, extra_env = server_command(cfg, self.port)
        self.env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra_env)
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
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
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


# --- load generators ----------------------------------------------------------

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


def wrk_args(url: str, conns: int, duration: float) -> list[str]:
    seconds = max(1, math.ceil(duration))  # wrk takes whole seconds only
    return [ensure_wrk(), "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "2s", url]


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
    r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    r["good_rps"] = max(r["requests"] - r["non2xx"], 0) / elapsed if elapsed > 0 else 0.0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    return r


def run_wrk_best(url: str, conns: int, duration: float, repeat: int) -> dict[str, Any]:
    """Best of ``repeat`` runs (by good rps): the machine is shared, noise only ever slows a run."""
    runs = [run_wrk(url, conns, duration) for _ in range(max(1, repeat))]
    best = max(runs, key=lambda r: r["good_rps"])
    if len(runs) > 1:
        best = dict(best, all_good_rps=[round(r["good_rps"], 1) for r in runs])
    return best


def run_wrk(url: str, conns: int, duration: float) -> dict[str, Any]:
    proc = subprocess.run(wrk_args(url, conns, duration), capture_output=True, text=True,
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


# --- scenarios ----------------------------------------------------------------

@dataclass
class Context:
    mode: dict[str, Any]
    tmpdir: str
    bodyfile: str | None = None
    session: dict[str, Any] = field(default_factory=dict)  # results from the same server instance


def sc_p1(server: Server, ctx: Context) -> dict[str, Any]:
    r = run_wrk_best(server.url + "/hello", ctx.mode["conns"], ctx.mode["duration"], ctx.mode["repeat"])
    ctx.session["P1"] = r
    return r


def sc_p2(server: Server, ctx: Context) -> dict[str, Any]:
    r = run_wrk_best(server.url + "/cpu", ctx.mode["conns"], ctx.mode["duration"], ctx.mode["repeat"])
    ctx.session["P2"] = r
    return r


def run_probe(port: int, path: str, duration: float, rate: float = 200.0) -> dict[str, Any]:
    proc = subprocess.run([PY, "-m", "benchmarks.probe", "--port", str(port), "--path", path,
                           "--rate", f"{rate:g}", "--duration", f"{duration:g}"], cwd=REPO,
                          capture_output=True, text=True, timeout=duration + 15)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"failed": True, "error": (proc.stderr or proc.stdout)[-300:]}


def sc_p3(server: Server, ctx: Context) -> dict[str, Any]:
    """Latency of the async /ping, probed at a steady 200 req/s (not a saturating wrk)."""
    d = ctx.mode["duration"]
    idle = run_probe(server.port, "/ping", ctx.mode["idle"])
    # Saturate the CPU route (more connections than workers), then probe /ping beside it.
    load = subprocess.Popen(wrk_args(server.url + "/cpu", 8, d + 1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        loaded = run_probe(server.port, "/ping", d)
        out, _ = load.communicate(timeout=d + 15)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    cpu = parse_wrk(out, d + 1)
    return {"idle_p99_ms": idle.get("p99_ms"), "loaded_p99_ms": loaded.get("p99_ms"),
            "loaded_p50_ms": loaded.get("p50_ms"), "loaded_max_ms": loaded.get("max_ms"),
            "cpu_rps": cpu["good_rps"], "idle": idle, "loaded": loaded, "cpu": cpu}


def sc_p4(server: Server, ctx: Context) -> dict[str, Any]:
    d, n = ctx.mode["duration"], ctx.mode["slow_clients"]
    idle = ctx.session.get("P1") or run_wrk(server.url + "/hello", ctx.mode["conns"], d)
    ramp = ctx.mode["ramp"]
    slow = subprocess.Popen([PY, "-m", "benchmarks.slowclients", "--port", str(server.port), "--clients", str(n),
                             "--duration", f"{ramp + d + 0.2:g}", "--drain", f"{ctx.mode['drain']:g}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        time.sleep(ramp)
        loaded = run_wrk(server.url + "/hello", ctx.mode["conns"], d)
        out, err = slow.communicate(timeout=ramp + d + ctx.mode["drain"] + 15)
    finally:
        if slow.poll() is None:
            os.killpg(slow.pid, signal.SIGKILL)
            slow.wait()
    try:
        slow_stats = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        slow_stats = {"error": (err or out)[-300:]}
    idle_rps = idle["good_rps"]
    return {"idle_rps": idle_rps, "loaded_rps": loaded["good_rps"],
            "ratio": loaded["good_rps"] / idle_rps if idle_rps else None,
            "slow_clients": n, "idle_from_P1": "P1" in ctx.session, "loaded": loaded, "slow": slow_stats}


def _best_transfer(server: Server, ctx: Context, once: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Best of ``repeat`` transfers (fastest successful one); RSS peaks over all of them."""
    runs = []
    with RssSampler(server) as rss:
        for _ in range(max(1, ctx.mode["repeat"])):
            runs.append(once())
            if not runs[-1]["ok"]:
                break
    good = [r for r in runs if r["ok"]]
    best = min(good, key=lambda r: r["seconds"]) if good else runs[-1]
    size = ctx.mode["body"]
    return dict(best, all_seconds=[r["seconds"] for r in runs],
                mb_s=size / MiB / best["seconds"] if best["ok"] and best["seconds"] else None, **rss.summary())


def sc_p5(server: Server, ctx: Context) -> dict[str, Any]:
    size = ctx.mode["body"]

    def once() -> dict[str, Any]:
        code, secs, body = curl(["-T", ctx.bodyfile, "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
                                 server.url + "/upload"], timeout=120)
        return {"seconds": secs, "status": code, "ok": code == 200 and body.strip() == str(size),
                "answer": body[:80], "bytes": size}

    return _best_transfer(server, ctx, once)


def sc_p6(server: Server, ctx: Context) -> dict[str, Any]:
    size = ctx.mode["body"]

    def once() -> dict[str, Any]:
        proc = subprocess.run(["curl", "-sS", "--max-time", "120", "-o", "/dev/null", "-w",
                               "%{http_code} %{time_total} %{size_download}", f"{server.url}/download?n={size}"],
                              capture_output=True, text=True, timeout=130)
        parts = proc.stdout.split()
        code, secs, got = ((int(parts[0]), float(parts[1]), int(float(parts[2]))) if len(parts) == 3
                           else (0, float("nan"), 0))
        return {"seconds": secs, "status": code, "ok": code == 200 and got == size, "bytes": got,
                "error": proc.stderr.strip()[:200]}

    return _best_transfer(server, ctx, once)


def sc_p7(server: Server, ctx: Context) -> dict[str, Any]:
    # Latency-bound (50 ms a request): stable after a couple of seconds, so quick mode uses its short run.
    d = ctx.mode["short"] if ctx.mode["repeat"] == 1 else ctx.mode["duration"]
    return run_wrk_best(server.url + "/sleep", ctx.mode["conns"], d, ctx.mode["repeat"])


def sc_p8(server: Server, ctx: Context) -> dict[str, Any]:
    if server.cfg.workers == 2 and "P2" in ctx.session:
        r = dict(ctx.session["P2"], from_P2=True)
    else:
        r = run_wrk(server.url + "/cpu", ctx.mode["conns"], ctx.mode["short"])
    return dict(r, workers=server.cfg.workers)


RUNNERS: dict[str, Callable[[Server, Context], dict[str, Any]]] = {
    "P1": sc_p1, "P2": sc_p2, "P3": sc_p3, "P4": sc_p4, "P5": sc_p5, "P6": sc_p6, "P7": sc_p7, "P8": sc_p8,
}

TITLES = {
    "P1": "hello rps, c=32",
    "P2": "CPU-bound (10 ms) rps, c=32",
    "P3": "async /ping p99 ms (probed at 200/s) beside a CPU-saturated WSGI app",
    "P4": "hello rps with slow uploaders / idle",
    "P5": "big upload: seconds, max RSS of any process",
    "P6": "big streamed download: seconds, max RSS",
    "P7": "sleep(50 ms) rps, c=32, equal processes x threads",
    "P8": "CPU-bound rps by worker count",
}


# --- reporting ----------------------------------------------------------------

def headline(scenario: str, r: dict[str, Any]) -> float | None:
    """The one number per (scenario, server) the ratios are made of."""
    if failed(r):
        return None
    return {
        "P1": lambda: r["good_rps"], "P2": lambda: r["good_rps"], "P3": lambda: r["loaded_p99_ms"],
        "P4": lambda: r["loaded_rps"], "P5": lambda: r["seconds"] if r["ok"] else None,
        "P6": lambda: r["seconds"] if r["ok"] else None, "P7": lambda: r["good_rps"],
        "P8": lambda: r["good_rps"],
    }[scenario]()


LOWER_IS_BETTER = {"P3", "P5", "P6"}


def failed(r: dict[str, Any] | None) -> bool:
    return not r or bool(r.get("failed"))


def fmt(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, float):
        if digits == 0 and abs(x) < 10:
            return f"{x:.2f}"
        return f"{x:,.{digits}f}"
    return str(x)


def cell(scenario: str, r: dict[str, Any] | None) -> str:
    if not r:
        return ""
    if failed(r):
        return "ERROR"
    errs = sum((r.get("socket_errors") or {}).values()) if isinstance(r.get("socket_errors"), dict) else 0
    flag = ""
    if r.get("non2xx"):
        flag += f" [{r['non2xx']} non-2xx]"
    if errs:
        flag += f" [{errs} sock err]"
    if scenario in ("P1", "P2", "P7"):
        return f"{fmt(r['good_rps'])}{flag}"
    if scenario == "P3":
        return f"{fmt(r['loaded_p99_ms'], 2)} (idle {fmt(r['idle_p99_ms'], 2)}; cpu {fmt(r['cpu_rps'])} rps)"
    if scenario == "P4":
        lf = r.get("loaded", {})
        e = sum((lf.get("socket_errors") or {}).values())
        extra = f" [{e} sock err]" if e else ""
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        return f"{fmt(r['loaded_rps'])} / {fmt(r['idle_rps'])} = {ratio}{extra}"
    if scenario in ("P5", "P6"):
        ok = "" if r["ok"] else f" FAILED({r['status']})"
        return f"{fmt(r['seconds'], 2)} s, {fmt(r['max_rss_mib'], 1)} MiB{ok}"
    if scenario == "P8":
        return f"{fmt(r['good_rps'])}{flag}"
    return "?"


def evaluate_goals(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    goals = []

    def get(sc: str, server: str) -> dict[str, Any] | None:
        r = results.get(sc, {}).get(server)
        return None if failed(r) else r

    def goal(mp: str, name: str, ok: bool | None, detail: str) -> None:
        goals.append({"server": mp, "goal": name, "met": ok, "detail": detail})

    for mp in MP_NAMES:
        try:
            _goals_for(mp, get, goal)
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            goal(mp, "evaluation", None, f"could not evaluate: {type(exc).__name__}: {exc}")
    return goals


def _goals_for(mp: str, get: Callable[[str, str], Any], goal: Callable[..., None]) -> None:
    if True:
        r1, a1, g1 = get("P1", mp), get("P1", "a2wsgi"), get("P1", "gunicorn-sync")
        if r1:
            parts, checks = [], []
            for peer, peer_name, need in ((a1, "a2wsgi", 2.0), (g1, "gunicorn-sync", 1.2)):
                if peer and peer.get("good_rps"):
                    ratio = r1["good_rps"] / peer["good_rps"]
                    checks.append(ratio >= need)
                    parts.append(f"{ratio:.2f}x {peer_name} (need {need}x)")
                else:
                    parts.append(f"{peer_name} not measured")
            ok = (False if False in checks else None if len(checks) < 2 else True)
            one = get("P1", "a2wsgi-1p")
            if one and one.get("good_rps"):
                parts.append(f"(info: {r1['good_rps'] / one['good_rps']:.2f}x a2wsgi in one process)")
            goal(mp, "P1 hello >= 2x a2wsgi and >= 1.2x gunicorn sync", ok if parts else None,
                 "; ".join(parts) or "no peer measured in this run")
        r2, g2 = get("P2", mp), get("P2", "gunicorn-sync")
        if r2 and g2 and g2.get("good_rps"):
            ratio = r2["good_rps"] / g2["good_rps"]
            goal(mp, "P2 CPU-bound >= 0.95x gunicorn sync", ratio >= 0.95, f"{ratio:.2f}x")
        r3 = get("P3", mp)
        if r3 and r3.get("loaded_p99_ms") is not None:
            a3 = get("P3", "a2wsgi")
            vs = f"; a2wsgi {a3['loaded_p99_ms']:.2f} ms" if a3 and a3.get("loaded_p99_ms") else ""
            goal(mp, "P3 /ping p99 <= 2 ms under CPU saturation", r3["loaded_p99_ms"] <= 2.0,
                 f"{r3['loaded_p99_ms']:.2f} ms (idle {r3['idle_p99_ms']:.2f} ms){vs}")
        r4 = get("P4", mp)
        if r4 and r4.get("ratio") is not None:
            goal(mp, f"P4 rps with {r4['slow_clients']} slow uploaders >= 0.8x idle", r4["ratio"] >= 0.8,
                 f"{r4['ratio']:.2f}x idle")
        r5, a5 = get("P5", mp), get("P5", "a2wsgi")
        if r5:
            ok = bool(r5["ok"]) and (r5["max_rss_mib"] or 1e9) <= 64
            detail = f"{fmt(r5['seconds'], 2)} s, max RSS {fmt(r5['max_rss_mib'], 1)} MiB"
            if a5 and a5.get("ok"):
                ok = ok and r5["seconds"] <= a5["seconds"]
                detail += f"; a2wsgi {a5['seconds']:.2f} s ({r5['seconds'] / a5['seconds']:.2f}x)"
            elif ok:
                ok, detail = None, detail + "; a2wsgi not measured"
            goal(mp, "P5 upload no slower than a2wsgi, every process <= 64 MiB RSS", ok, detail)
        r6, a6 = get("P6", mp), get("P6", "a2wsgi")
        if r6 and a6 and a6.get("ok"):
            ratio = r6["seconds"] / a6["seconds"] if r6["ok"] else float("inf")
            goal(mp, "P6 download time <= 1.1x a2wsgi", bool(r6["ok"]) and ratio <= 1.1,
                 f"{fmt(r6['seconds'], 2)} s vs {a6['seconds']:.2f} s ({ratio:.2f}x)")
        r7, g7 = get("P7", mp), get("P7", "gunicorn-gthread")
        if r7 and g7 and g7.get("good_rps"):
            ratio = r7["good_rps"] / g7["good_rps"]
            goal(mp, "P7 sleep-bound >= 0.9x gunicorn gthread", ratio >= 0.9, f"{ratio:.2f}x")


def ratio_rows(results: dict[str, dict[str, Any]], servers: list[str]) -> list[tuple[str, str, str]]:
    rows = []
    for mp in MP_NAMES:
        for sc in SCENARIOS:
            if sc == "P8":
                continue
            mine = headline(sc, results.get(sc, {}).get(mp) or {})
            if mine is None:
                continue
            parts = []
            for peer in servers:
                if peer == mp:
                    continue
                theirs = headline(sc, results.get(sc, {}).get(peer) or {})
                if theirs:
                    parts.append(f"{peer} {mine / theirs:.2f}x")
            if parts:
                better = "lower" if sc in LOWER_IS_BETTER else "higher"
                rows.append((mp, sc, f"{', '.join(parts)}  ({better} is better for {mp})"))
    return rows


def print_report(results: dict[str, dict[str, Any]], servers: list[str], goals: list[dict[str, Any]],
                 p8: dict[str, dict[int, Any]]) -> str:
    lines = []
    for sc in SCENARIOS:
        if sc not in results or sc == "P8":
            continue
        lines.append(f"\n{sc}  {TITLES[sc]}")
        for s in servers:
            if s in results[sc]:
                lines.append(f"  {s:<18} {cell(sc, results[sc][s])}")
    if p8:
        lines.append(f"\nP8  {TITLES['P8']}")
        for s, by_w in p8.items():
            lines.append(f"  {s:<18} " + "   ".join(f"w={w}: {cell('P8', r)}" for w, r in sorted(by_w.items())))
    rows = ratio_rows(results, servers)
    if rows:
        lines.append("\nRatios (a2wsgi_mp figure / peer figure, same run):")
        for mp, sc, text in rows:
            lines.append(f"  {sc} {mp}: {text}")
    if p8:
        for mp in MP_NAMES:
            if mp in p8 and "gunicorn-sync" in p8:
                parts = [f"w={w}: {p8[mp][w]['good_rps'] / p8['gunicorn-sync'][w]['good_rps']:.2f}x"
                         for w in sorted(p8[mp]) if w in p8["gunicorn-sync"]
                         and p8["gunicorn-sync"][w].get("good_rps") and p8[mp][w].get("good_rps") is not None]
                lines.append(f"  P8 {mp} / gunicorn-sync: {', '.join(parts)}")
    if goals:
        lines.append("\nGoals:")
        for g in goals:
            mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[g["met"]]
            lines.append(f"  [{mark}] {g['server']}: {g['goal']}: {g['detail']}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def chart(results: dict[str, dict[str, Any]], servers: list[str], p8: dict[str, dict[int, Any]], path: str,
          title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("P1", "hello rps (c=32)", lambda r: r["good_rps"], False),
        ("P2", "CPU-bound rps", lambda r: r["good_rps"], False),
        ("P3", "/ping p99 ms under CPU load (log)", lambda r: r["loaded_p99_ms"], True),
        ("P4", "rps with slow uploaders / idle rps", lambda r: r["ratio"], False),
        ("P5", "upload seconds", lambda r: r["seconds"] if r["ok"] else None, False),
        ("P5", "upload: max RSS of any process, MiB", lambda r: r["max_rss_mib"], False),
        ("P6", "download seconds", lambda r: r["seconds"] if r["ok"] else None, False),
        ("P7", "sleep(50 ms) rps", lambda r: r["good_rps"], False),
    ]
    panels = [p for p in panels if p[0] in results]
    n = len(panels) + (1 if p8 else 0)
    if not n:
        return
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(servers)}
    i = -1
    for i, (sc, label, get, log) in enumerate(panels):
        ax = axes[i // cols][i % cols]
        names, values = [], []
        for s in servers:
            r = results[sc].get(s)
            try:
                v = get(r) if r else None
            except (KeyError, TypeError):
                v = None
            if v is not None:
                names.append(s)
                values.append(v)
        bars = ax.bar(range(len(names)), values, color=[colors[s] for s in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{sc}: {label}", fontsize=9)
        if log and values and min(values) > 0:
            ax.set_yscale("log")
        for b, v in zip(bars, values):
            ax.annotate(f"{v:,.2f}" if v < 10 else f"{v:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
        if sc == "P4":
            ax.axhline(0.8, color="grey", ls="--", lw=0.8)
        if sc == "P3":
            ax.axhline(2.0, color="grey", ls="--", lw=0.8)
    if p8:
        i += 1
        ax = axes[i // cols][i % cols]
        for s, by_w in p8.items():
            ws = sorted(by_w)
            ax.plot(ws, [by_w[w]["good_rps"] for w in ws], marker="o", label=s, color=colors.get(s))
        ax.set_title("P8: CPU-bound rps by workers", fontsize=9)
        ax.set_xticks([1, 2, 4])
        ax.legend(fontsize=7)
    for j in range(i + 1, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp"
    fig.savefig(tmp, dpi=90, format="png")
    os.replace(tmp, path)
    plt.close(fig)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("a2wsgi_mp", "a2wsgi", "uvicorn", "uvloop", "httptools", "gunicorn", "granian", "msgpack"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        out["wrk"] = subprocess.run([ensure_wrk(), "--version"], capture_output=True, text=True,
                                    timeout=5).stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "a2wsgi_mp"], cwd=REPO,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        untracked = subprocess.run(["git", "status", "--porcelain", "a2wsgi_mp"], cwd=REPO,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("+dirty" if dirty or untracked else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


# --- main ---------------------------------------------------------------------

def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 s wrk runs, 256 MiB bodies (default; <= 2 min)")
    mode.add_argument("--full", action="store_true", help="6 s wrk runs, 1 GiB bodies, 200 slow clients (<= 10 min)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios ({','.join(SCENARIOS)})")
    parser.add_argument("--servers", default="", help=f"comma-separated servers ({','.join(ALL_SERVERS)})")
    parser.add_argument("--workers", type=int, default=2, help="processes per server (default 2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per process where threaded (default 16)")
    parser.add_argument("--duration", type=float, help="override the wrk duration in seconds")
    default_output = os.path.join(RESULTS, "latest.json")
    parser.add_argument("--output", default=default_output, help="where the JSON goes")
    parser.add_argument("--chart", default=os.path.join(RESULTS, "chart.png"), help="where the PNG goes")
    args = parser.parse_args(argv)

    mode_name = "full" if args.full else "quick"
    m = dict(MODES[mode_name])
    if args.duration:
        m["duration"] = args.duration
        m["short"] = min(m["short"], args.duration)
    scenarios = [s.strip().upper() for s in args.only.split(",") if s.strip()] or SCENARIOS
    # References (raw uvicorn) only in full mode unless asked for by name: quick must stay < 2 min.
    servers = [s.strip() for s in args.servers.split(",") if s.strip()] or (
        list(ALL_SERVERS) if mode_name == "full" else MP_NAMES + PEERS)
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    for s in servers:
        if s not in ALL_SERVERS:
            parser.error(f"unknown server {s!r}; known: {', '.join(ALL_SERVERS)}")
    if "granian" in servers and not granian_available():
        print("granian is not installed: skipping it", flush=True)
        servers.remove("granian")
    ensure_wrk()
    signal.signal(signal.SIGTERM, _sigterm)

    jobs = plan(scenarios, servers, args.workers, args.threads, quick=mode_name == "quick")
    t_start = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    p8: dict[str, dict[int, Any]] = {}
    notes: list[str] = []
    starts: dict[str, float] = {}
    background: dict[str, float] = {}
    stops: dict[str, float] = {}
    settle_budget = [m["settle"] * 4]  # never wait for a quiet machine longer than this in all
    print(f"a2wsgi_mp benchmarks, {mode_name} mode: {len(jobs)} server configuration(s), "
          f"scenarios {','.join(scenarios)}; {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="a2wsgi_mp-bench-") as tmpdir:
        ctx_base = dict(mode=m, tmpdir=tmpdir)
        bodyfile = None
        if {"P5"} & set(scenarios):
            bodyfile = os.path.join(tmpdir, "body.bin")
            with open(bodyfile, "wb") as f:  # sparse: no disk traffic, the same bytes for everyone
                f.truncate(m["body"])
            # Warm-up: in this VM the first time a GiB of fresh memory is touched (page cache of a
            # spooled body, say) costs ~2 s more than later ones; let no server pay it by going first.
            t_warm = time.monotonic()
            with tempfile.TemporaryFile() as warm:
                chunk = bytes(MiB)
                for _ in range(m["body"] // MiB):
                    os.write(warm.fileno(), chunk)
            print(f"(warm-up: wrote and dropped {m['body'] // MiB} MiB in {time.monotonic() - t_warm:.1f} s)",
                  flush=True)
        try:
            for cfg, todo in jobs.items():
                ctx = Context(bodyfile=bodyfile, **ctx_base)
                server = Server(cfg, tmpdir)
                label = cfg.server
                bg = psutil.cpu_percent(interval=0.15)
                settle_until = time.monotonic() + min(m["settle"], settle_budget[0])
                while bg > 25 and time.monotonic() < settle_until:  # others are using the CPUs: wait a bit
                    bg = psutil.cpu_percent(interval=0.5)
                    settle_budget[0] -= 0.5
                background[cfg.key] = bg
                if bg > 25:
                    notes.append(f"{cfg.key}: the machine was {bg:.0f} % busy before it started (other processes);"
                                 " its figures are noisy")
                print(f"- {cfg.key}: ", end="", flush=True)
                try:
                    starts[cfg.key] = server.start()
                    for sc in todo:
                        t0 = time.monotonic()
                        try:
                            r = RUNNERS[sc](server, ctx)
                        except Exception as exc:  # noqa: BLE001 - record it, go on with the rest
                            r = {"failed": True, "error": f"{type(exc).__name__}: {exc}"}
                        r["elapsed_s"] = round(time.monotonic() - t0, 2)
                        if server.proc is not None and server.proc.poll() is not None:
                            r["server_died"] = server.proc.returncode
                            notes.append(f"{cfg.key}: server exited ({server.proc.returncode}) during {sc}")
                        if sc == "P8":
                            p8.setdefault(label, {})[cfg.workers] = r
                        else:
                            results.setdefault(sc, {})[label] = r
                        print(f"{sc} {cell(sc, r)}; ", end="", flush=True)
                except ServerError as exc:
                    print("FAILED", flush=True)
                    notes.append(str(exc))
                    print(str(exc), flush=True)
                    for sc in todo:
                        err = {"failed": True, "error": "server did not start"}
                        if sc == "P8":
                            p8.setdefault(label, {})[cfg.workers] = err
                        else:
                            results.setdefault(sc, {}).setdefault(label, err)
                    continue
                finally:
                    t_stop = time.monotonic()
                    before_stop = server.log_text()
                    server.stop()
                    stops[cfg.key] = round(time.monotonic() - t_stop, 2)
                    for note in server.notes:
                        notes.append(f"{cfg.key}: {note}")
                    during_stop = server.log_text()[len(before_stop):]
                    bad = re.compile(r"Traceback|ERROR|Error|CRITICAL")
                    if bad.search(before_stop) and server.started:
                        lines = before_stop.splitlines()
                        notes.append(f"{cfg.key}: errors in the server log during the run ({len(lines)} lines), "
                                     "last ones:\n" + "\n".join("    | " + x for x in lines[-12:]))
                    if bad.search(during_stop):
                        lines = [x for x in during_stop.splitlines() if bad.search(x)]
                        notes.append(f"{cfg.key}: {len(lines)} error line(s) logged while stopping on SIGTERM to "
                                     f"its process group, e.g. {lines[0].strip()[:150]!r}")
                print(f"({time.monotonic() - t_start:.0f} s)", flush=True)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping servers", flush=True)
            _stop_all()
            return 130
        finally:
            _stop_all()

    elapsed = time.monotonic() - t_start
    shown = [s for s in servers if any(s in results.get(sc, {}) for sc in results) or s in p8]
    goals = evaluate_goals(results)
    report = print_report(results, shown, goals, {s: p8[s] for s in shown if s in p8})
    if notes:
        print("\nNotes:")
        for note in notes:
            print("  " + note)
    print(f"\ntotal {elapsed:.0f} s", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    doc = {
        "meta": {"mode": mode_name, "parameters": m, "workers": args.workers, "threads": args.threads,
                 "cpus": os.cpu_count(), "platform": platform.platform(), "versions": versions(),
                 "git": git_head(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "elapsed_s": round(elapsed, 1),
                 "argv": sys.argv[1:] if argv is None else argv, "server_start_s": starts, "server_stop_s": stops,
                 "background_cpu_pct_before": background,
                 "commands": {cfg.key: server_command(cfg, 0)[0] for cfg in jobs}},
        "results": results, "p8": {s: {str(w): r for w, r in by_w.items()} for s, by_w in p8.items()},
        "goals": goals, "notes": notes, "report": report,
    }
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, args.output)
    try:
        chart(results, shown, p8, args.chart,
              f"a2wsgi_mp benchmarks ({mode_name}, {args.workers} workers, {os.cpu_count()} CPUs, {doc['meta']['date']})")
    except Exception as exc:  # noqa: BLE001 - the figures matter more than the picture
        print(f"chart failed: {exc}", flush=True)
    print(f"wrote {os.path.relpath(args.output, REPO)} and {os.path.relpath(args.chart, REPO)}", flush=True)
    if not args.only and not args.servers and args.output == default_output:
        # A complete run is also kept under its mode's name, so a later partial run
        # (a CI smoke test, say) cannot overwrite the last complete figures.
        for src, ext in ((args.output, "json"), (args.chart, "png")):
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(RESULTS, f"{mode_name}.{ext}"))
        print(f"and benchmarks/results/{mode_name}.json, {mode_name}.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
