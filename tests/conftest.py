"""Fixtures shared by the end-to-end suites: real server processes, always stopped.

Every server a fixture starts is stopped by pid at teardown (TERM, then KILL,
then its descendants: :meth:`tests.serverproc.Server.stop`), and a process
that outlived its server fails the test that started it: worker processes must
never outlive their parent.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from .serverproc import START_TIMEOUT, Server, ServerSet


def _stop_checked(servers: list[Server]) -> None:
    survivors = {s.name: [p.pid for p in s.stop()] for s in servers}
    assert not any(survivors.values()), f"processes outlived their server: {survivors}"


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """``start_server(Server(...), timeout=...)``: the server started and ready, for this test only."""
    started: list[Server] = []

    def start(server: Server, timeout: float = START_TIMEOUT) -> Server:
        started.append(server)
        return server.start().wait_ready(timeout)

    yield start
    _stop_checked(started)


@pytest.fixture
def cli_server(start_server: Callable[..., Server]) -> Callable[..., Server]:
    """``cli_server(app, *options, env=None, ready_path="/")``: ``python -m a2wsgi_mp`` for this test."""

    def start(app: str, *options: str, env: dict[str, str] | None = None, ready_path: str = "/") -> Server:
        return start_server(Server.cli(app, *options, env=env, ready_path=ready_path))

    return start


@pytest.fixture(scope="module")
def module_servers() -> Iterator[ServerSet]:
    """A :class:`~tests.serverproc.ServerSet` for the module: ``add()`` starts a server at
    once (they boot in parallel), ``get()`` waits for it; all stop when the module ends."""
    group = ServerSet()
    yield group
    _stop_checked(list(group.servers.values()))
