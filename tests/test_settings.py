"""Where each CLI setting comes from: command line > environment > config file > defaults.

In-process (``settings.resolve`` with an explicit environment and directory):
these are pure functions of their inputs.  The end-to-end suite
(test_cli_deploy.py) checks that the resolved values reach a running server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from a2wsgi_mp import logs
from a2wsgi_mp.cli.settings import OPTIONS, resolve
from a2wsgi_mp.config import PoolConfig

APP = "tests.apps.core_app:app"


def _pyproject(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.a2wsgi_mp]\n{body}\n")
    return tmp_path


def test_defaults_are_uvicorns_and_the_pools(tmp_path: Path) -> None:
    s = resolve([APP], environ={}, cwd=tmp_path)
    assert (s.host, s.port, s.timeout_keep_alive, s.proxy_headers) == ("127.0.0.1", 8000, 5, True)
    assert s.forwarded_allow_ips == "127.0.0.1,::1"  # uvicorn's and gunicorn's default, stated
    assert s.workers == PoolConfig.workers and s.threads == PoolConfig.threads
    assert set(s.sources.values()) == {"default", "command line"}
    assert s.target("pool") == {}  # untouched pool options stay PoolConfig's to decide


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    cwd = _pyproject(tmp_path, "workers = 1\nthreads = 3\ntimeout = 7\nroot-path = '/file'")
    env = {"A2WSGI_MP_THREADS": "2", "A2WSGI_MP_TIMEOUT": "8"}
    s = resolve([APP, "--timeout", "9"], environ=env, cwd=cwd)
    assert (s.workers, s.threads, s.timeout, s.root_path) == (1, 2, 9.0, "/file")
    assert s.sources["workers"] == str(cwd / "pyproject.toml")
    assert s.sources["threads"] == "environment"
    assert s.sources["timeout"] == "command line"
    assert s.target("pool") == {"workers": 1, "threads": 2, "timeout": 9.0}
    assert s.target("uvicorn")["root_path"] == "/file"


def test_switches_from_every_layer(tmp_path: Path) -> None:
    cwd = _pyproject(tmp_path, "proxy_headers = false\naccess_log = false")
    assert resolve([APP], environ={}, cwd=cwd).proxy_headers is False
    s = resolve([APP], environ={"A2WSGI_MP_PROXY_HEADERS": "yes"}, cwd=cwd)
    assert s.proxy_headers is True and s.access_log is False
    s = resolve([APP, "--no-proxy-headers", "--access-log"], environ={"A2WSGI_MP_PROXY_HEADERS": "1"}, cwd=cwd)
    assert s.proxy_headers is False and s.access_log is True


def test_explicit_config_file_replaces_pyproject(tmp_path: Path) -> None:
    cwd = _pyproject(tmp_path, "workers = 5")
    other = tmp_path / "a2wsgi.toml"
    other.write_text(f"app = '{APP}'\nthreads = 4\nspool_threshold = '512K'\nreload_dirs = ['src', 'lib']\n")
    for argv, env in (([f"--config={other}"], {}), ([], {"A2WSGI_MP_CONFIG": str(other)})):
        s = resolve(argv, environ=env, cwd=cwd)
        assert s.app == APP and s.threads == 4 and s.spool_threshold == 512 * 1024
        assert s.workers == PoolConfig.workers  # pyproject.toml is not read
        assert s.reload_dirs == ["src", "lib"]


def test_app_and_lists_from_the_environment(tmp_path: Path) -> None:
    s = resolve([], environ={"A2WSGI_MP_APP": APP, "A2WSGI_MP_RELOAD_DIRS": "a, b"}, cwd=tmp_path)
    assert s.app == APP and s.reload_dirs == ["a", "b"]
    assert resolve(["x:app"], environ={"A2WSGI_MP_APP": APP}, cwd=tmp_path).app == "x:app"


def test_unknown_environment_variable_is_a_warning(tmp_path: Path) -> None:
    s = resolve([APP], environ={"A2WSGI_MP_WORKRES": "4"}, cwd=tmp_path)
    assert any("A2WSGI_MP_WORKRES" in w for w in s.warnings)


@pytest.mark.parametrize("env,body,needle", [
    ({"A2WSGI_MP_WORKERS": "four"}, "", "A2WSGI_MP_WORKERS"),
    ({"A2WSGI_MP_PROXY_HEADERS": "maybe"}, "", "A2WSGI_MP_PROXY_HEADERS"),
    ({"A2WSGI_MP_IPC": "carrier-pigeon"}, "", "--ipc"),
    ({}, "wokers = 2", "wokers"),
    ({}, "workers = true", "--workers"),
    ({}, "workers = [", "pyproject.toml"),
])
def test_bad_values_are_usage_errors(tmp_path: Path, capsys, env: dict, body: str, needle: str) -> None:
    cwd = _pyproject(tmp_path, body)
    with pytest.raises(SystemExit) as exc:
        resolve([APP], environ=env, cwd=cwd)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_config_file_and_missing_app(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        resolve([APP, "--config", str(tmp_path / "nope.toml")], environ={}, cwd=tmp_path)
    assert "nope.toml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        resolve([], environ={}, cwd=tmp_path)
    assert "app" in capsys.readouterr().err


def test_every_option_has_a_flag_an_env_name_and_help() -> None:
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names))
    for o in OPTIONS:
        assert o.help and o.to in ("uvicorn", "pool", "cli")
        assert o.env == "A2WSGI_MP_" + o.name.upper()
    import inspect

    import uvicorn

    accepted = set(inspect.signature(uvicorn.Config.__init__).parameters)
    assert {o.name for o in OPTIONS if o.to == "uvicorn"} <= accepted


@pytest.fixture
def clean_logging():
    root, ours = logging.getLogger(), logging.getLogger("a2wsgi_mp")
    saved = (root.handlers[:], ours.handlers[:], ours.level, ours.propagate)
    root.handlers, ours.handlers = [], []
    ours.setLevel(logging.NOTSET)
    yield root, ours
    root.handlers, ours.handlers = saved[0], saved[1]
    ours.setLevel(saved[2])
    ours.propagate = saved[3]


def test_fallback_handler_only_when_nobody_configured_logging(clean_logging) -> None:
    root, ours = clean_logging
    root.handlers = [logging.NullHandler()]
    logs.ensure_visible()
    assert ours.handlers == [] and ours.level == logging.NOTSET  # the app's configuration rules
    root.handlers = []
    logs.ensure_visible()
    assert len(ours.handlers) == 1 and ours.level == logging.INFO
    logs.ensure_visible()
    assert len(ours.handlers) == 1


def test_fallback_handler_steps_aside_once_root_is_configured(clean_logging, capsys) -> None:
    root, ours = clean_logging
    root.handlers = []  # (pytest's capture handlers come back for the test's call phase)
    logs.ensure_visible()
    logging.getLogger("a2wsgi_mp.pool").info("pool ready: test")
    err = capsys.readouterr().err
    assert "[INFO] a2wsgi_mp.pool: pool ready: test" in err and err.startswith("[20")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    root.addHandler(handler)
    logging.getLogger("a2wsgi_mp.pool").warning("later")
    assert seen == ["later"] and "later" not in capsys.readouterr().err


@pytest.mark.parametrize("cmdline,expected", [
    (["uvicorn", "--workers", "3", "m:app"], 3),
    (["hypercorn", "-w", "2", "m:app"], 2),
    (["uvicorn", "--workers=4", "m:app"], 4),
    (["uvicorn", "m:app"], None),
    (["granian", "--workers"], None),
])
def test_sibling_fronts_read_from_the_server_command_line(cmdline: list[str], expected: int | None) -> None:
    from a2wsgi_mp.topology import _flag_value

    assert _flag_value(cmdline) == expected


def test_layout_line_multiplies() -> None:
    from a2wsgi_mp.topology import describe

    assert describe(2, "uvicorn --workers", 2, 1).endswith("2 fronts (uvicorn --workers) x 2 workers x 1 thread = "
                                                             "4 app processes, 4 requests at once")
    assert "? fronts" in describe(None, "unknown", 2, 1)


def test_worker_sched_from_every_layer(tmp_path: Path, capsys) -> None:
    cwd = _pyproject(tmp_path, "worker_sched = 'batch'")
    assert resolve([APP], environ={}, cwd=cwd).target("pool") == {"worker_sched": "batch"}
    s = resolve([APP], environ={"A2WSGI_MP_WORKER_SCHED": "idle"}, cwd=cwd)
    assert s.target("pool") == {"worker_sched": "idle"} and s.sources["worker_sched"] == "environment"
    assert resolve([APP, "--worker-sched", "normal"], environ={}, cwd=cwd).worker_sched == "normal"
    bare = tmp_path / "bare"
    bare.mkdir()
    assert resolve([APP], environ={}, cwd=bare).target("pool") == {}  # default: PoolConfig's "normal"
    with pytest.raises(SystemExit):
        resolve([APP, "--worker-sched", "fifo"], environ={}, cwd=bare)
    assert "--worker-sched" in capsys.readouterr().err
