"""Before and after under the same load at the same time: two a2wsgi_mp trees side by side.

    python -m benchmarks.simultaneous TREE_A [TREE_B] [--page R3] [--rounds 6] [--seconds 5]

The benchmark proper runs its servers one after another, and this shared 2-vCPU
machine drifts between them by more than a change's effect (the same front code
read 63.5 and 52.3 µs a request a minute apart).  Here the CLI from each tree
(``TREE_B`` defaults to this one) serves the same page at the same time, each
loaded by its own ``wrk -t1``, so both meet the same machine; every round gives
each its front's and its workers' CPU per request (psutil, by process role) and
the ratio B/A.  The medians of the ratios are the figures to quote; an A/A run
(the same tree twice) shows the method's own spread.  (After the wcost helper's
``ab.py``, issue 22.)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from .configs import WSGI_APPS
from .loadgen import run_wrk
from .realpages import PAGES
from .servers import free_port, http_status

#: The pages: P1 (hello) and the real pages' (app key, path).
TARGETS = {"P1": ("wsgi", "/hello"), **PAGES}


def start(tree: str, app: str, port: int, extra: list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "a2wsgi_mp", WSGI_APPS[app], "--host", "127.0.0.1", "--port", str(port),
            "--workers", "2", "--threads", "1", "--log-level", "warning", "--no-access-log", *extra]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    return subprocess.Popen(argv, cwd=tree, env=env, start_new_session=True)


def _mix_script(every: int) -> str:
    """A wrk script: every ``every``-th request (wrk's one thread) a POST of 64 bytes to the same path,
    so each connection sends a body now and then.  The caller removes the file."""
    import tempfile

    lua = f"""
local n = 0
request = function()
  n = n + 1
  if n % {every} == 0 then
    return wrk.format("POST", nil, {{["Content-Type"] = "text/plain"}}, string.rep("x", 64))
  end
  return wrk.format("GET")
end
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    return f.name


def cpu_times(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[p.pid] = t.user + t.system
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simultaneous", description=__doc__.split("\n\n")[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b", nargs="?", default=".")
    parser.add_argument("--page", choices=sorted(TARGETS), default="P1")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=16, help="wrk connections per server")
    parser.add_argument("--a-options", default="", help="extra CLI options for A (space-separated)")
    parser.add_argument("--b-options", default="", help="extra CLI options for B")
    parser.add_argument("--header", action="append", default=[],
                        help="a request header for both loads, as wrk's -H (repeatable): e.g. a proxy's "
                             "'X-Forwarded-For: 203.0.113.9'")
    parser.add_argument("--mix", type=int, default=0, metavar="N",
                        help="every Nth request a small POST, on whichever connection (a keep-alive connection that "
                             "sends a body now and then: a browser's form, a proxy's pooled connection)")
    args = parser.parse_args(argv)
    app, path = TARGETS[args.page]
    headers = tuple(args.header)
    script = _mix_script(args.mix) if args.mix else ""
    servers: list[tuple[subprocess.Popen, int]] = []
    try:
        for tree, extra in ((args.tree_a, args.a_options), (args.tree_b, args.b_options)):
            port = free_port()
            servers.append((start(tree, app, port, extra.split()), port))
        for proc, port in servers:
            deadline = time.monotonic() + 60
            while http_status(port, path) != 200:  # (the page, not just the port: the pool is up)
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server on port {port} did not come up")
                time.sleep(0.2)
        trees = []
        for proc, _ in servers:
            root = psutil.Process(proc.pid)
            trees.append([root, *root.children(recursive=True)])

        def load(seconds: float) -> list[dict[str, Any]]:
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                runs = [pool.submit(run_wrk, f"http://127.0.0.1:{port}{path}", args.conns, seconds, headers, script)
                        for _, port in servers]
                return [r.result() for r in runs]

        load(2.0)  # warm-up
        figures: list[dict[str, list[float]]] = [{"front": [], "workers": [], "rps": []} for _ in servers]
        for n in range(args.rounds):
            before = [cpu_times(t) for t in trees]
            results = load(args.seconds)
            after = [cpu_times(t) for t in trees]
            line = []
            for i, (proc, _) in enumerate(servers):
                good = max(results[i].get("requests", 0) - results[i].get("non2xx", 0), 1)
                used = {pid: after[i][pid] - before[i].get(pid, 0.0) for pid in after[i]}
                front = used.get(proc.pid, 0.0)
                workers = sum(v for pid, v in used.items() if pid != proc.pid)
                figures[i]["front"].append(front / good * 1e6)
                figures[i]["workers"].append(workers / good * 1e6)
                figures[i]["rps"].append(good / args.seconds)
                line.append(f"{'AB'[i]}: {good / args.seconds:,.0f} rps, front {front / good * 1e6:.1f} us, "
                            f"workers {workers / good * 1e6:.1f} us")
            print(f"round {n + 1}: " + "  |  ".join(line), flush=True)
        print(f"{args.page} {path}, {args.rounds} rounds of {args.seconds:g} s, both loaded at once:")
        for role in ("front", "workers", "rps"):
            a_figures, b_figures = figures[0][role], figures[1][role]
            ratios = [b / a for a, b in zip(a_figures, b_figures, strict=True) if a]
            print(f"  {role:8} A {statistics.median(a_figures):9.1f}  B {statistics.median(b_figures):9.1f}"
                  f"  B/A median {statistics.median(ratios):.3f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})")
        return 0
    finally:
        if script:
            os.unlink(script)
        for proc, _ in servers:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for proc, _ in servers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
