"""Loading a hooks module (a2wsgi_mp/hooks.py): by name, by file, gunicorn's ``python:`` spelling."""

from __future__ import annotations

import sys

import pytest

from a2wsgi_mp.config import PoolConfig
from a2wsgi_mp.hooks import HookError, ServerView, WorkerView, load_hooks


def test_hooks_by_module_name_file_and_python_prefix(tmp_path):
    f = tmp_path / "my_hooks.py"
    f.write_text("CALLS = []\ndef post_fork(server, worker):\n    CALLS.append(worker.pid)\n"
                 "def child_exit(server, worker):\n    raise RuntimeError('boom')\nnot_a_hook = 1\n")
    for ref in (str(f), "tests.apps.hooks_record", "python:tests.apps.hooks_record"):
        hooks = load_hooks(ref)
        assert hooks and hooks.has("post_fork") and not hooks.has("not_a_hook")
    hooks = load_hooks(str(f))
    hooks.call("post_fork", ServerView(1), WorkerView(42, 3))
    hooks.call("worker_exit", ServerView(1), WorkerView(42, 3))  # absent: nothing happens
    hooks.call_logged("child_exit", ServerView(1), WorkerView(42, 3))  # raises: logged, not raised
    with pytest.raises(RuntimeError):
        hooks.call("child_exit", ServerView(1), WorkerView(42, 3))
    module = next(m for n, m in sys.modules.items() if n.startswith("a2wsgi_mp_hooks_") and n.endswith("my_hooks_py"))
    assert module.CALLS == [42]


def test_only_the_named_hooks_and_clear_errors(tmp_path):
    hooks = load_hooks("tests.apps.hooks_record", ["post_fork", "child_exit"])
    assert hooks.has("post_fork") and hooks.has("child_exit") and not hooks.has("when_ready")
    assert not load_hooks(None)
    with pytest.raises(HookError, match="could not import hooks module 'no_such_hooks_mod'"):
        load_hooks("no_such_hooks_mod")
    with pytest.raises(HookError, match="not found"):
        load_hooks(str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="hooks must name a module"):
        PoolConfig(hooks=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reload_check must be a path"):
        PoolConfig(reload_check="healthz")
