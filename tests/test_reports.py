"""The pure parts of death reports (pool/reports.py): request lines, stack filtering, OOM counters."""

from __future__ import annotations

import os
import signal

from a2wsgi_mp.pool import reports
from a2wsgi_mp.pool.worker import Worker

DUMP = """Fatal Python error: Segmentation fault

Thread 0x00007f4d7418d6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 331 in wait
  File "/site/a2wsgi_mp/workers/process.py", line 391 in watch
  File "/usr/lib/python3.11/threading.py", line 982 in run

Thread 0x00007f4d749cf6c0 (most recent call first):
  File "/site/a2wsgi_mp/workers/lifeline.py", line 32 in wait
  File "/usr/lib/python3.11/threading.py", line 982 in run

Current thread 0x00007f4d75a7fb80 (most recent call first):
  File "/srv/app/views.py", line 18 in app
  File "/site/a2wsgi_mp/response.py", line 259 in run_wsgi

Extension modules: msgpack._cmsgpack (total: 1)
"""


def test_app_stacks_leave_out_the_pools_own_threads_only():
    kept = reports.app_stacks(DUMP)
    assert "lifeline.py" not in kept and " in watch" not in kept
    assert kept.startswith("Fatal Python error: Segmentation fault\n\nCurrent thread 0x00007f4d75a7fb80")
    assert 'File "/srv/app/views.py", line 18 in app' in kept and kept.rstrip().endswith("(total: 1)")
    # an app function that happens to be called "watch" or "wait" elsewhere stays
    app_thread = 'Thread 0x1 (most recent call first):\n  File "/srv/app/jobs.py", line 3 in watch'
    assert reports.app_stacks(app_thread) == app_thread


def test_request_line_as_an_access_log_shows_it():
    scope = {"method": "POST", "path": "/caf\u00e9", "raw_path": b"/caf%C3%A9", "query_string": b"a=1",
             "http_version": "1.1"}
    assert reports.request_line(scope) == "POST /caf%C3%A9?a=1 HTTP/1.1"
    assert reports.request_line({"method": "GET", "path": "/x", "query_string": b"", "http_version": "2"}) \
        == "GET /x HTTP/2"
    assert reports.request_line(None) == ""


def test_oom_counters_v2_alone_v1_with_the_kernel_count(tmp_path, monkeypatch):
    v2 = tmp_path / "v2" / "memory.events"
    v2.parent.mkdir()
    v2.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (v2.parent / "memory.max").write_text(str(300 * 2**20) + "\n")
    v1 = tmp_path / "v1" / "memory.oom_control"
    v1.parent.mkdir()
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    (v1.parent / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("nr_free_pages 1\noom_kill 7\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(vmstat if f == "/proc/vmstat" else f, *a, **k))
    assert reports.oom_kills(str(v2)) == 1 and reports.oom_kills(str(v1)) == 0 and reports.oom_kills(None) == 7
    assert reports.memory_limit(str(v2)) == 300 * 2**20 and reports.memory_limit(str(v1)) == 0
    watch = reports.OomWatch()
    watch.track(str(v2))
    watch.track(str(v1))
    assert watch.struck(str(v2)) is None and watch.struck(str(v1)) is None
    vmstat.write_text("oom_kill 8\n")  # an OOM kill elsewhere on the host
    assert watch.struck(str(v2)) is None  # v2 counts every kill of its own processes: not ours
    assert watch.struck(str(v1)) == "oom_kill 7 -> 8 in the kernel's /proc/vmstat"  # v1 cannot tell
    v2.write_text("oom 2\noom_kill 2\n")
    assert watch.struck(str(v2)) == f"oom_kill 1 -> 2 in cgroup {v2.parent}, limit 300 MiB"
    assert watch.struck(str(v2)) is None  # counted once


def test_only_a_sigkill_we_did_not_send_can_be_the_oom_killer(monkeypatch):
    watch = reports.OomWatch()
    monkeypatch.setattr(watch, "struck", lambda counter: "oom_kill 0 -> 1 in cgroup /x")
    worker = Worker(1, 1, 0, 0, 0.0)
    killed = signal.SIGKILL  # a raw wait status: the signal number in the low bits
    assert reports.was_oom(worker, killed, watch) == "oom_kill 0 -> 1 in cgroup /x"
    assert reports.was_oom(worker, signal.SIGSEGV, watch) is None
    assert reports.was_oom(worker, 7 << 8, watch) is None and os.WIFEXITED(7 << 8)
    worker.killed = True
    assert reports.was_oom(worker, killed, watch) is None
