"""Preloading and the elastic pool, end to end through the CLI.

The app (tests/apps/preload_app.py) appends its pid to an import log each time
it is imported and serves the code version read at import time, so the tests
see who imported it, how often, and which code answers.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest

from .serverproc import Server, metrics, pid_gone, wait_for

APP = "tests.apps.preload_app"


class Deploy:
    """The app's version file and import log, in a temp directory."""

    def __init__(self, root: Path, version: str = "v1") -> None:
        self.version_file = root / "version"
        self.import_log = root / "imports"
        self.version_file.write_text(version)
        self.import_log.write_text("")

    def env(self) -> dict[str, str]:
        return {"PRELOAD_VERSION": str(self.version_file), "PRELOAD_LOG": str(self.import_log)}

    def importers(self) -> list[int]:
        return [int(line) for line in self.import_log.read_text().split()]

    def ship(self, version: str) -> None:
        self.version_file.write_text(version)


def start(deploy: Deploy, *options: str) -> Server:
    server = Server.cli(APP, "--metrics-path", "/metrics", "--no-access-log", *options, env=deploy.env())
    return server.start().wait_ready()


def get(url: str) -> dict:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


class Load:
    """Clients requesting ``path`` in a loop until stopped; every outcome recorded."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url = url
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url + "/sleep?0.01")
                    if response.status_code == 200:
                        self.versions[response.json()["version"]] += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


@pytest.fixture(scope="module")
def preloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Deploy]]:
    deploy = Deploy(tmp_path_factory.mktemp("preload"))
    server = start(deploy, "--preload", "--workers", "2")
    try:
        yield server, deploy
    finally:
        assert server.stop() == []


def test_preload_imports_the_app_once_in_the_zygote(preloaded: tuple[Server, Deploy]) -> None:
    server, deploy = preloaded
    (zygote,) = deploy.importers()
    assert zygote != server.pid  # never in the front
    assert psutil.Process(zygote).ppid() == server.pid
    workers = server.worker_pids()
    assert len(workers) == 2 and all(psutil.Process(pid).ppid() == zygote for pid in workers)
    seen = {get(server.url + "/")["pid"] for _ in range(10)}
    assert seen <= workers
    assert deploy.importers() == [zygote]  # the workers did not import it again


def test_without_preload_each_worker_imports_the_app(tmp_path: Path) -> None:
    deploy = Deploy(tmp_path)
    server = start(deploy, "--workers", "2")
    try:
        assert sorted(deploy.importers()) == sorted(server.worker_pids())
    finally:
        assert server.stop() == []


def test_reload_preloads_new_code_and_drops_nothing(preloaded: tuple[Server, Deploy]) -> None:
    server, deploy = preloaded
    old_zygote = deploy.importers()[-1]
    old_workers = server.worker_pids()
    with Load(server.url) as load:
        assert wait_for(lambda: load.versions["v1"] >= 20, 30), load.failures[:5]
        deploy.ship("v2")
        server.signal(signal.SIGHUP)
        assert wait_for(lambda: load.versions["v2"] >= 20, 60), server.log()[-3000:]
        mark = load.versions["v1"]
        assert wait_for(lambda: load.versions["v2"] >= 60, 60)
    assert not load.failures, load.failures[:5]
    assert load.versions["v1"] == mark  # once v2 answered steadily, v1 no longer did
    new_zygote = deploy.importers()[-1]
    assert len(deploy.importers()) == 2 and new_zygote != old_zygote
    assert wait_for(lambda: pid_gone(old_zygote), 10)
    workers = server.worker_pids()
    assert len(workers) == 2 and not workers & old_workers
    assert all(psutil.Process(pid).ppid() == new_zygote for pid in workers)


def test_failed_preload_on_reload_keeps_the_old_pool_serving(preloaded: tuple[Server, Deploy]) -> None:
    server, deploy = preloaded
    deploy.ship("good")
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: get(server.url + "/")["version"] == "good", 30)
    assert wait_for(lambda: len(server.worker_pids()) == 2, 30)
    workers = server.worker_pids()
    with Load(server.url) as load:
        deploy.ship("broken")
        server.signal(signal.SIGHUP)
        assert wait_for(lambda: "reload failed" in server.log(), 30), server.log()[-3000:]
        mark = sum(load.versions.values())
        assert wait_for(lambda: sum(load.versions.values()) >= mark + 20, 30)
    assert not load.failures, load.failures[:5]
    assert set(load.versions) == {"good"}
    assert server.worker_pids() == workers
    log = server.log()
    assert "deploy gone wrong" in log and "the old workers keep serving" in log
    # A fixed deploy reloads as usual.
    deploy.ship("fixed")
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: get(server.url + "/")["version"] == "fixed", 30)


def test_failed_preload_at_start_up_exits_3(tmp_path: Path) -> None:
    deploy = Deploy(tmp_path, "broken")
    server = Server.cli(APP, "--preload", env=deploy.env()).start()
    try:
        assert server.wait(60) == 3
        assert "deploy gone wrong" in server.log()
    finally:
        server.stop()


def test_elastic_pool_grows_under_a_burst_and_shrinks_when_idle(tmp_path: Path) -> None:
    deploy = Deploy(tmp_path)
    server = start(deploy, "--preload", "--workers-min", "1", "--workers-max", "4", "--worker-idle-timeout", "1")
    try:
        assert len(server.worker_pids()) == 1
        with Load(server.url, clients=8) as load:
            # 8 clients on 1 worker: requests queue, the pool grows to its maximum and stays there.
            assert wait_for(lambda: metrics(server.url)['a2wsgi_mp_workers{state="ready"}'] == 4, 30)
            assert wait_for(lambda: sum(load.versions.values()) >= 40, 30)
            assert len(server.worker_pids()) == 4
        assert not load.failures, load.failures[:5]
        # Idle now: back to the minimum, one worker retired for each one started.
        assert wait_for(lambda: len(server.worker_pids()) == 1, 30), server.log()[-3000:]
        values = metrics(server.url)
        assert values["a2wsgi_mp_scale_ups_total"] == 3
        assert values["a2wsgi_mp_scale_downs_total"] == 3
        assert values['a2wsgi_mp_workers{state="ready"}'] == 1
        assert "scaling up" in server.log() and "scaling down" in server.log()
        assert len(deploy.importers()) == 1  # grown by fork: one import in all
    finally:
        assert server.stop() == []


def test_elastic_and_preload_options() -> None:
    from a2wsgi_mp.config import PoolConfig
    from a2wsgi_mp.pool.app import WSGIPool

    c = PoolConfig(workers=(2, 16))
    assert (c.workers, c.workers_min, c.workers_max, c.elastic) == (2, 2, 16, True)
    c = PoolConfig(workers=6, workers_min=2, workers_max=4)  # the start count is clamped to the range
    assert (c.workers, c.workers_min, c.workers_max) == (4, 2, 4)
    assert not PoolConfig(workers=3).elastic
    for bad in ({"workers": (4, 2)}, {"workers": (1, 2, 3)}, {"worker_idle_timeout": -1},
                {"preload": True, "start_method": "spawn"}):
        with pytest.raises(ValueError):
            PoolConfig(**bad)
    with pytest.raises(ValueError, match="import string"):
        WSGIPool(lambda environ, start_response: [], preload=True)


def test_cli_options_reach_the_pool() -> None:
    from a2wsgi_mp.cli import make_pool
    from a2wsgi_mp.cli.settings import resolve

    settings = resolve([APP, "--preload", "--workers-min", "1", "--workers-max", "5", "--worker-idle-timeout", "2.5"],
                       environ={})
    config = make_pool(settings).config
    assert (config.preload, config.workers_min, config.workers_max, config.worker_idle_timeout) == (True, 1, 5, 2.5)
    assert make_pool(resolve([APP], environ={})).config.preload is False
