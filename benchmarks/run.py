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

Real pages (full mode, or quick with ``--only R1,R2,R3``): every server started
at once and driven in interleaved rounds (benchmarks/realpages.py), with CPU
per request by process role:

R1 Django /admin/login/ (stock site)      R3 Flask page rendered from Jinja templates
R2 Django JSON view, one ORM query on sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/run.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402

from benchmarks import realpages  # noqa: E402
from benchmarks.configs import (  # noqa: E402
    ALL_SERVERS,
    EXPERIMENTS,
    MODES,
    MP_NAMES,
    PEERS,
    REAL_PAGES,
    REPO,
    RESULTS,
    SCENARIOS,
    TREES,
    MiB,
    granian_available,
    plan,
    server_command,
)
from benchmarks.loadgen import ensure_wrk  # noqa: E402
from benchmarks.report import cell, chart, evaluate_goals, print_report  # noqa: E402
from benchmarks.scenarios import RUNNERS, Context  # noqa: E402
from benchmarks.servers import Server, ServerError, _stop_all  # noqa: E402


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
    mode.add_argument("--full", action="store_true", help="6 s wrk runs, 1 GiB bodies, 2,000 slow clients (<= 12 min)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios ({','.join(SCENARIOS)})")
    parser.add_argument("--servers", default="", help=f"comma-separated servers ({','.join(ALL_SERVERS)})")
    parser.add_argument("--workers", type=int, default=2, help="processes per server (default 2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per process where threaded (default 16)")
    parser.add_argument("--duration", type=float, help="override the wrk duration in seconds")
    parser.add_argument("--pin", action="store_true",
                        help="P3: the server's first process (the event loop) alone on CPU 0; its other "
                             "processes and the load generators on the other CPUs (taskset)")
    parser.add_argument("--baseline", metavar="TREE",
                        help="also run a2wsgi_mp-baseline: the CLI from another checkout (a git worktree of the "
                             "commit before a change), for its before and after in one run")
    default_output = os.path.join(RESULTS, "latest.json")
    parser.add_argument("--output", default=default_output, help="where the JSON goes")
    parser.add_argument("--chart", default=os.path.join(RESULTS, "chart.png"), help="where the PNG goes")
    args = parser.parse_args(argv)

    mode_name = "full" if args.full else "quick"
    m = dict(MODES[mode_name])
    m["pin"] = args.pin
    if args.duration:
        m["duration"] = args.duration
        m["short"] = min(m["short"], args.duration)
    scenarios = [s.strip().upper() for s in args.only.split(",") if s.strip()] or (
        SCENARIOS if mode_name == "full" else [s for s in SCENARIOS if s not in REAL_PAGES])
    # References (raw uvicorn) only in full mode unless asked for by name: quick must stay < 2 min.
    servers = [s.strip() for s in args.servers.split(",") if s.strip()] or (
        [s for s in ALL_SERVERS if s not in EXPERIMENTS] if mode_name == "full"
        else [s for s in MP_NAMES if s not in EXPERIMENTS] + PEERS)
    if args.baseline:
        if not os.path.isfile(os.path.join(args.baseline, "a2wsgi_mp", "__init__.py")):
            parser.error(f"--baseline {args.baseline!r}: not a source tree of a2wsgi_mp")
        TREES["a2wsgi_mp-baseline"] = os.path.abspath(args.baseline)
        if "a2wsgi_mp-baseline" not in servers:
            servers.append("a2wsgi_mp-baseline")
    elif "a2wsgi_mp-baseline" in servers:
        parser.error("a2wsgi_mp-baseline needs --baseline TREE")
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
    real = [s for s in scenarios if s in REAL_PAGES]
    real_servers = realpages.servers_for(servers, bool(args.servers), mode_name == "quick") if real else []
    t_start = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    p8: dict[str, dict[int, Any]] = {}
    notes: list[str] = []
    starts: dict[str, float] = {}
    background: dict[str, float] = {}
    stops: dict[str, float] = {}
    settle_budget = [m["settle"] * 4]  # never wait for a quiet machine longer than this in all
    print(f"a2wsgi_mp benchmarks, {mode_name} mode: {len(jobs) + len(real_servers)} server configuration(s), "
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
            if real and real_servers:
                real_results, real_notes = realpages.run(real, real_servers, m, tmpdir, args.workers, args.threads)
                results.update(real_results)
                notes.extend(real_notes)
                print(f"(real pages done: {time.monotonic() - t_start:.0f} s)", flush=True)
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
                 "commands": {**{cfg.key: server_command(cfg, 0)[0] for cfg in jobs},
                              **{realpages.config(s, args.workers, args.threads, app).key:
                                 server_command(realpages.config(s, args.workers, args.threads, app), 0)[0]
                                 for s in real_servers for app in {realpages.PAGES[sc][0] for sc in real}}}},
        "results": results, "p8": {s: {str(w): r for w, r in by_w.items()} for s, by_w in p8.items()},
        "goals": goals, "notes": notes, "report": report,
    }
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, args.output)
    try:
        chart(results, shown, p8, args.chart,
              f"a2wsgi_mp benchmarks ({mode_name}, {args.workers} workers, {os.cpu_count()} CPUs, "
              f"{doc['meta']['date']})")
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
