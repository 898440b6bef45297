"""The pool's state in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections import Counter
from typing import Any

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = {
    "served": ("a2wsgi_mp_requests_total", "Requests answered by a worker."),
    "502": ("a2wsgi_mp_worker_crashes_total", "Requests answered 502 because their worker died."),
    "503": ("a2wsgi_mp_rejected_total", "Requests answered 503 (queue full, queue timeout, no worker)."),
    "504": ("a2wsgi_mp_timeouts_total", "Requests answered 504 at the hard per-request deadline."),
    "recycled": ("a2wsgi_mp_recycles_total", "Workers retired for max-requests, max-rss, max-lifetime or reload."),
    "respawned": ("a2wsgi_mp_respawns_total", "Workers started to replace one that died."),
    "killed": ("a2wsgi_mp_kills_total", "Workers killed by the supervisor (timeouts)."),
    "scaled_up": ("a2wsgi_mp_scale_ups_total", "Workers started by the elastic pool because requests queued."),
    "scaled_down": ("a2wsgi_mp_scale_downs_total", "Workers retired by the elastic pool after idling."),
}


def render(stats: dict[str, Any]) -> bytes:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    states = Counter(w["state"] for w in stats["workers"])
    metric("a2wsgi_mp_workers", "gauge", "Worker processes by state.",
           [(f'{{state="{s}"}}', n) for s, n in sorted(states.items())] or [('{state="ready"}', 0)])
    metric("a2wsgi_mp_queue_depth", "gauge", "Requests waiting for a worker.", [("", stats["queued"])])
    metric("a2wsgi_mp_busy_slots", "gauge", "Worker threads serving a request.",
           [("", sum(w["busy"] for w in stats["workers"]))])
    metric("a2wsgi_mp_worker_rss_bytes", "gauge", "Resident memory of each worker process.",
           [(f'{{pid="{w["pid"]}"}}', w["rss"]) for w in stats["workers"] if w["pid"]])
    metric("a2wsgi_mp_worker_requests", "gauge", "Requests served by each worker process.",
           [(f'{{pid="{w["pid"]}"}}', w["requests"]) for w in stats["workers"] if w["pid"]])
    for key, (name, help_text) in _COUNTERS.items():
        metric(name, "counter", help_text, [("", stats[key])])
    metric("a2wsgi_mp_worker_deaths_total", "counter",
           "Workers killed at the request timeout or lost (crash, OOM kill, max_rss_hard), by reason.",
           [(f'{{reason="{r}"}}', n) for r, n in stats.get("deaths", {}).items()])
    return ("\n".join(lines) + "\n").encode()
