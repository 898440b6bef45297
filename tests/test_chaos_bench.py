"""The chaos benchmark, short (benchmarks/chaos.py): checksummed mixed traffic, non-reading and
trickling clients, a random SIGKILL in the server's tree every 1-1.5 s and a SIGHUP every 4 s;
every failure must be explained by a kill, no byte may be wrong, nothing may leak or outlive
the server."""

from __future__ import annotations

import argparse

from benchmarks import chaos


def test_short_chaos_run_has_nothing_unexpected() -> None:
    args = argparse.Namespace(
        server="a2wsgi", duration=10.0, clients=3, non_readers=1, tricklers=1, kill_min=1.0, kill_max=1.5,
        kills=True, hup_every=4.0, scale=0.05, settle=2.0, seed=7, json=None, log=None,
        server_options=["--workers", "2", "--timeout-keep-alive", "1", "--timeout", "10", "--send-timeout", "5"],
    )
    out = chaos.run(args)
    assert out["requests"]["all"].get("ok", 0) > 20, out["requests"]
    assert sum(out["kills"].values()) >= 4, out["kills"]
    assert out["hups"] >= 2
    assert not out["unexpected"], out["unexpected"]
    assert not out["wrong"], out["wrong"]
    assert not out["after TERM"]["processes left"]
    assert not out["leaks"], out["resources"]
    assert out["ok"]
