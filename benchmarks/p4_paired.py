"""P4, A/B, paired: idle and loaded hello rps a few seconds apart, the servers side by side.

On this shared 2-core machine the other users' load changes from minute to minute, more than
P4's effect (``benchmarks.p4_account`` shows them taking 0 to 1.4 cores).  So here every server
(the CLI from each source tree, ``benchmarks.apps:app``, 2 workers) runs for the whole run, each with
its own 2,000 uploaders connected (``benchmarks.slowclients --toggle``: silent until switched on),
and each cycle measures, for each server in turn (order reversed every other cycle):

* idle: ``wrk -c32 /hello`` for ``--duration`` s, every uploader silent;
* loaded: the same with that server's uploaders trickling (a byte each every 0.1 s),

and their ratio (P4's figure).  Only one server's uploaders trickle at a time; a silent connection
costs nothing.  With ``--aba`` a second idle run follows the loaded one and the ratio is loaded over
the mean of the two idle runs (a drift of the others' load over the cycle cancels to first order).
The summary gives each server's median ratio, its quartiles and range, the median over the quiet
cycles (the machine's other users below ``--quiet`` cores in every run of the cycle), and for every
server after the first the per-cycle difference from the first (median, cycles better).
``--max-seconds`` ends the run (with its summary) before a cycle that would not fit.  The CPU
cores of each role during the loaded runs are printed too (as ``p4_account``).  Idle differs from
P4's in one way: the 2,000 connections are open (their request tasks waiting), not absent.

    flock /tmp/a2wsgi-bench.lock python -m benchmarks.p4_paired --tree main=/tmp/base --tree new=. --cycles 10
    flock /tmp/a2wsgi-bench.lock python -m benchmarks.p4_paired --tree main=/tmp/base --tree again=/tmp/base \\
        --tree new=. --aba --duration 2 --cycles 30 --max-seconds 270
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from .configs import PY, REPO
from .p4_account import ROLES, _start, _stop, _wrk
from .servers import free_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH (a source tree)")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of each wrk run")
    parser.add_argument("--edge", type=float, default=0.5, help="seconds left out of the CPU window at each end")
    parser.add_argument("--server-arg", action="append", default=[], help="extra CLI argument for every server")
    parser.add_argument("--output", help="JSON of every pair")
    parser.add_argument("--aba", action="store_true", help="idle, loaded, idle: loaded over the mean of both idles")
    parser.add_argument("--quiet", type=float, default=0.15, help="others' cores below which a cycle is quiet")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="start no cycle past this (0: no limit)")
    parser.add_argument("--sink", action="store_true",
                        help="also 'sink': the first tree's server, its uploaders into a socket never accepted "
                             "(P4 if the server's handling of the uploads cost nothing)")
    args = parser.parse_args(argv)
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    servers: dict[str, tuple[subprocess.Popen[bytes], int, subprocess.Popen[str]]] = {}
    pairs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    stats: dict[str, Any] = {}
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(4096)
    if args.sink:
        trees.append(("sink", trees[0][1]))
        pairs["sink"] = []
    try:
        for name, path in trees:
            port = free_port()
            proc = _start(os.path.abspath(path), port, args.server_arg)
            target = sink.getsockname()[1] if name == "sink" else port
            gen = subprocess.Popen([PY, "-m", "benchmarks.slowclients", "--port", str(target), "--clients",
                                    str(args.clients), "--duration", "900", "--drain", "5", "--toggle"],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
            servers[name] = (proc, port, gen)
        time.sleep(4.0)  # (2,000 connects, 20 every 10 ms, each)
        began = time.monotonic()
        cycle_took = 0.0
        for c in range(args.cycles):
            if args.max_seconds and time.monotonic() - began + cycle_took > args.max_seconds:
                print(f"stopped after {c} cycles (--max-seconds)", file=sys.stderr, flush=True)
                break
            cycle_began = time.monotonic()
            for name, _ in (trees if c % 2 == 0 else trees[::-1]):
                proc, port, gen = servers[name]
                server, generator = psutil.Process(proc.pid), psutil.Process(gen.pid)
                url = f"http://127.0.0.1:{port}/hello"
                idle, idle_cores = _wrk(url, args.duration, args.edge, server, generator)
                gen.send_signal(signal.SIGUSR1)
                time.sleep(0.5)
                try:
                    loaded, loaded_cores = _wrk(url, args.duration, args.edge, server, generator)
                finally:
                    gen.send_signal(signal.SIGUSR2)
                idle_rps, others = idle["good_rps"], max(idle_cores["others"], loaded_cores["others"])
                if args.aba:
                    time.sleep(0.3)
                    idle2, idle2_cores = _wrk(url, args.duration, args.edge, server, generator)
                    idle_rps = (idle_rps + idle2["good_rps"]) / 2
                    others = max(others, idle2_cores["others"])
                m = {"idle_rps": idle_rps, "loaded_rps": loaded["good_rps"],
                     "ratio": loaded["good_rps"] / idle_rps if idle_rps else 0.0,
                     "idle_cores": idle_cores, "loaded_cores": loaded_cores, "cycle": c, "others": others}
                pairs[name].append(m)
                print(f"cycle {c} {name:6} ratio {m['ratio']:.3f} idle {m['idle_rps']:.0f} loaded {m['loaded_rps']:.0f}"
                      f"  loaded: " + " ".join(f"{k[:4]} {loaded_cores[k]:.2f}" for k in ROLES)
                      + f"  idle others {idle_cores['others']:.2f}", file=sys.stderr, flush=True)
                time.sleep(0.3)
            cycle_took = time.monotonic() - cycle_began
    finally:
        for name, (proc, _, gen) in servers.items():
            if gen.poll() is None:
                gen.send_signal(signal.SIGTERM)
            try:
                out, _ = gen.communicate(timeout=20)
                stats[name] = json.loads(out.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                os.killpg(gen.pid, signal.SIGKILL)
                gen.wait()
            _stop(proc)
        sink.close()
    summary: dict[str, Any] = {}
    for name, ms in pairs.items():
        if not ms:
            continue
        s: dict[str, Any] = {k: round(statistics.median(m[k] for m in ms), 3)
                             for k in ("ratio", "idle_rps", "loaded_rps")}
        s["ratios"] = [round(m["ratio"], 3) for m in ms]
        s["spread"] = _spread([m["ratio"] for m in ms])
        quiet = [m["ratio"] for m in ms if m["others"] < args.quiet]
        s["quiet"] = {"cycles": len(quiet), "ratio": round(statistics.median(quiet), 3) if quiet else None}
        if name != trees[0][0] and pairs[trees[0][0]]:
            first = {m["cycle"]: m["ratio"] for m in pairs[trees[0][0]]}
            diffs = [m["ratio"] - first[m["cycle"]] for m in ms if m["cycle"] in first]
            if diffs:
                s["vs_" + trees[0][0]] = {"median_diff": round(statistics.median(diffs), 3),
                                          "better": f"{sum(d > 0 for d in diffs)}/{len(diffs)}"}
        s["loaded_cores"] = {k: round(statistics.median(m["loaded_cores"][k] for m in ms), 3) for k in ROLES}
        s["idle_cores"] = {k: round(statistics.median(m["idle_cores"][k] for m in ms), 3) for k in ROLES}
        st = stats.get(name, {})
        s["uploads"] = {k: st.get(k) for k in ("complete_ok", "status", "bad_count", "errors")}
        summary[name] = s
    print(json.dumps(summary, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"summary": summary, "pairs": pairs, "argv": sys.argv}, f, indent=1)
    return 0


def _spread(xs: list[float]) -> dict[str, float]:
    """Quartiles and range of ``xs`` (the quartiles: medians of the lower and upper halves)."""
    xs = sorted(xs)
    half = len(xs) // 2
    low, high = xs[:half] or xs, xs[len(xs) - half:] or xs
    return {"q1": round(statistics.median(low), 3), "q3": round(statistics.median(high), 3),
            "min": round(xs[0], 3), "max": round(xs[-1], 3)}


if __name__ == "__main__":
    raise SystemExit(main())
