"""Import rules of the package layout (issue 18).

The pool's child processes (:mod:`a2wsgi_mp.workers`) must never import the
front's :mod:`a2wsgi_mp.pool` nor the gunicorn integration: a worker process
that imported them would carry the front's state and its dependencies into
every fork.  Checked twice: by importing them in a fresh interpreter (catches
transitive imports) and by reading their source (catches imports inside
functions, which run only on some paths).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKERS = REPO / "a2wsgi_mp" / "workers"
#: The old path of the gunicorn worker class, a re-export kept for users' configs.
ALIASES = {"gunicorn.py"}
CHILD_MODULES = sorted(p.stem for p in WORKERS.glob("*.py") if p.name not in ALIASES and p.stem != "__init__")
FORBIDDEN = ("a2wsgi_mp.pool", "a2wsgi_mp.gunicorn", "a2wsgi_mp.cli")


def test_the_child_modules_are_the_ones_expected() -> None:
    assert CHILD_MODULES == ["direct", "filewrapper", "inherited", "lifeline", "process", "zygote"]


def test_importing_the_child_processes_loads_no_front_module() -> None:
    code = (
        "import json, sys\n"
        + "".join(f"import a2wsgi_mp.workers.{name}\n" for name in CHILD_MODULES)
        + "print(json.dumps(sorted(m for m in sys.modules if m.startswith('a2wsgi_mp'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert "a2wsgi_mp.workers.zygote" in loaded  # the check ran on what it claims
    assert [m for m in loaded if m.startswith(FORBIDDEN)] == []


def _imported(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it, as absolute names (``from a import b``
    gives ``a`` and ``a.b``: ``b`` may be a module)."""
    package = ["a2wsgi_mp", "workers"]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("name", CHILD_MODULES)
def test_child_module_source_never_imports_the_front(name: str) -> None:
    imported = _imported(WORKERS / f"{name}.py")
    assert imported, "the parser found no import at all"
    assert sorted(m for m in imported if m.startswith(FORBIDDEN)) == []


def test_the_source_check_sees_relative_imports_of_the_pool(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..pool.app import WSGIPool\n    from .. import pool\n")
    assert {"a2wsgi_mp.pool.app", "a2wsgi_mp.pool"} <= _imported(bad)


def test_public_exceptions_live_in_errors_with_their_old_names_as_aliases() -> None:
    import a2wsgi_mp
    from a2wsgi_mp import asgi, body, errors, lifespan, wsgi
    from a2wsgi_mp.pool import supervisor

    assert wsgi.ClientDisconnect is body.ClientDisconnect is errors.InputDisconnected
    assert asgi.ClientDisconnected is errors.SendDisconnected
    assert errors.InputDisconnected is not errors.SendDisconnected
    assert issubclass(errors.InputDisconnected, OSError) and issubclass(errors.SendDisconnected, OSError)
    assert wsgi.ResponseAborted is errors.ResponseAborted
    assert asgi.LifespanFailure is lifespan.LifespanFailure is errors.LifespanFailure
    assert a2wsgi_mp.BootFailed is supervisor.BootFailed is errors.BootFailed
    assert a2wsgi_mp.RemoteAppError is errors.RemoteAppError
    for name in errors.__all__:
        assert getattr(errors, name).__module__ == "a2wsgi_mp.errors", name


def test_a2wsgi_public_names_are_importable_from_a2wsgi_mp() -> None:
    """The one-import migration (docs/a2wsgi-migration.md) covers every name a2wsgi exports."""
    a2wsgi = pytest.importorskip("a2wsgi")
    import a2wsgi_mp

    assert set(a2wsgi.__all__) <= set(a2wsgi_mp.__all__)
    for name in a2wsgi_mp.__all__:
        assert getattr(a2wsgi_mp, name) is not None
    assert set(a2wsgi_mp.__all__) <= set(dir(a2wsgi_mp))
    with pytest.raises(AttributeError):
        a2wsgi_mp.NoSuchName  # noqa: B018
