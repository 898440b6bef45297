"""``gunicorn -k a2wsgi_mp.gunicorn.PoolWorker``: end to end with a real
gunicorn arbiter, plus unit tests of the worker's settings, signal and
heartbeat logic.

Every wait is bounded; every process started here is killed by pid in teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import httpx
import psutil
import pytest

pytest.importorskip("gunicorn")

from gunicorn.config import Config as GunicornConfig  # noqa: E402

from a2wsgi_mp.gunicorn import worker as gw  # noqa: E402

from .serverproc import free_port, until, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKER = "a2wsgi_mp.gunicorn.PoolWorker"
#: The path published before 0.3, in every user's config: it must keep working.
OLD_WORKER = "a2wsgi_mp.workers.gunicorn.PoolWorker"
APP = "tests.apps.gunicorn_app:application"

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- harness


class Gunicorn:
    """A gunicorn arbiter subprocess; ``close()`` kills it and every descendant by pid."""

    def __init__(self, tmp_path: Path, *args: str, app: str = APP, wait: bool = True, worker: str = WORKER) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.markers = tmp_path / "markers"
        self.markers.mkdir(exist_ok=True)
        self.log_path = tmp_path / "gunicorn.log"
        env = dict(os.environ, GUNICORN_TEST_MARKERS=str(self.markers), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "gunicorn", "-k", worker, "-b", f"127.0.0.1:{self.port}",
               "--no-control-socket", "--log-level", "info", *args, app]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.seen: set[int] = {self.proc.pid}
        if wait:
            wait_for(self.ready, 30, what=f"gunicorn to serve on {self.url}\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + "/", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def descendants(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        self.seen.update(p.pid for p in found)
        return found

    def workers(self) -> list[psutil.Process]:
        """The gunicorn workers (the arbiter's children)."""
        try:
            found = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return []
        self.seen.update(p.pid for p in found)
        return found

    def one_worker(self) -> psutil.Process:
        return wait_for(lambda: (self.workers() or [None])[0], 30, what="a gunicorn worker")

    def pool_pids(self, worker: psutil.Process) -> set[int]:
        """The pool processes of one gunicorn worker: its zygote's children."""
        pids: set[int] = set()
        try:
            for zygote in worker.children():
                pids.update(p.pid for p in zygote.children())
        except psutil.Error:
            pass
        self.seen.update(pids)
        return pids

    def marks(self, prefix: str) -> list[Path]:
        return sorted(self.markers.glob(f"{prefix}-*"))

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"gunicorn did not exit within {timeout} s:\n{self.log()}") from None

    def close(self) -> None:
        self.descendants()
        for pid in sorted(self.seen, reverse=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


@pytest.fixture
def start(tmp_path: Path):
    servers: list[Gunicorn] = []

    def _start(*args: str, **kwargs: Any) -> Gunicorn:
        server = Gunicorn(tmp_path, *args, **kwargs)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.close()


def get(url: str, **kwargs: Any) -> httpx.Response:
    # A fresh connection per request: an idle keep-alive connection closed by
    # a stopping worker is a race every HTTP server has, not what these test.
    kwargs.setdefault("timeout", 30)
    headers = {"connection": "close", **kwargs.pop("headers", {})}
    return httpx.get(url, headers=headers, **kwargs)


# ---------------------------------------------------------------- end to end


def test_serves_through_pool_processes(start) -> None:
    g = start("--threads", "2", "-w", "1")
    worker = g.one_worker()
    pool = wait_for(lambda: g.pool_pids(worker) if len(g.pool_pids(worker)) == 2 else None, 20,
                    what="two pool processes (--threads 2)")
    pids = set()
    for _ in range(10):
        r = get(g.url + "/")
        assert r.status_code == 200
        pids.add(int(r.headers["x-pid"]))
    assert pids <= pool and worker.pid not in pids
    r = httpx.post(g.url + "/echo", content=b"x" * 300_000, timeout=30)
    assert r.status_code == 200 and r.content == b"x" * 300_000
    # gunicorn's forwarded_allow_ips (127.0.0.1 by default) and secure_scheme_headers
    assert get(g.url + "/environ", headers={"x-forwarded-proto": "https"}).json()["wsgi.url_scheme"] == "https"
    assert get(g.url + "/environ", headers={"x-forwarded-ssl": "on"}).json()["wsgi.url_scheme"] == "https"
    assert get(g.url + "/environ").json()["wsgi.url_scheme"] == "http"
    # (those take the fast path, where the front's own code decides the scheme: and refuses this)
    assert get(g.url + "/environ", headers={"x-forwarded-ssl": "on", "x-forwarded-proto": "http"}).status_code == 400
    # limit_request_line / limit_request_fields
    assert get(g.url + "/" + "a" * 5000).status_code == 414


def test_old_worker_class_path_still_serves(start) -> None:
    """``-k a2wsgi_mp.workers.gunicorn.PoolWorker`` (the path in users' configs) is the same class."""
    from a2wsgi_mp.workers import gunicorn as old

    assert old.PoolWorker is gw.PoolWorker and old.PoolH11Worker is gw.PoolH11Worker
    g = start("--threads", "1", "-w", "1", worker=OLD_WORKER)
    worker = g.one_worker()
    pool = wait_for(lambda: g.pool_pids(worker), 20, what="a pool process")
    r = get(g.url + "/")
    assert r.status_code == 200 and int(r.headers["x-pid"]) in pool
    assert f"Using worker: {OLD_WORKER}" in g.log()


def test_hup_reload_drops_no_request(start) -> None:
    g = start("--threads", "2", "-w", "2", "--graceful-timeout", "20")
    old_workers = {p.pid for p in g.workers()}
    assert len(old_workers) == 2
    failures: list[str] = []
    served_by: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                r = get(g.url + "/slow?s=0.05&tag=hup")
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    served_by.append(int(r.headers["x-pid"]))
            except httpx.HTTPError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(served_by) >= 20, 30, what="requests before the reload")
        os.kill(g.proc.pid, signal.SIGHUP)
        wait_for(lambda: not (old_workers & {p.pid for p in g.workers()}) and len(g.workers()) == 2, 60,
                 what=f"the old workers to be replaced\n{g.log()}")
        mark = len(served_by)
        wait_for(lambda: len(served_by) >= mark + 20, 30, what="requests after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    assert "Handling signal: hup" in g.log().lower() or "hang up" in g.log().lower()


def test_term_lets_inflight_request_finish(start) -> None:
    g = start("--threads", "1", "-w", "1", "--graceful-timeout", "20", "--timeout", "60")
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            result["response"] = get(g.url + "/slow?s=2&tag=term")
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: g.marks("started-term"), 20, what="the slow request to start")
    os.kill(g.proc.pid, signal.SIGTERM)
    t.join(60)
    assert "error" not in result, result.get("error")
    response = result["response"]
    assert response.status_code == 200 and response.text.startswith("slept 2")
    assert g.wait_exit(60) == 0


def test_sigkill_of_worker_leaves_no_orphans(start) -> None:
    g = start("--threads", "2", "-w", "1")
    worker = g.one_worker()
    wait_for(lambda: len(g.pool_pids(worker)) == 2, 20, what="the pool processes")
    doomed = worker.children(recursive=True)
    assert len(doomed) >= 3  # the zygote and two pool processes
    worker.kill()
    gone, alive = psutil.wait_procs(doomed, timeout=15)
    assert not alive, f"orphaned pool processes: {alive}"


def test_preload_app_pool_forks_from_the_loaded_app(start) -> None:
    g = start("--threads", "2", "-w", "1", "--preload")
    worker = g.one_worker()
    wait_for(lambda: len(g.pool_pids(worker)) == 2, 20, what="the pool processes")
    r = get(g.url + "/")
    assert r.status_code == 200 and int(r.headers["x-pid"]) in g.pool_pids(worker)
    # preload_app: the pool's zygote (a fresh interpreter) preloads the app URI.
    (zygote,) = worker.children()
    assert " ".join(zygote.cmdline()).startswith("gunicorn: pool zygote (preloaded) [")
    doomed = worker.children(recursive=True)
    worker.kill()
    _, alive = psutil.wait_procs(doomed, timeout=15)
    assert not alive, f"orphaned pool processes: {alive}"
    wait_for(g.ready, 30, what="the replacement worker")


def test_boot_failure_halts_the_arbiter(start) -> None:
    g = start("--threads", "1", "-w", "2", app="tests.apps.gunicorn_broken:application", wait=False)
    code = g.wait_exit(90)
    assert code != 0
    log = g.log()
    assert "gunicorn_broken" in log
    assert "exited with code 3" in log  # WORKER_BOOT_ERROR, so the arbiter halts
    assert "Worker failed to boot" in log


def test_max_requests_recycles_pool_processes(start) -> None:
    g = start("--threads", "1", "-w", "1", "--max-requests", "3", "--max-requests-jitter", "1")
    worker = g.one_worker()
    pids = []
    for _ in range(24):
        r = get(g.url + "/")
        assert r.status_code == 200, r.text
        pids.append(int(r.headers["x-pid"]))
    assert len(set(pids)) >= 5  # each pool process serves at most 4
    assert max(pids.count(p) for p in set(pids)) <= 4
    # the gunicorn worker itself does not recycle on max_requests
    assert g.one_worker().pid == worker.pid


def test_request_timeout_is_a_real_per_request_timeout(start) -> None:
    g = start("--threads", "1", "-w", "1", "--timeout", "2")
    worker = g.one_worker()
    r = get(g.url + "/slow?s=30&tag=timeout")
    assert r.status_code == 504
    # the hung pool process was replaced; the gunicorn worker lived on
    assert get(g.url + "/").status_code == 200
    assert g.one_worker().pid == worker.pid


def test_hooks_and_quick_exit(start) -> None:
    g = start("--threads", "1", "-w", "1", "-c", "python:tests.apps.gunicorn_hooks")
    worker = g.one_worker()
    wait_for(lambda: g.marks("post_worker_init"), 10, what="post_worker_init")
    assert json.loads(g.marks("post_worker_init")[0].read_text()) == {"pool": "WSGIPool"}
    assert get(g.url + "/hooked?x=1").status_code == 200
    pre = [json.loads(p.read_text()) for p in g.marks("pre_request")]
    assert {"method": "GET", "path": "/hooked", "uri": "/hooked?x=1"} in pre
    # post_request runs once the response is out: wait for it
    post = wait_for(lambda: [r for r in (json.loads(p.read_text()) for p in g.marks("post_request"))
                             if r["path"] == "/hooked"], 10, what="post_request")
    assert post[0]["code"] == 200 and post[0]["status"] == "200 OK"
    assert post[0]["PATH_INFO"] == "/hooked" and post[0]["sent"] > 0
    assert get(g.url + "/refused").status_code == 500
    # QUIT to the worker: quick exit through worker_int; worker_exit runs; the arbiter replaces it
    pool = g.pool_pids(worker)
    os.kill(worker.pid, signal.SIGQUIT)
    wait_for(lambda: g.marks("worker_int"), 15, what="worker_int")
    wait_for(lambda: g.marks("worker_exit"), 15, what="worker_exit")
    _, alive = psutil.wait_procs([worker], timeout=15)
    assert not alive
    wait_for(lambda: not any(_running(p) for p in pool), 15, what="the pool processes to go")
    wait_for(g.ready, 30, what="the replacement worker")
    # exit code 0: the arbiter logs only non-zero codes and deaths by signal
    assert f"Worker (pid:{worker.pid}) exited with code" not in g.log()
    assert f"Worker (pid:{worker.pid}) was sent" not in g.log()


def test_gunicorn_config_process_hooks_run_for_the_pool_processes(start) -> None:
    """post_fork and worker_exit in each pool process, child_exit in the front when one ends
    (besides gunicorn's own calls for its worker): OpenTelemetry, database resets and
    prometheus_client's mark_process_dead then work under PoolWorker as under a sync worker."""
    g = start("--threads", "2", "-w", "1", "-c", "python:tests.apps.gunicorn_pool_hooks")
    worker = g.one_worker()
    pool = wait_for(lambda: len(g.pool_pids(worker)) == 2 and g.pool_pids(worker), 30, what="2 pool processes")

    def marks(name: str) -> list[dict]:
        return [json.loads(p.read_text()) for p in g.marks(name)]

    # post_fork: by gunicorn in its worker, and by the pool in each pool process (about itself)
    wait_for(lambda: {m["in"] for m in marks("post_fork")} >= pool | {worker.pid}, 15, what="post_fork everywhere")
    assert all(m["in"] == m["worker"] for m in marks("post_fork"))
    victim, survivor = sorted(pool)
    os.kill(victim, signal.SIGKILL)  # a crash: no worker_exit, but child_exit in the front
    wait_for(lambda: any(m["worker"] == victim for m in marks("child_exit")), 15,
             what="child_exit for the pool process")
    assert [m["in"] for m in marks("child_exit") if m["worker"] == victim] == [worker.pid]
    assert not any(m["in"] == victim for m in marks("worker_exit"))
    os.kill(worker.pid, signal.SIGTERM)  # graceful: each pool process leaves of its own accord
    wait_for(lambda: any(m["in"] == survivor for m in marks("worker_exit")), 15, what="worker_exit in a pool process")
    assert [m["worker"] for m in marks("worker_exit") if m["in"] == survivor] == [survivor]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_abort_calls_worker_abort_and_exits_1(start) -> None:
    g = start("--threads", "2", "-w", "1", "-c", "python:tests.apps.gunicorn_hooks")
    worker = g.one_worker()
    wait_for(lambda: len(g.pool_pids(worker)) == 2, 20, what="the pool processes")
    doomed = worker.children(recursive=True)
    os.kill(worker.pid, signal.SIGABRT)
    wait_for(lambda: g.marks("worker_abort"), 15, what="worker_abort")
    gone, alive = psutil.wait_procs(doomed, timeout=15)
    assert not alive
    wait_for(lambda: f"Worker (pid:{worker.pid}) exited with code 1" in g.log(), 15,
             what=f"the arbiter to report exit code 1\n{g.log()}")
    assert f"Worker (pid:{worker.pid}) was sent SIGABRT" not in g.log()
    assert not list(REPO.glob("core*"))
    wait_for(g.ready, 30, what="the replacement worker")


def test_access_log_format_is_gunicorns(start) -> None:
    """gunicorn's --access-logfile and --access-log-format, with our atoms too, refusals included."""
    fmt = 'GLOG %(h)s "%(r)s" %(s)s %(b)s %({x-trace}i)s %(p)s w=%(w)s q=%(Q)s %(R)s'
    g = start("-w", "1", "--threads", "1", "--access-logfile", "-", "--access-logformat", fmt)
    pool = wait_for(lambda: g.pool_pids(g.one_worker()) or None, 20, what="the pool process")
    assert get(g.url + "/?traced", headers={"x-trace": "abc"}).status_code == 200
    assert get(g.url + "/" + "a" * 5000).status_code == 414

    def lines() -> list[str]:
        return [line for line in g.log().splitlines() if line.startswith("GLOG ") and "/?traced" in line
                or line.startswith("GLOG ") and " 414 " in line]

    found = wait_for(lambda: lines() if len(lines()) == 2 else None, 10, what="two access lines")
    traced = next(line for line in found if "/?traced" in line).split()
    front = g.one_worker().pid
    assert traced[1:7] == ["127.0.0.1", '"GET', '/?traced', 'HTTP/1.1"', "200", traced[6]]
    assert traced[7] == "abc" and traced[8] == f"<{front}>" and int(traced[9][2:]) in pool
    assert traced[10].startswith("q=0.") and traced[11] == "-"
    assert next(line for line in found if " 414 " in line).endswith("w=- q=0.000000 URI Too Long")


def test_each_worker_has_an_admin_socket_and_status_sums_them(start, tmp_path: Path) -> None:
    pattern = tmp_path / "admin-{pid}.sock"
    g = start("-w", "2", "--threads", "1", "-e", f"A2WSGI_MP_ADMIN_SOCKET={pattern}")
    fronts = wait_for(lambda: w if len(w := g.workers()) == 2 else None, 30, what="two gunicorn workers")
    sockets = {tmp_path / f"admin-{p.pid}.sock" for p in fronts}
    wait_for(lambda: all(s.exists() for s in sockets), 30, what="an admin socket per gunicorn worker")
    for _ in range(6):
        assert get(g.url + "/").status_code == 200
    cmd = [sys.executable, "-m", "a2wsgi_mp", "status", "--json", "--admin-socket", str(tmp_path / "admin-*.sock")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert sorted(snap["fronts"]) == sorted(p.pid for p in fronts)
    assert len(snap["stats"]["workers"]) == 2 and sum(snap["requests"]["duration"]) >= 6


def test_usr1_reopens_logs(start, tmp_path: Path) -> None:
    errlog = tmp_path / "error.log"
    g = start("--threads", "1", "-w", "1", "--error-logfile", str(errlog))
    worker = g.one_worker()
    moved = tmp_path / "error.log.1"
    errlog.rename(moved)
    os.kill(worker.pid, signal.SIGUSR1)
    wait_for(errlog.exists, 10, what="the error log to be reopened")
    os.kill(worker.pid, signal.SIGWINCH)  # ignored
    assert get(g.url + "/").status_code == 200
    assert g.one_worker().pid == worker.pid


# ---------------------------------------------------------------- unit tests


class FakeLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []
        self.reopened = 0
        self.loglevel = 20
        import logging

        self.error_log = logging.getLogger("test.gunicorn.error")
        self.access_log = logging.getLogger("test.gunicorn.access")

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level in ("debug", "info", "warning", "error", "exception", "critical"):
            return lambda msg, *args, **kw: self.records.append((level, msg % args if args else msg))
        raise AttributeError(level)

    def reopen_files(self) -> None:
        self.reopened += 1


class FakeTmp:
    def __init__(self) -> None:
        self.beats = 0

    def notify(self) -> None:
        self.beats += 1

    def close(self) -> None:
        pass


def make_worker(tmp_path: Path, **settings: Any) -> gw.PoolWorker:
    cfg = GunicornConfig()
    cfg.set("worker_tmp_dir", str(tmp_path))
    for key, value in settings.items():
        cfg.set(key, value)
    app = SimpleNamespace(app_uri=APP, wsgi=lambda: None)
    worker = gw.PoolWorker(1, os.getppid(), [], app, cfg.timeout / 2, cfg, FakeLog())
    worker.tmp.close()
    worker.tmp = FakeTmp()
    return worker


def test_settings_mapping(tmp_path: Path) -> None:
    w = make_worker(tmp_path, threads=3, timeout=40, graceful_timeout=7, max_requests=100,
                    max_requests_jitter=10, backlog=64, keepalive=9, worker_connections=55,
                    forwarded_allow_ips="10.0.0.1,10.0.0.2", limit_request_fields=10,
                    limit_request_field_size=100, limit_request_line=200)
    pool = w.pool_options(APP)
    assert pool == {"workers": 3, "threads": 1, "timeout": 40.0, "graceful_timeout": 7.0, "max_requests": 100,
                    "max_requests_jitter": 10, "backlog": 64, "access_log": False,
                    "access_log_format": GunicornConfig().access_log_format}
    assert w.pool_options(lambda e, s: [])["start_method"] == "fork"
    uv = w.uvicorn_options()
    assert uv["timeout_keep_alive"] == 9 and uv["limit_concurrency"] == 55
    assert uv["forwarded_allow_ips"] == ["10.0.0.1", "10.0.0.2"] and uv["proxy_headers"] is True
    assert uv["lifespan"] == "off" and uv["timeout_graceful_shutdown"] == 7
    assert uv["h11_max_incomplete_event_size"] == 16 * 1024  # 200 + 10 * 102 is below h11's default
    assert "limit_max_requests" not in uv  # the gunicorn worker does not recycle itself
    w.load_wsgi()
    assert w.pool is not None and w.pool.app_ref == APP  # the front does not import the app
    assert isinstance(w.config.app, gw.GunicornFront)


def test_ssl_settings_reach_uvicorn(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    w = make_worker(tmp_path, certfile=str(cert), keyfile=str(key))
    uv = w.uvicorn_options()
    assert uv["ssl_certfile"] == str(cert) and uv["ssl_keyfile"] == str(key)
    assert callable(uv.get("ssl_context_factory")) or uv.get("ssl_ca_certs", "") is None


def asgi_call(app: Any, scope: dict[str, Any], body: bytes = b"") -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(inner)(scope, receive, send))
    return sent[0]["status"], seen


def http_scope(path: str = "/", headers: list[tuple[bytes, bytes]] = (), client: Any = ("127.0.0.1", 5000)):  # type: ignore[assignment]
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": list(headers), "scheme": "http", "client": client, "http_version": "1.1"}


def test_front_limits_and_secure_scheme(tmp_path: Path) -> None:
    w = make_worker(tmp_path, limit_request_line=100, limit_request_fields=3, limit_request_field_size=50,
                    forwarded_allow_ips="127.0.0.1")
    front = lambda inner: gw.GunicornFront(inner, w.cfg)  # noqa: E731
    assert asgi_call(front, http_scope("/ok"))[0] == 200
    assert asgi_call(front, http_scope("/" + "a" * 100))[0] == 414
    assert asgi_call(front, http_scope(headers=[(b"a", b"1")] * 4))[0] == 431
    assert asgi_call(front, http_scope(headers=[(b"a", b"1" * 60)]))[0] == 431
    status, seen = asgi_call(front, http_scope(headers=[(b"x-forwarded-ssl", b"on")]))
    assert status == 200 and seen["scheme"] == "https"
    status, seen = asgi_call(front, http_scope(headers=[(b"x-forwarded-ssl", b"on")], client=("10.1.1.1", 1)))
    assert status == 200 and seen["scheme"] == "http"  # untrusted peer
    bad = [(b"x-forwarded-ssl", b"on"), (b"x-forwarded-proto", b"http")]
    assert asgi_call(front, http_scope(headers=bad))[0] == 400
    unlimited = make_worker(tmp_path, limit_request_line=0)
    assert asgi_call(lambda inner: gw.GunicornFront(inner, unlimited.cfg), http_scope("/" + "a" * 9000))[0] == 200
    # limit_request_field_size=0 is unlimited in gunicorn, and in the bounded protocol (1 MiB): here too.
    unlimited = make_worker(tmp_path, limit_request_field_size=0)
    big = http_scope(headers=[(b"x-big", b"v" * 9000)])
    assert asgi_call(lambda inner: gw.GunicornFront(inner, unlimited.cfg), big)[0] == 200


def test_hook_middleware_passes_gunicorn_like_objects(tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []

    def pre_request(worker: Any, req: Any) -> None:
        calls.append(("pre", (req.method, req.path, req.version, req.headers)))

    def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
        calls.append(("post", (environ["PATH_INFO"], resp.status, resp.status_code, resp.sent)))

    w = make_worker(tmp_path, pre_request=pre_request, post_request=post_request)
    assert gw._customised(w.cfg, "pre_request") and gw._customised(w.cfg, "post_request")
    assert not gw._customised(make_worker(tmp_path).cfg, "pre_request")
    status, _ = asgi_call(lambda inner: gw.HookMiddleware(inner, w, True, True),
                          http_scope("/p", headers=[(b"x-a", b"b")]))
    assert status == 200
    assert calls == [("pre", ("GET", "/p", (1, 1), [("X-A", "b")])), ("post", ("/p", "200 OK", 200, 2))]


def test_heartbeat_notifies_and_ends_the_worker_when_told(tmp_path: Path) -> None:
    w = make_worker(tmp_path, timeout=1)  # self.timeout 0.5: a beat at least every 0.25 s
    assert w.heartbeat_interval() == 0.25

    async def scenario() -> None:
        task = asyncio.ensure_future(w.heartbeat())
        assert await until(lambda: w.tmp.beats >= 1, 10)
        assert w._stop_deadline is None
        w.alive = False  # gunicorn's handle_exit, or anything else clearing it
        assert await until(lambda: w._stop_deadline is not None, 10)
        beats = w.tmp.beats
        assert await until(lambda: w.tmp.beats > beats, 10)  # still beating while draining
        task.cancel()

    asyncio.run(scenario())


def test_heartbeat_stops_the_worker_when_the_arbiter_is_gone(tmp_path: Path) -> None:
    w = make_worker(tmp_path)
    w.ppid = -1  # not our parent: the arbiter died and we were re-parented

    async def scenario() -> None:
        task = asyncio.ensure_future(w.heartbeat())
        await until(lambda: w._stop_deadline is not None, 10)
        task.cancel()

    asyncio.run(scenario())
    assert w._stop_deadline is not None and not w.alive
    assert any("Parent changed" in msg for _, msg in w.log.records)


def test_signal_logic(tmp_path: Path) -> None:
    events: list[str] = []
    w = make_worker(tmp_path, graceful_timeout=10, worker_int=lambda worker: events.append("int"),
                    worker_abort=lambda worker: events.append("abort"))
    server = SimpleNamespace(should_exit=False, force_exit=False,
                             config=SimpleNamespace(timeout_graceful_shutdown=None))
    w.server = server  # type: ignore[assignment]
    w._on_term()  # TERM: graceful
    assert not w.alive and server.should_exit and not server.force_exit
    assert 0 < server.config.timeout_graceful_shutdown <= 10 - w.POOL_STOP_RESERVE
    w._on_quit(signal.SIGQUIT)  # QUIT: quick, through worker_int
    assert events == ["int"] and server.force_exit and w._quick
    w._on_quit(signal.SIGINT)  # a second one does not call worker_int again
    assert events == ["int"]
    with pytest.raises(SystemExit) as exc:
        w.handle_abort(signal.SIGABRT, None)
    assert exc.value.code == 1 and events == ["int", "abort"]
    w.log.reopened = 0
    w.handle_usr1(signal.SIGUSR1, None)
    assert w.log.reopened == 1
    w.handle_winch(signal.SIGWINCH, None)  # ignored


def test_boot_failure_exit_code(tmp_path: Path) -> None:
    w = make_worker(tmp_path)
    w.app = SimpleNamespace(app_uri="tests.apps.gunicorn_broken:application", wsgi=lambda: None)
    w.cfg.set("threads", 1)
    w.load_wsgi()
    w._install_loop_signals = lambda loop: None  # type: ignore[method-assign]
    with pytest.raises(SystemExit) as exc:
        w.run()
    assert exc.value.code == gw.WORKER_BOOT_ERROR


def test_the_fast_path_never_goes_past_a_layer_that_must_see_every_request(tmp_path: Path) -> None:
    """find_pool walks the layers down to the pool for the fast path (and the CLI's lean protocol):
    not past the pre_request/post_request hooks, nor past a GunicornFront with a scheme header of
    the user's that is not an X-Forwarded-* one (a request without forwarded headers may still
    carry it); the default GunicornFront changes nothing such a request has, and is walked past."""
    from a2wsgi_mp import WSGIPool
    from a2wsgi_mp.pool.fastpath import find_pool

    pool = WSGIPool("tests.apps.gunicorn_app:app", workers=1)  # (never started)
    w = make_worker(tmp_path)
    assert find_pool(gw.GunicornFront(pool, w.cfg)) is pool
    assert find_pool(gw.GunicornFront(gw.HookMiddleware(pool, w, True, False), w.cfg)) is None
    custom = make_worker(tmp_path, secure_scheme_headers={"X-Scheme": "https"})
    assert find_pool(gw.GunicornFront(pool, custom.cfg)) is None
