"""P4's question, A/B between two source trees: what 2,000 slow uploaders cost the front.

Each round starts the CLI server (``benchmarks.apps:app``, 2 workers, fast path default) from each
tree in turn (order reversed every other round) and measures, with ``benchmarks.slowclients``
(from this tree) trickling one byte per client every 0.1 s:

* ``idle_rps`` / ``loaded_rps`` / ``ratio``: ``wrk -c32 /hello`` alone, then beside the uploaders (P4);
* ``front_us_per_byte``: the front's CPU (user + system) per trickled byte, over a window with the
  uploaders only (no wrk), from the clients' paced rate.

    flock /tmp/a2wsgi-bench.lock python -m benchmarks.slow_ab --tree old=/tmp/base --tree new=. --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil

from .configs import PY
from .loadgen import run_wrk
from .servers import free_port, http_status
from .slowclients import Uploaders


def _start(tree: str, port: int, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """a2wsgi_mp from the source ``tree`` on ``port`` (2 workers × 1 thread), once it answers /hello."""
    env = dict(os.environ, PYTHONPATH=tree)
    proc = subprocess.Popen([PY, "-m", "a2wsgi_mp", "benchmarks.apps:app", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2", "--threads", "1", "--log-level", "warning", "--no-access-log", *extra],
                            cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    ok = 0
    while time.monotonic() < deadline and ok < 5:
        ok = ok + 1 if http_status(port, "/hello") == 200 else 0
        time.sleep(0.05)
    if ok < 5:
        raise RuntimeError(f"server from {tree} did not start")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def one(tree: str, clients: int, duration: float, window: float) -> dict[str, Any]:
    port = free_port()
    proc = _start(tree, port)
    try:
        url = f"http://127.0.0.1:{port}/hello"
        idle = run_wrk(url, 32, duration)
        ramp = 2.0
        with Uploaders(port, clients, ramp + window + duration + 0.5, 2) as slow:
            time.sleep(ramp)
            c0, t0 = _cpu(proc.pid), time.monotonic()
            time.sleep(window)
            per_byte = (_cpu(proc.pid) - c0) / ((time.monotonic() - t0) * clients * 10) * 1e6
            loaded = run_wrk(url, 32, duration)
            stats = slow.result(timeout=duration + window + 30)
    finally:
        _stop(proc)
    return {"idle_rps": idle["good_rps"], "loaded_rps": loaded["good_rps"],
            "ratio": loaded["good_rps"] / idle["good_rps"] if idle["good_rps"] else None,
            "front_us_per_byte": per_byte, "complete_ok": stats.get("complete_ok"), "status": stats.get("status")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH (a source tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--window", type=float, default=3.0)
    args = parser.parse_args(argv)
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, path in (trees if r % 2 == 0 else trees[::-1]):
            m = one(os.path.abspath(path), args.clients, args.duration, args.window)
            results[name].append(m)
            print(f"round {r} {name:6} ratio {m['ratio']:.3f} idle {m['idle_rps']:.0f} loaded {m['loaded_rps']:.0f} "
                  f"front {m['front_us_per_byte']:.2f} us/byte ok {m['complete_ok']} {m['status']}",
                  file=sys.stderr, flush=True)
    summary = {n: {k: statistics.median(m[k] for m in ms) for k in ("ratio", "idle_rps", "loaded_rps",
                                                                       "front_us_per_byte")}
               for n, ms in results.items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
