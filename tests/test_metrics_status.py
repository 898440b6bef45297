"""Metrics and the status view: the admin listener of a real ``a2wsgi-mp``,
scraped by a real Prometheus when one is installed, ``a2wsgi-mp status`` in a
real terminal (tmux), and ``--fronts 2`` summed by the parent."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from a2wsgi_mp.admin import fetch
from a2wsgi_mp.pool import metrics
from a2wsgi_mp.record import Record

from .serverproc import HOST, REPO, Server, free_port, subprocess_env, wait_for

APP = "tests.apps.core_app:app"


# ------------------------------------------------------------------ units


def _record(duration: float, status: int, queued: float = 0.0, pid: int | None = 1) -> Record:
    r = Record({}, 0.0)
    r.duration, r.status, r.queued, r.pid, r.bytes_in, r.bytes_out = duration, status, queued, pid, 3, 10
    return r


def _snapshot(requests: metrics.RequestMetrics, busy: float = 0.0) -> dict:
    stats = {"workers": [], "threads": 1, "queued": 0, "busy_seconds": busy,
             **{key: 0 for key in ("served", "502", "503", "504", "recycled", "respawned", "killed", "scaled_up",
                                   "scaled_down")}}
    return {"front": 1, "fronts": [1], "time": 0.0, "stats": stats, "slots": 2, "requests": requests.as_dict(),
            "deaths": {"crash": 1}}


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_histograms_are_cumulative_and_classes_counted() -> None:
    m = metrics.RequestMetrics()
    for r in (_record(0.0005, 200), _record(0.003, 404, 0.002), _record(0.003, 0, pid=None),
              _record(100.0, 503, pid=None, queued=0.3)):
        m.observe(r)
    body, content_type = metrics.render(_snapshot(m))
    assert content_type.startswith("text/plain; version=0.0.4")
    s = _samples(body.decode())
    dur = "a2wsgi_mp_request_duration_seconds_bucket"
    assert s[(dur, (("le", "0.001"),))] == 1 and s[(dur, (("le", "0.005"),))] == 3
    assert s[(dur, (("le", "60.0"),))] == 3 and s[(dur, (("le", "+Inf"),))] == 4
    assert s[("a2wsgi_mp_request_duration_seconds_count", ())] == 4
    # Queue wait: only requests that asked for a worker (a pid, or time queued); not the third.
    assert s[("a2wsgi_mp_queue_wait_seconds_count", ())] == 3
    assert s[("a2wsgi_mp_queue_wait_seconds_bucket", (("le", "0.0025"),))] == 2
    assert s[("a2wsgi_mp_queue_wait_seconds_sum", ())] == pytest.approx(0.302)
    for name, value in (("none", 1), ("2xx", 1), ("4xx", 1), ("5xx", 1), ("3xx", 0)):
        assert s[("a2wsgi_mp_responses_total", (("status", name),))] == value
    assert s[("a2wsgi_mp_request_body_bytes_total", ())] == 12 and s[("a2wsgi_mp_response_body_bytes_total", ())] == 40
    assert s[("a2wsgi_mp_worker_deaths_total", (("reason", "crash"),))] == 1
    # OpenMetrics for a scraper that asks for it.
    body, content_type = metrics.render(_snapshot(m), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_merge_sums_fronts() -> None:
    a, b = metrics.RequestMetrics(), metrics.RequestMetrics()
    a.observe(_record(0.01, 200))
    b.observe(_record(0.01, 200))
    b.observe(_record(2.0, 500))
    sa, sb = _snapshot(a, 1.5), _snapshot(b, 2.0)
    sb["front"], sb["fronts"] = 2, [2]
    sa["stats"]["workers"] = [{"id": 1, "pid": 11, "state": "ready", "busy": 0, "rss": 1, "requests": 1}]
    sb["stats"]["workers"] = [{"id": 1, "pid": 22, "state": "ready", "busy": 1, "rss": 1, "requests": 2}]
    merged = metrics.merge([sa, sb])
    assert merged["fronts"] == [1, 2] and [w["pid"] for w in merged["stats"]["workers"]] == [11, 22]
    assert sum(merged["requests"]["duration"]) == 3 and merged["requests"]["classes"]["2xx"] == 2
    assert merged["stats"]["busy_seconds"] == 3.5 and merged["stats"]["threads"] == 1
    assert merged["deaths"] == {"crash": 2} and merged["slots"] == 4


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin")
    sock = tmp / "admin.sock"
    admin_port = free_port()
    srv = Server.cli(APP, "--workers", "2", "--admin-socket", str(sock), "--admin-bind", f"{HOST}:{admin_port}",
                     "--no-access-log", ready_path="/hello")
    srv.admin_socket, srv.admin_bind = sock, f"{HOST}:{admin_port}"  # type: ignore[attr-defined]
    with srv:
        yield srv


def _status(target: str) -> dict:
    status, body = asyncio.run(fetch(target, "/status"))
    assert status == 200, body
    return json.loads(body)


def test_admin_listener_serves_metrics_the_public_one_does_not(server) -> None:
    before = _samples(httpx.get(f"http://{server.admin_bind}/metrics", timeout=10).text)
    count0 = before[("a2wsgi_mp_request_duration_seconds_count", ())]
    for _ in range(5):
        assert httpx.get(server.url + "/hello", timeout=10).status_code == 200
    assert httpx.post(server.url + "/upload", content=b"x" * 1000, timeout=10).status_code == 200
    public = httpx.get(server.url + "/metrics", timeout=10)
    assert public.status_code == 404 and public.text == "not found"  # the app's own 404: not ours
    s = _samples(httpx.get(f"http://{server.admin_bind}/metrics", timeout=10).text)
    assert s[("a2wsgi_mp_request_duration_seconds_count", ())] - count0 == 7
    assert s[("a2wsgi_mp_responses_total", (("status", "4xx"),))] >= 1
    assert s[("a2wsgi_mp_request_body_bytes_total", ())] >= 1000
    assert s[("a2wsgi_mp_worker_busy_seconds_total", ())] > 0 and s[("a2wsgi_mp_worker_slots", ())] == 2
    # The Unix socket answers the same figures, and a JSON status.
    status, text = asyncio.run(fetch(str(server.admin_socket), "/metrics"))
    assert status == 200 and b"a2wsgi_mp_queue_wait_seconds_bucket" in text
    assert asyncio.run(fetch(str(server.admin_socket), "/nope"))[0] == 404


def test_deaths_are_counted_by_reason(server) -> None:
    pids = server.worker_pids()
    victim = pids.pop()
    os.kill(victim, signal.SIGKILL)
    snap = wait_for(lambda: (s := _status(str(server.admin_socket)))["deaths"].get("crash") and s, 20)
    assert snap, "no crash counted"
    assert wait_for(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(), 20)
    s = _samples(httpx.get(f"http://{server.admin_bind}/metrics", timeout=10).text)
    assert s[("a2wsgi_mp_worker_deaths_total", (("reason", "crash"),))] >= 1


def test_status_command_text_and_json(server) -> None:
    cmd = [sys.executable, "-m", "a2wsgi_mp", "status", "--admin-socket", str(server.admin_socket)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=subprocess_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr
    for pid in server.worker_pids():
        assert str(pid) in out.stdout
    assert "PID" in out.stdout and "CURRENT REQUEST" in out.stdout and "1 front(s)" in out.stdout
    data = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=30,
                                     env=subprocess_env(), cwd=REPO).stdout)
    assert {w["pid"] for w in data["stats"]["workers"]} == server.worker_pids()
    missing = subprocess.run([sys.executable, "-m", "a2wsgi_mp", "status", "--admin-socket", "/nonexistent.sock"],
                             capture_output=True, text=True, timeout=30, env=subprocess_env(), cwd=REPO)
    assert missing.returncode == 1 and "cannot read /nonexistent.sock" in missing.stderr


def _sleep_age(screen: str) -> float | None:
    """The age shown for the worker serving GET /sleep, in seconds."""
    row = next((line for line in screen.splitlines() if "GET /sleep (" in line), None)
    if row is None:
        return None
    text = row.rsplit("(", 1)[1].split(")")[0]
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text[:-1])


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_status_watch_in_a_real_terminal(server, tmp_path: Path) -> None:
    """``a2wsgi-mp status --watch`` in tmux: the busy worker's row shows its request and its age."""
    tmux = ["tmux", "-L", f"a2wsgi-test-{os.getpid()}", "-f", "/dev/null"]
    env = subprocess_env()
    command = (f"cd {REPO} && PYTHONPATH={env['PYTHONPATH']} {sys.executable} -m a2wsgi_mp status "
               f"--admin-socket {server.admin_socket} --watch 0.3")
    slow = threading.Thread(target=httpx.get, args=(server.url + "/sleep?t=3",), kwargs={"timeout": 20})
    subprocess.run([*tmux, "new-session", "-d", "-x", "150", "-y", "30", command], check=True, timeout=10)
    try:
        slow.start()

        def pane() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True, timeout=10).stdout

        screen = wait_for(lambda: p if "GET /sleep (" in (p := pane()) else None, 15)
        assert screen, pane()
        print(screen)  # what a user sees (pytest -s)
        row = next(line for line in screen.splitlines() if "GET /sleep (" in line)
        assert int(row.split()[0]) in server.worker_pids() and " ready " in row
        assert screen.count("a2wsgi-mp status at") == 1  # redrawn in place, not scrolled
        first = _sleep_age(screen)
        assert first is not None
        # --watch redraws: the same request, older.
        assert wait_for(lambda: (age := _sleep_age(pane())) is not None and age >= first + 0.3, 10), pane()
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=10)
        slow.join(20)


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="the prometheus binary is not installed (Debian: apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_histograms(server, tmp_path: Path) -> None:
    for _ in range(3):
        httpx.get(server.url + "/hello", timeout=10)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: a2wsgi\n"
                      f"    static_configs:\n      - targets: ['{server.admin_bind}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address={HOST}:{port}"], stdout=log, stderr=subprocess.STDOUT)
    api = f"http://{HOST}:{port}/api/v1/query"

    def query(q: str) -> list:
        try:
            r = httpx.get(api, params={"query": q}, timeout=5)
        except httpx.HTTPError:
            return []
        return r.json()["data"]["result"] if r.status_code == 200 else []

    try:
        up = wait_for(lambda: query('up{job="a2wsgi"}') and query('up{job="a2wsgi"} == 1'), 60, 0.5)
        assert up, (tmp_path / "prometheus.log").read_text()
        count = wait_for(lambda: query("a2wsgi_mp_request_duration_seconds_count"), 30, 0.5)
        assert float(count[0]["value"][1]) >= 3
        p50 = query("histogram_quantile(0.5, a2wsgi_mp_request_duration_seconds_bucket)")
        assert p50 and 0 < float(p50[0]["value"][1]) < 1
        classes = {r["metric"]["status"] for r in query("a2wsgi_mp_responses_total")}
        assert {"2xx", "4xx", "5xx", "none"} <= classes
        assert query("a2wsgi_mp_queue_wait_seconds_bucket") and query("a2wsgi_mp_worker_busy_seconds_total")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_fronts_share_one_admin_listener(tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    with Server.cli(APP, "--fronts", "2", "--workers", "2", "--admin-socket", str(sock), "--no-access-log",
                    ready_path="/hello") as srv:
        def both() -> dict | None:
            status, body = asyncio.run(fetch(str(sock), "/status"))
            snap = json.loads(body) if status == 200 else None
            return snap if snap and len(snap["fronts"]) == 2 else None

        snap = wait_for(both, 30)
        assert snap, asyncio.run(fetch(str(sock), "/status"))
        fronts = set(snap["fronts"])
        assert {w["front"] for w in snap["stats"]["workers"]} == fronts and len(snap["stats"]["workers"]) == 2
        before = sum(snap["requests"]["duration"])
        for _ in range(10):
            assert httpx.get(srv.url + "/hello", headers={"connection": "close"}, timeout=10).status_code == 200
        after = _status(str(sock))
        assert sum(after["requests"]["duration"]) - before == 10
    assert not sock.exists()  # removed on the way out
