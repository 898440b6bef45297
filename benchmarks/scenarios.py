"""The scenarios P1-P8: each drives one running server and returns its figures."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from .configs import PY, REPO, MiB
from .loadgen import RssSampler, curl, parse_wrk, run_wrk, run_wrk_best, wrk_args
from .servers import Server
from .slowclients import Uploaders


@dataclass
class Context:
    mode: dict[str, Any]
    tmpdir: str
    bodyfile: str | None = None
    session: dict[str, Any] = field(default_factory=dict)  # results from the same server instance


def sc_p1(server: Server, ctx: Context) -> dict[str, Any]:
    r = run_wrk_best(server.url + "/hello", ctx.mode["conns"], ctx.mode["duration"], ctx.mode["repeat"],
                     server=server)
    ctx.session["P1"] = r
    return r


def sc_p2(server: Server, ctx: Context) -> dict[str, Any]:
    r = run_wrk_best(server.url + "/cpu", ctx.mode["conns"], ctx.mode["duration"], ctx.mode["repeat"])
    ctx.session["P2"] = r
    return r


def run_probe(port: int, path: str, duration: float, rate: float = 200.0, prefix: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    proc = subprocess.run([*prefix, PY, "-m", "benchmarks.probe", "--port", str(port), "--path", path,
                           "--rate", f"{rate:g}", "--duration", f"{duration:g}"], cwd=REPO,
                          capture_output=True, text=True, timeout=duration + 15)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"failed": True, "error": (proc.stderr or proc.stdout)[-300:]}


def pin(server: Server) -> list[str]:
    """The server's first process (the event loop) alone on the first CPU, the rest of its tree on
    the others; the ``taskset`` prefix that puts a load generator there too ([] on one CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return []
    for i, p in enumerate(server.processes()):
        try:
            p.cpu_affinity(cpus[:1] if i == 0 else cpus[1:])
        except psutil.Error:
            pass
    return ["taskset", "-c", ",".join(map(str, cpus[1:]))]


def unpin(server: Server) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    for p in server.processes():
        try:
            p.cpu_affinity(cpus)
        except psutil.Error:
            pass


def sc_p3(server: Server, ctx: Context) -> dict[str, Any]:
    """Latency of the async /ping, probed at a steady 200 req/s (not a saturating wrk).

    With ``--pin`` the event loop's process has a CPU of its own and everything else (the
    server's other processes, wrk, the probe) shares the rest: the latency the server adds,
    apart from the machine's. (A single-process server keeps its CPU-bound work on the loop's CPU.)
    """
    d = ctx.mode["duration"]
    prefix = pin(server) if ctx.mode.get("pin") else []
    try:
        idle = run_probe(server.port, "/ping", ctx.mode["idle"], prefix=prefix)
        # Saturate the CPU route (more connections than workers), then probe /ping beside it.
        load = subprocess.Popen([*prefix, *wrk_args(server.url + "/cpu", 8, d + 1)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            loaded = run_probe(server.port, "/ping", d, prefix=prefix)
            out, _ = load.communicate(timeout=d + 15)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
    finally:
        if prefix:
            unpin(server)
    cpu = parse_wrk(out, d + 1)
    return {"idle_p99_ms": idle.get("p99_ms"), "loaded_p99_ms": loaded.get("p99_ms"),
            "loaded_p50_ms": loaded.get("p50_ms"), "loaded_max_ms": loaded.get("max_ms"),
            "cpu_rps": cpu["good_rps"], "pinned": bool(prefix), "idle": idle, "loaded": loaded, "cpu": cpu}


def sc_p4(server: Server, ctx: Context) -> dict[str, Any]:
    """Hello rps beside ``slow_clients`` uploaders over hello rps without them, the idle figure
    measured right before and right after the loaded run (their mean): the machine as the loaded
    run finds it.  (P1's best of two runs, minutes earlier, made the ratio read low on a machine
    whose other load changes from minute to minute; it is kept beside, as ``idle_P1``.)"""
    d, n = ctx.mode["duration"], ctx.mode["slow_clients"]
    url = server.url + "/hello"
    before = run_wrk(url, ctx.mode["conns"], d)
    ramp = ctx.mode["ramp"]
    with Uploaders(server.port, n, ramp + d + 0.2, ctx.mode["drain"]) as slow:
        time.sleep(ramp)
        loaded = run_wrk(url, ctx.mode["conns"], d)
        slow_stats = slow.result(timeout=ramp + d + ctx.mode["drain"] + 15)
    after = run_wrk(url, ctx.mode["conns"], d)
    idle_rps = (before["good_rps"] + after["good_rps"]) / 2
    p1 = ctx.session.get("P1")
    return {"idle_rps": idle_rps, "loaded_rps": loaded["good_rps"],
            "ratio": loaded["good_rps"] / idle_rps if idle_rps else None,
            "idle_before_rps": before["good_rps"], "idle_after_rps": after["good_rps"],
            "idle_P1": p1["good_rps"] if p1 else None,
            "slow_clients": n, "loaded": loaded, "slow": slow_stats}


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
    "R1": "Django /admin/login/ rps, c=32 (stock site: templates, CSRF, session)",
    "R2": "Django JSON view rps, c=32 (one ORM query on sqlite)",
    "R3": "Flask page rps, c=32 (Jinja templates)",
}
