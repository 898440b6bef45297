"""Where P3's tail waits: ``perf sched record`` of one P3 probe, read back as wake-to-run delays.

Starts the router server (as :mod:`benchmarks.sched_ab` does), applies one of its variants to the
running front/workers (``VARIANT@ag``: on a pool with ``worker_sched="autogroup"``), loads ``/cpu``
with ``wrk -c8`` and probes ``/ping`` at 200/s while ``perf sched record`` runs, then reports, for
the front's event-loop thread and for the probe (the process that wakes the front most):

* the delay from each ``sched_waking`` to the ``sched_switch`` that runs it (p50/p99/max);
* for the delays over 1 ms, who held that CPU meanwhile: this server's workers, anything else, idle.

The probe's figure is the load generator's own share of the tail on a machine it shares with
CPU-bound workers (a remote client would not pay it).  Linux with ``perf`` only; as root.

    flock /tmp/a2wsgi-bench.lock python -m benchmarks.sched_trace --variant fslice
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import sched_ab
from .configs import Config
from .loadgen import wrk_args
from .scenarios import run_probe
from .servers import Server

_EVENT = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")


Event = tuple[float, int, str, str, int]


def events(data: str) -> list[Event]:
    """(time, cpu, event, fields, the thread that emitted it) of a ``perf sched record`` file."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,cpu,time,event,trace"],
                         capture_output=True, text=True).stdout
    return [(float(m[5]), int(m[4]), m[6], m[7], int(m[3])) for m in map(_EVENT.match, out.splitlines()) if m]


def _pid(fields: str, key: str) -> int:
    return int(re.search(rf"\b{key}=(\d+)", fields)[1])  # type: ignore[index]


def delays(evs: list[Event], pid: int) -> list[tuple[float, float, int]]:
    """(delay, woken at, cpu it ran on) for every wake-up of ``pid``."""
    pending: float | None = None
    out = []
    for t, cpu, ev, fields, _ in evs:
        if ev == "sched_waking" and _pid(fields, "pid") == pid and pending is None:
            pending = t
        elif ev == "sched_switch" and _pid(fields, "next_pid") == pid and pending is not None:
            out.append((t - pending, pending, cpu))
            pending = None
        elif ev == "sched_switch" and _pid(fields, "prev_pid") == pid:
            pending = None  # (woken while it still ran: no wait)
    return out


def holders(evs: list[Event], waits: list[tuple[float, float, int]],
            workers: set[int]) -> dict[str, Any]:
    """Who ran on the CPU during each wait over 1 ms: the count of waits each mostly held, and ms."""
    runs: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
    for t, cpu, ev, fields, _ in evs:
        if ev == "sched_switch":
            runs[cpu].append((t, _pid(fields, "next_pid")))
    mostly: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for d, start, cpu in waits:
        if d <= 1e-3:
            continue
        seq = runs[cpu]
        i = max(0, bisect.bisect_right([s for s, _ in seq], start) - 1)
        share: collections.Counter[str] = collections.Counter()
        while i < len(seq) and seq[i][0] < start + d:
            end = min(seq[i + 1][0] if i + 1 < len(seq) else start + d, start + d)
            who = "workers" if seq[i][1] in workers else "idle" if seq[i][1] == 0 else "other"
            share[who] += max(0.0, end - max(start, seq[i][0]))
            i += 1
        if share:
            mostly[max(share, key=lambda k: share[k])] += 1
            total.update(share)
    return {"mostly": dict(mostly), "ms": {k: round(v * 1e3, 1) for k, v in total.items()}}


def summary(waits: list[tuple[float, float, int]]) -> dict[str, Any]:
    ds = sorted(d for d, _, _ in waits)
    if not ds:
        return {"n": 0}
    q = lambda p: round(1e3 * ds[int(p * (len(ds) - 1))], 3)  # noqa: E731
    return {"n": len(ds), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0),
            "over_1ms": sum(d > 1e-3 for d in ds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="normal", help="a benchmarks.sched_ab variant (VARIANT@ag too)")
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        print("sched_trace needs perf", file=sys.stderr)
        return 2
    base, _, where = args.variant.partition("@")
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Config("a2wsgi_mp", 2, 1, "router"), tmp)
        server.env.update(sched_ab.SERVERS[where])
        server.start()
        try:
            front, workers = sched_ab.roles(server)
            sched_ab.VARIANTS[base](front, workers)
            load = subprocess.Popen(wrk_args(server.url + "/cpu", 8, args.duration + 3), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            data = f"{tmp}/perf.data"
            perf = subprocess.Popen(["perf", "sched", "record", "-o", data, "--", "sleep", f"{args.duration:g}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            probe = run_probe(server.port, "/ping", args.duration)
            perf.wait()
            load.communicate()
        finally:
            server.stop()
        evs = events(data)
    wakers = collections.Counter(tid for _, _, ev, fields, tid in evs
                                 if ev == "sched_waking" and _pid(fields, "pid") == front)
    prober = next((p for p, _ in wakers.most_common() if p not in workers and p != front), None)
    report: dict[str, Any] = {"variant": args.variant, "probe_p99_ms": probe.get("p99_ms")}
    for name, pid in (("front", front), ("probe", prober)):
        if pid is not None:
            waits = delays(evs, pid)
            report[name] = summary(waits) | {"over_1ms_cpu_held_by": holders(evs, waits, set(workers))}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
