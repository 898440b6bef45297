"""``a2wsgi-mp status``: what each worker is doing now, read from the admin socket.

Like ``uwsgitop`` or ``passenger-status``: one row per worker process (pid,
state, the request it serves and for how long, RSS, requests served, the share
of its life spent on requests), then the queue, the fronts and the totals.
``--watch`` redraws it every second (or every N); ``--json`` prints the
snapshot the admin listener answers (:func:`a2wsgi_mp.pool.metrics.snapshot`).
A socket path with wildcards (``'/run/x/admin-*.sock'``: one per gunicorn
worker) reads every matching socket and shows their sum.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import sys
import time
from typing import Any, Sequence

from ..admin import fetch
from ..pool.metrics import merge
from .settings import ENV_PREFIX

SOCKET_ENV = ENV_PREFIX + "ADMIN_SOCKET"
BIND_ENV = ENV_PREFIX + "ADMIN_BIND"
CLEAR = "\x1b[H\x1b[2J"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="a2wsgi-mp status",
                                description="Show what each worker of a running a2wsgi-mp is doing, read from "
                                            "its admin listener (--admin-socket or --admin-bind of the server).")
    p.add_argument("--admin-socket", metavar="PATH", default=os.environ.get(SOCKET_ENV),
                   help=f"the server's --admin-socket; with wildcards, every matching socket, summed "
                        f"(env {SOCKET_ENV})")
    p.add_argument("--admin-bind", metavar="HOST:PORT", default=os.environ.get(BIND_ENV),
                   help=f"or its --admin-bind (env {BIND_ENV})")
    p.add_argument("--watch", nargs="?", type=float, const=1.0, default=None, metavar="SECONDS",
                   help="redraw every SECONDS (default 1) until interrupted")
    p.add_argument("--json", action="store_true", help="print the status as JSON (for scripts)")
    return p


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _age(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(snap: dict[str, Any]) -> str:
    """The status as a table (what a terminal shows)."""
    stats, req = snap["stats"], snap["requests"]
    workers = sorted(stats["workers"], key=lambda w: (w.get("front") or 0, w["id"]))
    fronts = snap.get("fronts") or []
    busy = sum(w["busy"] for w in workers)
    lines = [
        f"a2wsgi-mp status at {time.strftime('%H:%M:%S', time.localtime(snap['time']))} - "
        f"{len(fronts)} front(s) {', '.join(map(str, fronts))}; {len(workers)} worker(s) x {stats['threads']} "
        f"thread(s); busy {busy}/{snap['slots']}; queued {stats['queued']}",
        "",
        f"{'PID':>8} {'FRONT':>7} {'STATE':<10} {'REQS':>7} {'RSS':>8} {'BUSY%':>6} {'AGE':>7}  CURRENT REQUEST",
    ]
    for w in workers:
        util = 100 * w.get("busy_time", 0) / w["age"] if w["age"] > 0 else 0.0
        serving = w.get("serving") or []
        current = "; ".join(f"{s['method']} {s['path']} ({_age(s['age'])})" for s in serving) or "-"
        lines.append(f"{w['pid'] or '-':>8} {w.get('front') or '-':>7} {w['state']:<10} {w['requests']:>7} "
                     f"{_size(w['rss']):>8} {util:>5.1f}% {_age(w['age']):>7}  {current}")
    classes = req["classes"]
    count = sum(req["duration"])
    mean = req["duration_sum"] / count if count else 0.0
    deaths = ", ".join(f"{k} {v}" for k, v in sorted(snap["deaths"].items())) or "none"
    lines += [
        "",
        f"requests {count} (" + ", ".join(f"{k} {v}" for k, v in classes.items() if v) + f"); mean {_age(mean)}; "
        f"in {_size(req['bytes_in'])}, out {_size(req['bytes_out'])}",
        f"workers: recycled {stats['recycled']}, respawned {stats['respawned']}, killed {stats['killed']}; "
        f"deaths: {deaths}",
    ]
    return "\n".join(lines)


async def _one(target: str) -> dict[str, Any]:
    status, body = await fetch(target, "/status")
    if status != 200:
        raise OSError(f"the admin listener answered {status}")
    return json.loads(body)


async def _snapshot(target: str) -> dict[str, Any]:
    if not glob.has_magic(target):
        return await _one(target)
    paths = sorted(glob.glob(target))
    answers = await asyncio.gather(*(_one(p) for p in paths), return_exceptions=True)
    snaps = [a for a in answers if isinstance(a, dict)]
    if not snaps:
        raise OSError(f"no admin socket answered ({len(paths)} matched)")
    return merge(snaps)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = args.admin_socket or args.admin_bind
    if not target:
        print(f"a2wsgi-mp status: error: give --admin-socket or --admin-bind (or {SOCKET_ENV})", file=sys.stderr)
        return 2
    try:
        while True:
            try:
                snap = asyncio.run(_snapshot(target))
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                message = f"a2wsgi-mp status: cannot read {target}: {exc or type(exc).__name__}"
                if args.watch is None:
                    print(message, file=sys.stderr)
                    return 1
                print(CLEAR + message, flush=True)
            else:
                text = json.dumps(snap, indent=2) if args.json else render(snap)
                print((CLEAR if args.watch is not None else "") + text, flush=True)
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
