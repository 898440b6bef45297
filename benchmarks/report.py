"""Reporting: the results table, ratios against peers, goals met or not, the chart."""

from __future__ import annotations

import os
from typing import Any, Callable

from .configs import APP_ALONE, MP_NAMES, SCENARIOS
from .scenarios import TITLES


def headline(scenario: str, r: dict[str, Any]) -> float | None:
    """The one number per (scenario, server) the ratios are made of."""
    if failed(r):
        return None
    return {
        "P1": lambda: r["good_rps"], "P2": lambda: r["good_rps"], "P3": lambda: r["loaded_p99_ms"],
        "P4": lambda: r["loaded_rps"], "P5": lambda: r["seconds"] if r["ok"] else None,
        "P6": lambda: r["seconds"] if r["ok"] else None, "P7": lambda: r["good_rps"],
        "P8": lambda: r["good_rps"], "R1": lambda: r["good_rps"], "R2": lambda: r["good_rps"],
        "R3": lambda: r["good_rps"],
    }[scenario]()


LOWER_IS_BETTER = {"P3", "P5", "P6"}


def failed(r: dict[str, Any] | None) -> bool:
    return not r or bool(r.get("failed"))


def fmt(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, float):
        if digits == 0 and abs(x) < 10:
            return f"{x:.2f}"
        return f"{x:,.{digits}f}"
    return str(x)


def cell(scenario: str, r: dict[str, Any] | None) -> str:
    if not r:
        return ""
    if failed(r):
        return "ERROR"
    errs = sum((r.get("socket_errors") or {}).values()) if isinstance(r.get("socket_errors"), dict) else 0
    flag = ""
    if r.get("non2xx"):
        flag += f" [{r['non2xx']} non-2xx]"
    if errs:
        flag += f" [{errs} sock err]"
    if scenario in ("P1", "R1", "R2", "R3") and r.get("cpu_per_request"):
        c = r["cpu_per_request"]
        rounds = f" (rounds: {', '.join(fmt(x) for x in r['all_good_rps'])})" if r.get("all_good_rps") else ""
        return (f"{fmt(r['good_rps'])}{flag}  (CPU/request: front {c['front_us']} us, workers {c['workers_us']} us)"
                + rounds)
    if scenario in ("P1", "P2", "P7"):
        return f"{fmt(r['good_rps'])}{flag}"
    if scenario == "P3":
        return f"{fmt(r['loaded_p99_ms'], 2)} (idle {fmt(r['idle_p99_ms'], 2)}; cpu {fmt(r['cpu_rps'])} rps)"
    if scenario == "P4":
        lf = r.get("loaded", {})
        e = sum((lf.get("socket_errors") or {}).values())
        extra = f" [{e} sock err]" if e else ""
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        return f"{fmt(r['loaded_rps'])} / {fmt(r['idle_rps'])} = {ratio}{extra}"
    if scenario in ("P5", "P6"):
        ok = "" if r["ok"] else f" FAILED({r['status']})"
        return f"{fmt(r['seconds'], 2)} s, {fmt(r['max_rss_mib'], 1)} MiB{ok}"
    if scenario == "P8":
        return f"{fmt(r['good_rps'])}{flag}"
    return "?"


def evaluate_goals(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    goals = []

    def get(sc: str, server: str) -> dict[str, Any] | None:
        r = results.get(sc, {}).get(server)
        return None if failed(r) else r

    def goal(mp: str, name: str, ok: bool | None, detail: str) -> None:
        goals.append({"server": mp, "goal": name, "met": ok, "detail": detail})

    for mp in MP_NAMES:
        try:
            _goals_for(mp, get, goal)
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            goal(mp, "evaluation", None, f"could not evaluate: {type(exc).__name__}: {exc}")
    return goals


def _goals_for(mp: str, get: Callable[[str, str], Any], goal: Callable[..., None]) -> None:
    if True:
        r1, a1, g1 = get("P1", mp), get("P1", "a2wsgi"), get("P1", "gunicorn-sync")
        if r1:
            parts, checks = [], []
            for peer, peer_name, need in ((a1, "a2wsgi", 2.0), (g1, "gunicorn-sync", 1.2)):
                if peer and peer.get("good_rps"):
                    ratio = r1["good_rps"] / peer["good_rps"]
                    checks.append(ratio >= need)
                    parts.append(f"{ratio:.2f}x {peer_name} (need {need}x)")
                else:
                    parts.append(f"{peer_name} not measured")
            ok = (False if False in checks else None if len(checks) < 2 else True)
            one = get("P1", "a2wsgi-1p")
            if one and one.get("good_rps"):
                parts.append(f"(info: {r1['good_rps'] / one['good_rps']:.2f}x a2wsgi in one process)")
            goal(mp, "P1 hello >= 2x a2wsgi and >= 1.2x gunicorn sync", ok if parts else None,
                 "; ".join(parts) or "no peer measured in this run")
        _cpu_goals(mp, r1, get("P1", "uvicorn-raw"), goal)
        r2, g2 = get("P2", mp), get("P2", "gunicorn-sync")
        if r2 and g2 and g2.get("good_rps"):
            ratio = r2["good_rps"] / g2["good_rps"]
            goal(mp, "P2 CPU-bound >= 0.95x gunicorn sync", ratio >= 0.95, f"{ratio:.2f}x")
        r3 = get("P3", mp)
        if r3 and r3.get("loaded_p99_ms") is not None:
            a3 = get("P3", "a2wsgi")
            vs = f"; a2wsgi {a3['loaded_p99_ms']:.2f} ms" if a3 and a3.get("loaded_p99_ms") else ""
            goal(mp, "P3 /ping p99 <= 2 ms under CPU saturation", r3["loaded_p99_ms"] <= 2.0,
                 f"{r3['loaded_p99_ms']:.2f} ms (idle {r3['idle_p99_ms']:.2f} ms){vs}")
        r4 = get("P4", mp)
        if r4 and r4.get("ratio") is not None:
            goal(mp, f"P4 rps with {r4['slow_clients']} slow uploaders >= 0.8x idle", r4["ratio"] >= 0.8,
                 f"{r4['ratio']:.2f}x idle")
        r5, a5 = get("P5", mp), get("P5", "a2wsgi")
        if r5:
            ok = bool(r5["ok"]) and (r5["max_rss_mib"] or 1e9) <= 64
            detail = f"{fmt(r5['seconds'], 2)} s, max RSS {fmt(r5['max_rss_mib'], 1)} MiB"
            if a5 and a5.get("ok"):
                ok = ok and r5["seconds"] <= a5["seconds"]
                detail += f"; a2wsgi {a5['seconds']:.2f} s ({r5['seconds'] / a5['seconds']:.2f}x)"
            elif ok:
                ok, detail = None, detail + "; a2wsgi not measured"
            goal(mp, "P5 upload no slower than a2wsgi, every process <= 64 MiB RSS", ok, detail)
        r6, a6 = get("P6", mp), get("P6", "a2wsgi")
        if r6 and a6 and a6.get("ok"):
            ratio = r6["seconds"] / a6["seconds"] if r6["ok"] else float("inf")
            goal(mp, "P6 download time <= 1.1x a2wsgi", bool(r6["ok"]) and ratio <= 1.1,
                 f"{fmt(r6['seconds'], 2)} s vs {a6['seconds']:.2f} s ({ratio:.2f}x)")
        g6 = get("P6", "gunicorn-sync")
        if r6 and g6 and g6.get("ok"):
            ratio = r6["seconds"] / g6["seconds"] if r6["ok"] else float("inf")
            goal(mp, "P6 download time <= 1.2x gunicorn sync", bool(r6["ok"]) and ratio <= 1.2,
                 f"{fmt(r6['seconds'], 2)} s vs {g6['seconds']:.2f} s ({ratio:.2f}x), max RSS "
                 f"{fmt(r6.get('max_rss_mib'), 1)} MiB")
        _real_page_goals(mp, get, goal)
        r7, g7 = get("P7", mp), get("P7", "gunicorn-gthread")
        if r7 and g7 and g7.get("good_rps"):
            ratio = r7["good_rps"] / g7["good_rps"]
            goal(mp, "P7 sleep-bound >= 0.9x gunicorn gthread", ratio >= 0.9, f"{ratio:.2f}x")


#: Goals on real pages (issue 22): rps against the peers, and the front's CPU per request.
REAL_PAGE_GOALS = (("gunicorn-sync", 1.1), ("granian", 1.0))
REAL_PAGE_FRONT_US = 60.0


def _real_page_goals(mp: str, get: Callable[[str, str], Any], goal: Callable[..., None]) -> None:
    for sc in ("R1", "R2", "R3"):
        r = get(sc, mp)
        if not r:
            continue
        parts, checks = [], []
        for peer, need in REAL_PAGE_GOALS:
            theirs = get(sc, peer)
            if theirs and theirs.get("good_rps"):
                ratio = r["good_rps"] / theirs["good_rps"]
                checks.append(ratio >= need)
                parts.append(f"{ratio:.2f}x {peer} (need {need}x)")
            else:
                parts.append(f"{peer} not measured")
        ok = False if False in checks else (True if len(checks) == len(REAL_PAGE_GOALS) else None)
        goal(mp, f"{sc} rps >= 1.1x gunicorn sync and >= 1.0x granian", ok, "; ".join(parts))
        c = r.get("cpu_per_request")
        if c:
            goal(mp, f"{sc} front CPU/request <= {REAL_PAGE_FRONT_US:g} us", c["front_us"] <= REAL_PAGE_FRONT_US,
                 f"{c['front_us']} us (workers {c['workers_us']} us)")


#: Goals on CPU per hello request (issue 13): the front within this factor of a bare
#: ASGI hello on the same uvicorn, and the worker's own share within this many µs.
FRONT_CPU_FACTOR = 2.0
WORKER_CPU_US = 25.0
#: ... and the whole request's (issue 22).
TOTAL_CPU_US = 50.0


def _cpu_goals(mp: str, r1: dict[str, Any] | None, raw: dict[str, Any] | None, goal: Callable[..., None]) -> None:
    mine = (r1 or {}).get("cpu_per_request")
    if not mine:
        return
    ref = (raw or {}).get("cpu_per_request")
    if ref and ref["front_us"]:
        factor = mine["front_us"] / ref["front_us"]
        goal(mp, f"P1 front CPU/request <= {FRONT_CPU_FACTOR:g}x bare ASGI hello", factor <= FRONT_CPU_FACTOR,
             f"{mine['front_us']} us vs {ref['front_us']} us ({factor:.2f}x)")
    else:
        goal(mp, f"P1 front CPU/request <= {FRONT_CPU_FACTOR:g}x bare ASGI hello", None,
             f"{mine['front_us']} us; uvicorn-raw not measured")
    goal(mp, f"P1 worker CPU/request <= {WORKER_CPU_US:g} us", mine["workers_us"] <= WORKER_CPU_US,
         f"{mine['workers_us']} us")
    total = mine["front_us"] + mine["workers_us"]
    goal(mp, f"P1 total CPU/request <= {TOTAL_CPU_US:g} us", total <= TOTAL_CPU_US, f"{total:.1f} us")


def cpu_lines(results: dict[str, dict[str, Any]], servers: list[str]) -> list[str]:
    """The per-role CPU table of P1 (µs per request), with the front's ratio to bare ASGI."""
    p1 = results.get("P1", {})
    rows = [(s, p1[s]["cpu_per_request"]) for s in servers if s in p1 and (p1[s] or {}).get("cpu_per_request")]
    if not rows:
        return []
    ref = (p1.get("uvicorn-raw") or {}).get("cpu_per_request")
    lines = ["\nCPU per hello request by process role (P1, us; front = the event-loop process(es), "
             "workers = the app's):",
             f"  {'server':<18} {'front':>8} {'(kernel)':>8} {'workers':>8} {'total':>8}  {'front cap rps':>13}"]
    for s, c in rows:
        mine = s.startswith("a2wsgi_mp") or s == "uvicorn-raw"
        vs = f"  ({c['front_us'] / ref['front_us']:.2f}x bare ASGI front)" if mine and ref and ref["front_us"] else ""
        # One front process serves at most 1 / (its CPU per request); N fronts share the work.
        cap = f"{c.get('fronts', 1) * 1e6 / c['front_us']:,.0f}" if mine and c["front_us"] else "-"
        lines.append(f"  {s:<18} {c['front_us']:>8} {c.get('front_sys_us', '-'):>8} {c['workers_us']:>8} "
                     f"{c['total_us']:>8}  {cap:>13}{vs}")
    return lines


def real_cpu_lines(results: dict[str, dict[str, Any]], servers: list[str]) -> list[str]:
    """Per-role CPU per request on the real pages (µs; the best round's and the lowest of the rounds),
    and what each server adds to the app measured alone (its lowest total minus the app's lowest)."""
    lines: list[str] = []
    for sc in ("R1", "R2", "R3"):
        rows = [(s, results[sc][s]) for s in servers if s in results.get(sc, {})
                and (results[sc][s] or {}).get("cpu_per_request")]
        if not rows:
            continue
        alone = (results[sc].get(APP_ALONE) or {}).get("app_us")
        if not lines:
            lines.append("\nCPU per request by process role on real pages (us; best round, lowest over rounds in "
                         "brackets; front = the first process, workers = its descendants; added = lowest total "
                         "minus the app alone, a plain in-process loop of the same page):")
            lines.append(f"  {'':<3} {'server':<18} {'rps':>8} {'front':>15} {'(kernel)':>8} {'workers':>15} "
                         f"{'total':>8} {'added':>8}")
        for s, r in rows:
            c, lo = r["cpu_per_request"], r.get("cpu_min") or r["cpu_per_request"]
            added = f"{lo['total_us'] - alone:.0f}" if alone else "-"
            lines.append(f"  {sc:<3} {s:<18} {r['good_rps']:>8,.0f} {c['front_us']:>7} ({lo['front_us']:>5}) "
                         f"{c['front_sys_us']:>8} {c['workers_us']:>7} ({lo['workers_us']:>5}) {c['total_us']:>8} "
                         f"{added:>8}")
        if alone:
            lines.append(f"  {sc:<3} {'(the app alone)':<18} {'':>8} {'':>15} {'':>8} {'':>15} {alone:>8}")
    return lines


def ratio_rows(results: dict[str, dict[str, Any]], servers: list[str]) -> list[tuple[str, str, str]]:
    rows = []
    for mp in MP_NAMES:
        for sc in SCENARIOS:
            if sc == "P8":
                continue
            mine = headline(sc, results.get(sc, {}).get(mp) or {})
            if mine is None:
                continue
            parts = []
            for peer in servers:
                if peer == mp:
                    continue
                theirs = headline(sc, results.get(sc, {}).get(peer) or {})
                if theirs:
                    parts.append(f"{peer} {mine / theirs:.2f}x")
            if parts:
                better = "lower" if sc in LOWER_IS_BETTER else "higher"
                rows.append((mp, sc, f"{', '.join(parts)}  ({better} is better for {mp})"))
    return rows


def print_report(results: dict[str, dict[str, Any]], servers: list[str], goals: list[dict[str, Any]],
                 p8: dict[str, dict[int, Any]]) -> str:
    lines = []
    for sc in SCENARIOS:
        if sc not in results or sc == "P8":
            continue
        lines.append(f"\n{sc}  {TITLES[sc]}")
        for s in servers:
            if s in results[sc]:
                lines.append(f"  {s:<18} {cell(sc, results[sc][s])}")
    if p8:
        lines.append(f"\nP8  {TITLES['P8']}")
        for s, by_w in p8.items():
            lines.append(f"  {s:<18} " + "   ".join(f"w={w}: {cell('P8', r)}" for w, r in sorted(by_w.items())))
    lines.extend(cpu_lines(results, servers))
    lines.extend(real_cpu_lines(results, servers))
    rows = ratio_rows(results, servers)
    if rows:
        lines.append("\nRatios (a2wsgi_mp figure / peer figure, same run):")
        for mp, sc, text in rows:
            lines.append(f"  {sc} {mp}: {text}")
    if p8:
        for mp in MP_NAMES:
            if mp in p8 and "gunicorn-sync" in p8:
                parts = [f"w={w}: {p8[mp][w]['good_rps'] / p8['gunicorn-sync'][w]['good_rps']:.2f}x"
                         for w in sorted(p8[mp]) if w in p8["gunicorn-sync"]
                         and p8["gunicorn-sync"][w].get("good_rps") and p8[mp][w].get("good_rps") is not None]
                lines.append(f"  P8 {mp} / gunicorn-sync: {', '.join(parts)}")
    if goals:
        lines.append("\nGoals:")
        for g in goals:
            mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[g["met"]]
            lines.append(f"  [{mark}] {g['server']}: {g['goal']}: {g['detail']}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def chart(results: dict[str, dict[str, Any]], servers: list[str], p8: dict[str, dict[int, Any]], path: str,
          title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("P1", "hello rps (c=32)", lambda r: r["good_rps"], False),
        ("P2", "CPU-bound rps", lambda r: r["good_rps"], False),
        ("P3", "/ping p99 ms under CPU load (log)", lambda r: r["loaded_p99_ms"], True),
        ("P4", "rps with slow uploaders / idle rps", lambda r: r["ratio"], False),
        ("P5", "upload seconds", lambda r: r["seconds"] if r["ok"] else None, False),
        ("P5", "upload: max RSS of any process, MiB", lambda r: r["max_rss_mib"], False),
        ("P6", "download seconds", lambda r: r["seconds"] if r["ok"] else None, False),
        ("P7", "sleep(50 ms) rps", lambda r: r["good_rps"], False),
        ("R1", "Django /admin/login/ rps", lambda r: r["good_rps"], False),
        ("R2", "Django ORM JSON rps", lambda r: r["good_rps"], False),
        ("R3", "Flask template page rps", lambda r: r["good_rps"], False),
    ]
    panels = [p for p in panels if p[0] in results]
    cpu = {s: r["cpu_per_request"] for s, r in results.get("P1", {}).items()
           if s in servers and (r or {}).get("cpu_per_request")}
    n = len(panels) + (1 if p8 else 0) + (1 if cpu else 0)
    if not n:
        return
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(servers)}
    i = -1
    for i, (sc, label, get, log) in enumerate(panels):
        ax = axes[i // cols][i % cols]
        names, values = [], []
        for s in servers:
            r = results[sc].get(s)
            try:
                v = get(r) if r else None
            except (KeyError, TypeError):
                v = None
            if v is not None:
                names.append(s)
                values.append(v)
        bars = ax.bar(range(len(names)), values, color=[colors[s] for s in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{sc}: {label}", fontsize=9)
        if log and values and min(values) > 0:
            ax.set_yscale("log")
        for b, v in zip(bars, values, strict=True):
            ax.annotate(f"{v:,.2f}" if v < 10 else f"{v:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
        if sc == "P4":
            ax.axhline(0.8, color="grey", ls="--", lw=0.8)
        if sc == "P3":
            ax.axhline(2.0, color="grey", ls="--", lw=0.8)
    if cpu:
        i += 1
        ax = axes[i // cols][i % cols]
        names = list(cpu)
        front = [cpu[s]["front_us"] for s in names]
        workers = [cpu[s]["workers_us"] for s in names]
        ax.bar(range(len(names)), front, label="front", color="tab:blue")
        ax.bar(range(len(names)), workers, bottom=front, label="workers", color="tab:orange")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title("P1: CPU us per hello request, by process role", fontsize=9)
        ax.legend(fontsize=7)
    if p8:
        i += 1
        ax = axes[i // cols][i % cols]
        for s, by_w in p8.items():
            ws = sorted(by_w)
            ax.plot(ws, [by_w[w]["good_rps"] for w in ws], marker="o", label=s, color=colors.get(s))
        ax.set_title("P8: CPU-bound rps by workers", fontsize=9)
        ax.set_xticks([1, 2, 4])
        ax.legend(fontsize=7)
    for j in range(i + 1, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp"
    fig.savefig(tmp, dpi=90, format="png")
    os.replace(tmp, path)
    plt.close(fig)
