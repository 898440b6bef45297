"""The ``a2wsgi-mp`` command line: help, bad options, and app references that cannot load.

Every run is bounded by a timeout; the failing runs are launched together so
their start-up times overlap.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .serverproc import HOST, REPO, cli_command, free_port, subprocess_env

RUN_TIMEOUT = 60

BAD_REFS = {
    "missing-module": ("tests.apps.core_no_such_module:app", "tests.apps.core_no_such_module"),
    "missing-attribute": ("tests.apps.core_app:no_such_app", "no_such_app"),
    "not-callable": ("tests.apps.core_app:NOT_CALLABLE", "not callable"),
    "import-raises": ("tests.apps.core_broken:app", "refuses to import"),
    "bad-expression": ("tests.apps.core_app:app(", "tests.apps.core_app:app("),
}


def _run(args: list[str], timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([*cli_command(), *args], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def bad_ref_runs():
    procs = {}
    for name, (ref, _) in BAD_REFS.items():
        procs[name] = subprocess.Popen(
            [*cli_command(), ref, "--host", HOST, "--port", str(free_port()), "--workers", "1"],
            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    results = {}
    try:
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                out = f"<still running after {RUN_TIMEOUT} s>\n{out}"
            results[name] = (proc.returncode, out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.parametrize("case", sorted(BAD_REFS))
def test_bad_app_reference_exits_nonzero_naming_the_target(bad_ref_runs, case: str) -> None:
    ref, detail = BAD_REFS[case]
    code, output = bad_ref_runs[case]
    assert code == 3, output  # the app could not be loaded (docs/cli.md's exit statuses)
    assert ref in output, output
    assert detail in output, output
    assert "Uvicorn running" not in output, output


def test_help() -> None:
    result = subprocess.run([sys.executable, "-m", "a2wsgi_mp", "--help"], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    for option in ("--workers", "--threads", "--start-method", "--max-body-size", "--timeout", "--port"):
        assert option in result.stdout


def test_version() -> None:
    """Names the uvicorn the servers run: the same as the tests' (.ci/run's floor step relies on it)."""
    import uvicorn

    import a2wsgi_mp

    result = _run(["--version"])
    assert result.returncode == 0
    assert result.stdout.startswith(f"a2wsgi-mp {a2wsgi_mp.__version__} with uvicorn {uvicorn.__version__} on ")


def test_missing_app_argument_is_a_usage_error() -> None:
    result = _run([])
    assert result.returncode == 2
    assert "app" in result.stderr


@pytest.mark.parametrize("args,needle", [
    (["--threads", "0"], "threads"),
    (["--workers", "-1"], "workers"),
    (["--timeout", "-1"], "timeout"),
    (["--max-body-size", "lots"], "lots"),
    (["--start-method", "forkserver"], "start-method"),
])
def test_invalid_options_exit_2(args: list[str], needle: str) -> None:
    result = _run(["tests.apps.core_app:app", "--port", str(free_port()), *args])
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert needle in result.stderr.lower()
    assert "Uvicorn running" not in result.stderr
