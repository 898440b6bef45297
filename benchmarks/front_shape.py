"""What makes the front cost more on a real page: the response's shape, or the workers' work?

    python -m benchmarks.front_shape [--duration 4] [--rounds 2] [--servers a2wsgi_mp,...]

One a2wsgi_mp server (``--workers 2``) serving ``benchmarks.apps:app``, driven by
``wrk -t1 -c32`` on ``/shape`` in four cells, interleaved over rounds:

* ``hello``      13-byte body, 2 headers, no work;
* ``page``       R1's shape (4,160-byte body, R1's 10 headers), no work;
* ``busy``       hello's shape after ``burn`` iterations in the worker (about the CPU of
  Django's admin login page);
* ``busy page``  both;
* ``idle page``  R1's shape after a 4 ms sleep in the worker: requests paced like
  ``busy page`` (one per wake-up, no batching) but the CPUs idle.

For each: rps and CPU µs per request by role (front, its kernel share, workers).
If ``page`` costs the front much more than ``hello``, the response's size and
headers are what grows; if ``busy`` does, it is the workers: ``idle page``
then tells the pacing (one request per wake-up) from the sharing of the CPUs
(the front switched in and out against a worker rather than the idle task).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from . import cpu
from .configs import EXPERIMENTS, MP_NAMES, Config
from .loadgen import ensure_wrk, run_wrk
from .servers import Server

BURN = 24_000  # ~1.5 ms of pure Python on the 2-vCPU machine, quiet
#: A sleep that paces requests as ``busy page`` does (~450 rps from 2 workers) with the CPUs idle.
SLEEP_US = 4_000

CELLS = {
    "hello": "/shape?size=13&headers=1",
    "page": "/shape?size=4160&headers=9",
    "busy": f"/shape?size=13&headers=1&burn={BURN}",
    "busy page": f"/shape?size=4160&headers=9&burn={BURN}",
    "idle page": f"/shape?size=4160&headers=9&sleep_us={SLEEP_US}",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.front_shape", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--servers", default="a2wsgi_mp",
                        help=f"a2wsgi_mp variants ({','.join(MP_NAMES + EXPERIMENTS)})")
    parser.add_argument("--cells", default=",".join(CELLS), help="which cells, comma-separated")
    args = parser.parse_args(argv)
    ensure_wrk()
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="a2wsgi_mp-shape-") as tmpdir:
        servers = [Server(Config(name, 2, 1), tmpdir) for name in names]
        try:
            for server in servers:
                server.start()
                for cell in cells:
                    run_wrk(server.url + CELLS[cell], args.conns, 1)  # warm-up
            for rnd in range(args.rounds):
                for cell in cells:
                    for server in servers if rnd % 2 == 0 else list(reversed(servers)):
                        url = server.url + CELLS[cell]
                        r = cpu.measured(server, lambda url=url: run_wrk(url, args.conns, args.duration))
                        c = r["cpu_per_request"]
                        out.setdefault(cell, {}).setdefault(server.cfg.server, []).append(
                            {"rps": round(r["good_rps"]), **c})
                        print(f"round {rnd + 1} {cell:<10} {server.cfg.server:<16} {r['good_rps']:>8,.0f} rps  "
                              f"front {c['front_us']:>6} us ({c['front_sys_us']} kernel)  "
                              f"workers {c['workers_us']:>7} us", flush=True)
        finally:
            for server in servers:
                server.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
