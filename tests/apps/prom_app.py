"""prometheus_client in multiprocess mode ($PROMETHEUS_MULTIPROC_DIR): a request counter, a live
worker gauge, and /metrics aggregating every process's files (as its docs show)."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

REQUESTS = Counter("app_requests", "Requests served by the app.")
ALIVE = Gauge("app_workers_alive", "Worker processes alive.", multiprocess_mode="livesum")
ALIVE.set(1)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]
    REQUESTS.inc()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
