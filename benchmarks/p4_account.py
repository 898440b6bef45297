"""P4's accounting: who spends the 2 cores while 2,000 slow uploaders trickle, and the ceiling.

Each round starts the CLI server (``benchmarks.apps:app``, 2 workers) from each source tree in turn
(order reversed every other round) and runs, as P4 does (``wrk -c32 /hello`` for ``--duration`` s):

* idle: wrk alone;
* uploaders only (``--window`` s): the front's CPU per trickled byte;
* loaded: wrk beside ``benchmarks.slowclients`` (2,000 clients, a byte each every 0.1 s).

During the middle of each wrk run (its first and last ``--edge`` s left out) every process's CPU
(user + system, psutil) is read twice and given a role: ``generator`` (the uploaders), ``wrk``,
``front``, ``workers`` (the server's other processes), ``others`` (the machine's busy time,
``psutil.cpu_times``, minus the roles': other users of the machine), and ``softirq`` (the machine's
irq + softirq time, loopback TCP's receive mostly: already inside the processes' system time,
which is charged the softirq work done in their context, so not a role of its own; a few
hundredths of a core of it can make ``others`` negative).  Cores = CPU seconds / wall seconds.

The ceiling: if the server's handling of the uploads cost nothing, the hello path (wrk, front,
workers), which has the whole machine when idle, would get what the generator (with the kernel's
loopback receive of its bytes, done in its context) leaves it: ``ceiling_ratio = 1 - generator /
ncpu`` (it leaves the machine's other users out, which the measured ratio does not).
``--sink`` measures it instead: a variant whose uploaders go to a listening socket nobody accepts
(their bytes cost the kernel's TCP receive only).

    flock /tmp/a2wsgi-bench.lock python -m benchmarks.p4_account --tree main=/work/main --tree new=. --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from .loadgen import parse_wrk, wrk_args
from .servers import free_port
from .slow_ab import _start, _stop
from .slowclients import Uploaders

ROLES = ("generator", "wrk", "front", "workers", "softirq", "others", "busy")


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.NoSuchProcess:
        return 0.0


def _busy() -> tuple[float, float]:
    """(the machine's busy CPU seconds, of which irq + softirq): steal and guest are not ours."""
    t = psutil.cpu_times()
    irq = t.irq + t.softirq
    return t.user + t.nice + t.system + irq, irq


def _sample(server: psutil.Process, wrk: psutil.Process | None, gen: psutil.Process | None) -> dict[str, float]:
    """CPU seconds by role so far (the server's descendants read now: none is born mid-window)."""
    out = {"front": _cpu(server), "workers": sum(_cpu(c) for c in server.children(recursive=True)),
           "wrk": _cpu(wrk) if wrk else 0.0, "generator": 0.0}
    out["busy"], out["softirq"] = _busy()
    if gen is not None:
        out["generator"] = _cpu(gen) + sum(_cpu(c) for c in gen.children(recursive=True))
    return out


def _cores(a: dict[str, float], b: dict[str, float], wall: float) -> dict[str, float]:
    c = {k: (b[k] - a[k]) / wall for k in a}
    c["others"] = c["busy"] - sum(c[k] for k in ("generator", "wrk", "front", "workers"))
    return c


def _wrk(url: str, duration: float, edge: float, server: psutil.Process,
         gen: psutil.Process | None) -> tuple[dict[str, Any], dict[str, float]]:
    wrk = subprocess.Popen(wrk_args(url, 32, duration), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w = psutil.Process(wrk.pid)
    time.sleep(edge)
    a, t0 = _sample(server, w, gen), time.monotonic()
    time.sleep(duration - 2 * edge)
    b, t1 = _sample(server, w, gen), time.monotonic()
    out, _ = wrk.communicate(timeout=duration + 15)
    return parse_wrk(out, duration), _cores(a, b, t1 - t0)


def one(tree: str, clients: int, duration: float, window: float, edge: float, extra: list[str],
        sink: bool = False) -> dict[str, Any]:
    """One server's round; with ``sink`` the uploaders go to a listening socket nobody accepts
    (the kernel's TCP receive is all they cost: the server's handling of them is free)."""
    port = free_port()
    proc = _start(tree, port, extra)
    sink_sock = None
    target = port
    if sink:
        sink_sock = socket.socket()
        sink_sock.bind(("127.0.0.1", 0))
        sink_sock.listen(4096)
        target = sink_sock.getsockname()[1]
    server = psutil.Process(proc.pid)
    try:
        url = f"http://127.0.0.1:{port}/hello"
        idle, idle_cores = _wrk(url, duration, edge, server, None)
        ramp = 2.0
        with Uploaders(target, clients, ramp + window + duration + 0.5, 3) as slow:
            gen = psutil.Process(slow.pid)
            time.sleep(ramp)
            a, t0 = _sample(server, None, gen), time.monotonic()
            time.sleep(window)
            b, t1 = _sample(server, None, gen), time.monotonic()
            upload_cores = _cores(a, b, t1 - t0)
            loaded, loaded_cores = _wrk(url, duration, edge, server, gen)
            stats = slow.result(timeout=duration + window + 30)
    finally:
        _stop(proc)
        if sink_sock is not None:
            sink_sock.close()
    ncpu = psutil.cpu_count() or 2
    idle_rps, loaded_rps = idle["good_rps"], loaded["good_rps"]
    upload_cost = loaded_cores["generator"]  # (with loopback TCP's receive of its bytes: unavoidable)
    bytes_per_s = clients * 10
    return {"idle_rps": idle_rps, "loaded_rps": loaded_rps, "ratio": loaded_rps / idle_rps if idle_rps else None,
            "ceiling_ratio": 1 - upload_cost / ncpu,
            "front_us_per_byte": upload_cores["front"] / bytes_per_s * 1e6,
            "idle_cores": idle_cores, "upload_cores": upload_cores, "loaded_cores": loaded_cores,
            "complete_ok": stats.get("complete_ok"), "status": stats.get("status"), "bytes": stats.get("bytes")}


def _fmt(c: dict[str, float]) -> str:
    return " ".join(f"{k[:4]} {c[k]:.2f}" for k in ROLES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH (a source tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--edge", type=float, default=1.0, help="seconds left out at each end of a wrk run")
    parser.add_argument("--server-arg", action="append", default=[], help="extra CLI argument for the server")
    parser.add_argument("--output", help="JSON of every round")
    parser.add_argument("--sink", action="store_true",
                        help="also a variant 'sink': the first tree's server, uploaders into a socket never accepted")
    args = parser.parse_args(argv)
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    if args.sink:
        trees.append(("sink", trees[0][1]))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, path in (trees if r % 2 == 0 else trees[::-1]):
            m = one(os.path.abspath(path), args.clients, args.duration, args.window, args.edge, args.server_arg,
                    sink=name == "sink")
            results[name].append(m)
            print(f"round {r} {name:6} ratio {m['ratio']:.3f} (ceiling {m['ceiling_ratio']:.3f}) "
                  f"idle {m['idle_rps']:.0f} "
                  f"loaded {m['loaded_rps']:.0f} front {m['front_us_per_byte']:.2f} us/byte ok {m['complete_ok']} "
                  f"{m['status']}\n   idle   {_fmt(m['idle_cores'])}\n   upload {_fmt(m['upload_cores'])}\n"
                  f"   loaded {_fmt(m['loaded_cores'])}", file=sys.stderr, flush=True)
    summary: dict[str, Any] = {}
    for n, ms in results.items():
        s: dict[str, Any] = {k: statistics.median(m[k] for m in ms)
                             for k in ("ratio", "ceiling_ratio", "idle_rps", "loaded_rps", "front_us_per_byte")}
        for phase in ("idle_cores", "upload_cores", "loaded_cores"):
            s[phase] = {k: round(statistics.median(m[phase][k] for m in ms), 3) for k in ROLES}
        summary[n] = s
    print(json.dumps(summary, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"summary": summary, "rounds": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
