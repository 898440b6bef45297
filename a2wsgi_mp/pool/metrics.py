"""The pool's metrics: counted on the request path, exposed with prometheus_client.

:class:`RequestMetrics` takes every finished :class:`~a2wsgi_mp.record.Record`
(a bisect and a few additions: no lock, no label lookup on the request path)
and keeps raw counts.  :func:`snapshot` turns them and the pool's state into
one JSON-able dict (what ``a2wsgi-mp status`` reads, and what several fronts'
figures are summed from, :func:`merge`); :func:`families` turns a snapshot
into prometheus_client metric families, and :func:`render` into the text
exposition (Prometheus 0.0.4, or OpenMetrics when the scraper asks for it).
"""

from __future__ import annotations

import bisect
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from ..record import Record
    from .dispatch import Dispatcher

#: Upper bounds (seconds) of the request-duration histogram's buckets (+Inf implied).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: ... and of the queue-wait histogram's.
QUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Response classes by ``status // 100``; "none": the client left before any status was sent.
CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")

_COUNTERS = {
    "served": ("a2wsgi_mp_requests", "Requests answered by a worker."),
    "502": ("a2wsgi_mp_worker_crashes", "Requests answered 502 because their worker died."),
    "503": ("a2wsgi_mp_rejected", "Requests answered 503 (queue full, queue timeout, no worker)."),
    "504": ("a2wsgi_mp_timeouts", "Requests answered 504 at the hard per-request deadline."),
    "recycled": ("a2wsgi_mp_recycles", "Workers retired for max-requests, max-rss, max-lifetime or reload."),
    "respawned": ("a2wsgi_mp_respawns", "Workers started to replace one that died."),
    "killed": ("a2wsgi_mp_kills", "Workers killed by the supervisor (timeouts)."),
    "scaled_up": ("a2wsgi_mp_scale_ups", "Workers started by the elastic pool because requests queued."),
    "scaled_down": ("a2wsgi_mp_scale_downs", "Workers retired by the elastic pool after idling."),
    "direct": ("a2wsgi_mp_direct_streams", "Streamed responses whose body a worker wrote to the client itself."),
    "handed_over": ("a2wsgi_mp_handovers", "Connections the CLI's own protocol handed to uvicorn's (a body, HEAD, "
                    "a streamed answer, a pipelined mix...)."),
}


class RequestMetrics:
    """Counts of finished requests: two histograms, responses by class, bytes in and out."""

    __slots__ = ("duration", "duration_sum", "queue", "queue_sum", "classes", "bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.duration = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.duration_sum = 0.0
        self.queue = [0] * (len(QUEUE_BUCKETS) + 1)
        self.queue_sum = 0.0
        self.classes = [0] * len(CLASSES)
        self.bytes_in = 0
        self.bytes_out = 0

    def observe(self, r: "Record") -> None:
        duration = r.duration
        self.duration[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        queued = r.queued
        if queued:
            self.queue[bisect.bisect_left(QUEUE_BUCKETS, queued)] += 1
            self.queue_sum += queued
        elif r.pid is not None:  # an idle worker took it at once
            self.queue[0] += 1
        status = r.status
        self.classes[status // 100 if 100 <= status < 600 else 0] += 1
        self.bytes_in += r.bytes_in
        self.bytes_out += r.bytes_out

    def as_dict(self) -> dict[str, Any]:
        return {"duration": list(self.duration), "duration_sum": self.duration_sum, "queue": list(self.queue),
                "queue_sum": self.queue_sum, "classes": dict(zip(CLASSES, self.classes, strict=True)),
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}


def snapshot(dispatcher: "Dispatcher", requests: RequestMetrics) -> dict[str, Any]:
    """Everything the admin listener tells about one front, JSON-able."""
    stats = dispatcher.stats()
    front = os.getpid()
    for worker in stats["workers"]:
        worker["front"] = front
    slots = sum(dispatcher.config.threads for w in stats["workers"] if w["state"] in ("ready", "retiring"))
    return {
        "front": front,
        "time": time.time(),
        "fronts": [front],
        "stats": stats,
        "slots": slots,
        "requests": requests.as_dict(),
        "deaths": stats.pop("deaths", {}),  # (by reason: pool/reports.py)
    }


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Several fronts' snapshots as one: counts summed, workers listed together."""
    first, rest = snapshots[0], snapshots[1:]
    out = {**first, "fronts": [p for s in snapshots for p in s["fronts"]], "front": None}
    stats = dict(first["stats"])
    stats["workers"] = [w for s in snapshots for w in s["stats"]["workers"]]
    req = {**first["requests"], "classes": dict(first["requests"]["classes"])}
    deaths = Counter(first["deaths"])
    for s in rest:
        for key, value in s["stats"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "threads":
                stats[key] += value
        r = s["requests"]
        req["duration"] = [a + b for a, b in zip(req["duration"], r["duration"], strict=True)]
        req["queue"] = [a + b for a, b in zip(req["queue"], r["queue"], strict=True)]
        for key in ("duration_sum", "queue_sum", "bytes_in", "bytes_out"):
            req[key] += r[key]
        for key, value in r["classes"].items():
            req["classes"][key] = req["classes"].get(key, 0) + value
        deaths.update(s["deaths"])
        out["slots"] += s["slots"]
    out["stats"], out["requests"], out["deaths"] = stats, req, dict(deaths)
    return out


def _histogram(name: str, doc: str, bounds: tuple[float, ...], counts: list[int], total: float) -> Metric:
    family = HistogramMetricFamily(name, doc)
    running, buckets = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    family.add_metric([], buckets, total)
    return family


def families(snap: dict[str, Any]) -> Iterator[Metric]:
    """A snapshot as prometheus_client metric families."""
    stats, req = snap["stats"], snap["requests"]
    workers = stats["workers"]
    yield _histogram("a2wsgi_mp_request_duration_seconds", "Time from a request's arrival in the front to the end "
                     "of its response.", DURATION_BUCKETS, req["duration"], req["duration_sum"])
    yield _histogram("a2wsgi_mp_queue_wait_seconds", "Time a request waited for a free worker.",
                     QUEUE_BUCKETS, req["queue"], req["queue_sum"])
    responses = CounterMetricFamily("a2wsgi_mp_responses", "Responses by status class (none: the client left "
                                    "before a status was sent).", labels=["status"])
    for name in CLASSES:
        responses.add_metric([name], req["classes"].get(name, 0))
    yield responses
    yield CounterMetricFamily("a2wsgi_mp_request_body_bytes", "Request body bytes received.", req["bytes_in"])
    yield CounterMetricFamily("a2wsgi_mp_response_body_bytes", "Response body bytes sent.", req["bytes_out"])
    yield CounterMetricFamily("a2wsgi_mp_worker_busy_seconds", "Seconds worker threads spent on requests: "
                              "rate() of it over a2wsgi_mp_worker_slots is the pool's utilisation.",
                              stats["busy_seconds"])
    yield GaugeMetricFamily("a2wsgi_mp_worker_slots", "Worker threads able to serve (workers ready or retiring "
                            "x threads).", snap["slots"])
    deaths = CounterMetricFamily("a2wsgi_mp_worker_deaths", "Workers killed at the request timeout or lost "
                                 "(crash, OOM kill, max_rss_hard), by reason.", labels=["reason"])
    for reason, count in sorted(snap["deaths"].items()):
        deaths.add_metric([reason], count)
    yield deaths
    states = GaugeMetricFamily("a2wsgi_mp_workers", "Worker processes by state.", labels=["state"])
    by_state = Counter(w["state"] for w in workers)
    for state in sorted(set(by_state) | {"ready"}):
        states.add_metric([state], by_state.get(state, 0))
    yield states
    yield GaugeMetricFamily("a2wsgi_mp_queue_depth", "Requests waiting for a worker.", stats["queued"])
    yield GaugeMetricFamily("a2wsgi_mp_busy_slots", "Worker threads serving a request.",
                            sum(w["busy"] for w in workers))
    rss = GaugeMetricFamily("a2wsgi_mp_worker_rss_bytes", "Resident memory of each worker process.", labels=["pid"])
    served = GaugeMetricFamily("a2wsgi_mp_worker_requests", "Requests served by each worker process.",
                               labels=["pid"])
    for w in workers:
        if w["pid"]:
            rss.add_metric([str(w["pid"])], w["rss"])
            served.add_metric([str(w["pid"])], w["requests"])
    yield rss
    yield served
    for key, (name, doc) in _COUNTERS.items():
        yield CounterMetricFamily(name, doc, stats.get(key, 0))


class _Snapshot(Collector):
    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def collect(self) -> Iterable[Metric]:
        return families(self.snap)


def render(snap: dict[str, Any], accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of a snapshot's exposition, in the format ``accept`` asks for."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snap))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
