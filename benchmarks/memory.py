"""Memory and elasticity: what preloading saves, what survives load, how fast the pool adapts.

    python -m benchmarks.memory                 # ~3 minutes on 2 cores
    python -m benchmarks.memory --requests 2000 # quicker, less telling

On the large-app fixture (benchmarks/large_app.py: a Django site plus ~300k
import-time objects), in one run:

1. **Tree PSS** (``psutil memory_full_info().pss`` summed over the server and
   every descendant: front, zygote, workers; arbiter and workers for gunicorn)
   and **per-worker USS**, with 4 workers, for a2wsgi_mp with and without
   ``--preload`` and gunicorn ``-w 4`` with and without ``--preload``: after a
   warm-up of 160 requests; after ``--requests`` (10,000) more to one URL
   (the same 20 records each time: what the cyclic GC un-shares, which
   ``gc.freeze()`` prevents); and after as many again to URLs that each touch
   20 other records (reference counting un-shares every page it touches, in
   any server: CPython writes the count into the object).
2. **Burst**: an elastic pool (``--workers-min 1 --workers-max 4``) gets 16
   concurrent slow requests; the time from the burst's start until 4 workers
   are ready, and from its end until the pool is back at 1 worker.
3. **HUP with preload under load**: new code shipped, SIGHUP; the time until
   the first and until every response comes from the new code, and failed
   requests (goal: 0).

Writes ``benchmarks/results/memory.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable

if __package__ in (None, ""):  # ``python benchmarks/memory.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402

from benchmarks.servers import stop_tree  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
PY = sys.executable
APP = "benchmarks.large_app:application"
MiB = 1024 * 1024
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """One server subprocess in its own session; stopped by pid (TERM, then KILL of the tree)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = env
        self.log = tempfile.NamedTemporaryFile(prefix=f"mem-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._known: dict[int, psutil.Process] = {}

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            if get(self.port, "/?n=1", 2.0)[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.tail()}")

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for p in procs:
            self._known.setdefault(p.pid, p)
        return procs

    def workers(self) -> list[psutil.Process]:
        """The processes that run requests: a2wsgi_mp's zygote's children, gunicorn's arbiter's."""
        procs = self.tree()
        if self.name.startswith("gunicorn"):
            return [p for p in procs if _ppid(p) == self.proc.pid]
        return [p for p in procs if _ppid(p) not in (self.proc.pid, None) and p.pid != self.proc.pid]

    def tail(self, n: int = 40) -> str:
        with open(self.log.name, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def log_text(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.tree()
        stop_tree(self.proc, list(self._known.values()), 20)
        self.log.close()
        os.unlink(self.log.name)


def _ppid(p: psutil.Process) -> int | None:
    try:
        return p.ppid()
    except psutil.Error:
        return None


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


class Load:
    """``clients`` threads, each with a keep-alive connection, GETting until
    ``total`` requests are done (or until stopped); outcomes recorded."""

    def __init__(self, port: int, clients: int = 8, total: int | None = None, path: Callable[[int], str] | None = None):
        self.port, self.total = port, total
        self.path = path or (lambda i: f"/?n={i}")
        self.done = 0
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}
        self.last_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or (self.total is not None and self.done >= self.total):
                return None
            self.done += 1
            return self.done

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while (i := self._take()) is not None:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                conn.request("GET", self.path(i))
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    self.failures.append(f"{r.status} {body[:120]!r}")
                else:
                    version = json.loads(body)["version"]
                    now = time.monotonic()
                    with self._lock:
                        self.versions[version] += 1
                        self.first_seen.setdefault(version, now)
                        self.last_seen[version] = now
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def join(self) -> "Load":
        for t in self._threads:
            t.join()
        return self

    def stop(self) -> "Load":
        self._stop.set()
        return self.join()


def memory(server: Server) -> dict[str, Any]:
    """Tree PSS and per-worker USS, in MiB."""
    pss = 0
    for p in server.tree():
        try:
            pss += p.memory_full_info().pss
        except psutil.Error:
            pass
    uss = []
    for p in server.workers():
        try:
            uss.append(p.memory_full_info().uss)
        except psutil.Error:
            pass
    return {"tree_pss": round(pss / MiB, 1), "worker_uss": [round(u / MiB, 1) for u in sorted(uss)],
            "processes": len(server.tree())}


def env_for(version_file: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    if version_file:
        env["BENCH_APP_VERSION"] = version_file
    return env


def mp_argv(*options: str) -> list[str]:
    return [PY, "-m", "a2wsgi_mp", APP, "--host", HOST, "--port", "{port}", "--no-access-log",
            "--log-level", "warning", *options]


def gunicorn_argv(*options: str) -> list[str]:
    return [PY, "-m", "gunicorn", "-k", "sync", "-b", f"{HOST}:{{port}}", "--log-level", "warning", *options, APP]


MEMORY_SERVERS: list[tuple[str, list[str]]] = [
    ("a2wsgi_mp", mp_argv("--workers", "4")),
    ("a2wsgi_mp --preload", mp_argv("--workers", "4", "--preload")),
    ("gunicorn", gunicorn_argv("-w", "4")),
    ("gunicorn --preload", gunicorn_argv("-w", "4", "--preload")),
]


def measure_memory(requests: int) -> dict[str, Any]:
    """Start all four (they boot in parallel), then measure each in turn."""
    servers = [Server(name, argv, env_for()) for name, argv in MEMORY_SERVERS]
    results: dict[str, Any] = {}
    try:
        for server in servers:
            server.wait_ready()
        for server in servers:
            Load(server.port, clients=4, total=160).start().join()
            time.sleep(0.5)
            after_warmup = memory(server)
            started = time.monotonic()
            same = Load(server.port, clients=8, total=requests, path=lambda i: "/?n=1").start().join()
            elapsed = time.monotonic() - started
            time.sleep(0.5)
            after_same = memory(server)
            spread = Load(server.port, clients=8, total=requests).start().join()
            time.sleep(0.5)
            after_load = memory(server)
            results[server.name] = {"warm": after_warmup, "same": after_same, "loaded": after_load,
                                    "requests": requests, "failures": len(same.failures) + len(spread.failures),
                                    "rps": round(requests / elapsed)}
            print(f"  {server.name}: {after_warmup['tree_pss']} -> {after_same['tree_pss']} -> "
                  f"{after_load['tree_pss']} MiB tree PSS, worker USS {after_load['worker_uss']}", flush=True)
    finally:
        for server in servers:
            server.stop()
    return results


def ready_workers(port: int) -> int:
    status, body = get(port, "/metrics", 5.0)
    for line in body.decode(errors="replace").splitlines():
        if line.startswith('a2wsgi_mp_workers{state="ready"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> float | None:
    """Seconds until ``predicate`` held (None if it did not within ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def measure_burst(preload: bool, idle: float = 2.0) -> dict[str, Any]:
    options = ["--workers-min", "1", "--workers-max", "4", "--worker-idle-timeout", str(idle),
               "--metrics-path", "/metrics"] + (["--preload"] if preload else [])
    server = Server("burst", mp_argv(*options), env_for())
    try:
        server.wait_ready()
        Load(server.port, clients=1, total=20).start().join()
        assert ready_workers(server.port) == 1
        started = time.monotonic()
        load = Load(server.port, clients=16, total=160, path=lambda i: f"/?n={i}&sleep=0.1").start()
        grown = wait_until(lambda: ready_workers(server.port) >= 4, 30)
        load.join()
        ended = time.monotonic()
        shrunk = wait_until(lambda: ready_workers(server.port) <= 1, 60, 0.05)
        return {"preload": preload, "grown_to_4_s": round(grown, 3) if grown is not None else None,
                "burst_s": round(ended - started, 2), "idle_timeout_s": idle,
                "shrunk_to_1_after_s": round(shrunk, 2) if shrunk is not None else None,
                "failures": len(load.failures)}
    finally:
        server.stop()


def measure_hup(preload: bool) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".version", delete=False) as f:
        f.write("v1")
    options = ["--workers", "4"] + (["--preload"] if preload else [])
    server = Server("hup", mp_argv(*options), env_for(f.name))
    try:
        server.wait_ready()
        load = Load(server.port, clients=8).start()
        wait_until(lambda: load.versions["v1"] >= 200, 60)
        with open(f.name, "w") as out:
            out.write("v2")
        hup = time.monotonic()
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(lambda: "v2" in load.first_seen, 120)
        wait_until(lambda: load.versions["v2"] >= 400, 120)
        load.stop()
        first = load.first_seen.get("v2")
        last_old = load.last_seen.get("v1", hup)
        return {"preload": preload, "first_new_s": round(first - hup, 3) if first else None,
                "all_new_s": round(max(0.0, last_old - hup), 3), "requests": sum(load.versions.values()),
                "failures": len(load.failures), "failure_samples": load.failures[:3]}
    finally:
        server.stop()
        os.unlink(f.name)


def report(results: dict[str, Any]) -> str:
    mem = results["memory"]
    n = next(iter(mem.values()))["requests"] if mem else 0
    lines = [f"| server (4 workers) | tree PSS after warm-up | + {n:,} requests, one URL | + {n:,} requests, "
             f"spread | worker USS at the end | failed |", "|---|---|---|---|---|---|"]
    for name, r in mem.items():
        uss = r["loaded"]["worker_uss"]
        lines.append(f"| {name} | {r['warm']['tree_pss']:.0f} MiB | {r['same']['tree_pss']:.0f} MiB | "
                     f"**{r['loaded']['tree_pss']:.0f} MiB** | {', '.join(f'{u:.0f}' for u in uss)} MiB | "
                     f"{r['failures']} |")
    if "a2wsgi_mp --preload" in mem and "gunicorn --preload" in mem:
        ours, theirs = mem["a2wsgi_mp --preload"], mem["gunicorn --preload"]
        lines.append("")
        for phase, label in (("warm", "after warm-up"), ("same", "after the one-URL load"),
                             ("loaded", "after both loads")):
            ratio = ours[phase]["tree_pss"] / theirs[phase]["tree_pss"]
            lines.append(f"- a2wsgi_mp --preload / gunicorn --preload tree PSS {label}: **{ratio:.2f}×**")
        ratio = ours["loaded"]["tree_pss"] / theirs["loaded"]["tree_pss"]
        lines.append(f"- goal ≤ 0.8× after load: {'met' if ratio <= 0.8 else 'NOT met'}")
    lines += ["", "| elastic pool 1→4, burst of 16 clients | grown to 4 ready workers | back to 1 after burst "
              "(idle timeout) | failed |", "|---|---|---|---|"]
    for r in results["burst"]:
        lines.append(f"| {'--preload' if r['preload'] else 'no preload'} | {r['grown_to_4_s']} s | "
                     f"{r['shrunk_to_1_after_s']} s ({r['idle_timeout_s']} s) | {r['failures']} |")
    lines += ["", "| HUP under load (8 clients, 4 workers) | first new-code response | last old-code response "
              "| requests | failed |", "|---|---|---|---|---|"]
    for r in results["hup"]:
        lines.append(f"| {'--preload' if r['preload'] else 'no preload'} | {r['first_new_s']} s | "
                     f"{r['all_new_s']} s | {r['requests']} | {r['failures']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests between the two PSS readings")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: memory,burst,hup")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                               "memory": {}, "burst": [], "hup": []}
    if "memory" not in skip:
        print("memory: 4 servers x 4 workers", flush=True)
        results["memory"] = measure_memory(args.requests)
    if "burst" not in skip:
        for preload in (True, False):
            results["burst"].append(measure_burst(preload))
            print(f"  burst: {results['burst'][-1]}", flush=True)
    if "hup" not in skip:
        for preload in (True, False):
            results["hup"].append(measure_hup(preload))
            print(f"  hup: {results['hup'][-1]}", flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "memory.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
