"""P4, A/B, paired: idle and loaded hello rps a few seconds apart, the servers side by side.

On this shared 2-core machine the other users' load changes from minute to minute, more than
P4's effect (``benchmarks.p4_account`` shows them taking 0 to 1.4 cores).  So here every server
(the CLI from each source tree, ``benchmarks.apps:app``, 2 workers) runs for the whole run, each with
its own 2,000 uploaders connected (``benchmarks.slowclients --toggle``: silent until switched on),
and each cycle measures, for each server in turn (order reversed every other cycle):

* idle: ``wrk -c32 /hello`` for ``--duration`` s, every uploader silent;
* loaded: the same with that server's uploaders trickling (a byte each every 0.1 s),

and their ratio (P4's figure).  Only one server's uploaders trickle at a time; a silent connection
costs nothing.  The medians over the cycles are printed, with the CPU cores of each role during
the loaded runs (as ``p4_account``).  Idle differs from P4's in one way: the 2,000 connections are
open (their request tasks waiting), not absent.

    flock /tmp/a2wsgi-bench.lock python -m benchmarks.p4_paired --tree main=/tmp/base --tree new=. --cycles 10
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
        for c in range(args.cycles):
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
                m = {"idle_rps": idle["good_rps"], "loaded_rps": loaded["good_rps"],
                     "ratio": loaded["good_rps"] / idle["good_rps"] if idle["good_rps"] else 0.0,
                     "idle_cores": idle_cores, "loaded_cores": loaded_cores}
                pairs[name].append(m)
                print(f"cycle {c} {name:6} ratio {m['ratio']:.3f} idle {m['idle_rps']:.0f} loaded {m['loaded_rps']:.0f}"
                      f"  loaded: " + " ".join(f"{k[:4]} {loaded_cores[k]:.2f}" for k in ROLES)
                      + f"  idle others {idle_cores['others']:.2f}", file=sys.stderr, flush=True)
                time.sleep(0.3)
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


if __name__ == "__main__":
    raise SystemExit(main())
