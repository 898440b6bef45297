"""P3's question, A/B on one server: how the workers' (or the front's) CPU scheduling moves the
p99 of the front's async ``/ping`` while the workers are CPU-saturated, and what it costs the
workers' throughput.

One router server (``benchmarks.apps:make_router``, 2 workers, as P3 runs it) is started once;
each round applies every variant in turn (order reversed every other round) to the *running*
processes (``sched_setscheduler`` / ``setpriority`` / ``sched_setattr``), then measures:

* ``p99``: ``/ping`` probed at 200/s for ``--duration`` s beside ``wrk -c8 /cpu`` (P3);
* ``cpu_rps``: that wrk's rps (P2's shape: every worker CPU-bound);
* ``hello_rps``: ``wrk -c32 /hello`` for ``--hello`` s (P1's shape: the front saturated).

    flock /tmp/a2wsgi-bench.lock python -m benchmarks.sched_ab --rounds 3

Variants: ``normal`` (and ``normal2``, the same again: the A/A control), ``batch`` (workers
SCHED_BATCH), ``nice5``/``nice10``/``nice19`` (workers' nice), ``idle`` (workers SCHED_IDLE),
``wslice``/``wshort``/``wlong`` (workers' EEVDF slice 20 ms / 0.1 ms / 100 ms), ``wshort_batch``,
``fslice`` (the front's slice 0.1 ms), ``batch_fslice``, ``fslice_wlong``; ``fnice_m10`` (the
front at nice -10: a diagnostic, it needs CAP_SYS_NICE); a name with ``+prt``
runs the probe itself SCHED_FIFO (a diagnostic: what is left is the server's share of the tail,
not the load generator's).  ``VARIANT@ag`` runs the variant on a second server whose pool has
``worker_sched="autogroup"`` (a session cannot be changed from outside, so it is started so), e.g.
``--variants normal,normal@ag,idle``.  ``--burn N`` runs N busy loops in a session of their own for
the whole run: another session's CPU load, beside which a variant that lowers the workers' weight
shows its price.  A custom slice needs ``sched_setattr`` (Linux >= 6.12 honours
``sched_runtime`` for SCHED_OTHER), reached through ctypes here (x86_64 only).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import psutil

from .configs import Config
from .loadgen import parse_wrk, wrk_args
from .scenarios import run_probe
from .servers import Server

_SYS_sched_setattr = 314  # x86_64


class SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64)]


def set_slice(pid: int, policy: int, nice: int, slice_ns: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = SchedAttr(ctypes.sizeof(SchedAttr), policy, 0, nice, 0, slice_ns, 0, 0)
    if libc.syscall(_SYS_sched_setattr, pid, ctypes.byref(attr), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def apply(pids: list[int], policy: int, nice: int = 0, slice_ns: int = 0) -> None:
    for pid in pids:
        for tid in threads(pid):
            set_slice(tid, policy, nice, slice_ns)  # (slice 0: the default)


def roles(server: Server) -> tuple[int, list[int]]:
    front = server.proc.pid  # type: ignore[union-attr]
    procs = server.processes()
    zygotes = [p.pid for p in procs if p.ppid() == front]
    workers = [p.pid for p in procs if p.ppid() in zygotes]
    return front, workers


VARIANTS: dict[str, Callable[[int, list[int]], None]] = {
    "normal": lambda f, w: None,
    "normal2": lambda f, w: None,  # (the A/A control: the same as normal, measured as another variant)
    "batch": lambda f, w: apply(w, os.SCHED_BATCH),
    "nice5": lambda f, w: apply(w, os.SCHED_OTHER, 5),
    "nice10": lambda f, w: apply(w, os.SCHED_OTHER, 10),
    "nice19": lambda f, w: apply(w, os.SCHED_OTHER, 19),
    "idle": lambda f, w: apply(w, os.SCHED_IDLE),
    "wslice": lambda f, w: apply(w, os.SCHED_OTHER, 0, 20_000_000),
    "wshort": lambda f, w: apply(w, os.SCHED_OTHER, 0, 100_000),
    "wshort_batch": lambda f, w: apply(w, os.SCHED_BATCH, 0, 100_000),
    "fslice": lambda f, w: apply([f], os.SCHED_OTHER, 0, 100_000),
    "batch_fslice": lambda f, w: (apply(w, os.SCHED_BATCH), apply([f], os.SCHED_OTHER, 0, 100_000)),
    # (a diagnostic, needs CAP_SYS_NICE: the front's weight raised instead of its slice shortened)
    "fnice_m10": lambda f, w: apply([f], os.SCHED_OTHER, -10),
    "wlong": lambda f, w: apply(w, os.SCHED_OTHER, 0, 100_000_000),
    "fslice_wlong": lambda f, w: (apply(w, os.SCHED_OTHER, 0, 100_000_000), apply([f], os.SCHED_OTHER, 0, 100_000)),
}


def reset(front: int, workers: list[int]) -> None:
    apply([front, *workers], os.SCHED_OTHER)


def _busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def _tree_cpu(server: Server) -> float:
    total = 0.0
    for p in server.processes():
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def measure(server: Server, duration: float, hello: float, probe_prefix: list[str]) -> dict[str, Any]:
    """P3's probe beside P2's load; ``others``: cores busy outside the server (load generators included)."""
    t0, b0, s0 = time.monotonic(), _busy(), _tree_cpu(server)
    load = subprocess.Popen(wrk_args(server.url + "/cpu", 8, duration + 1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    probe = run_probe(server.port, "/ping", duration, prefix=probe_prefix)
    out, _ = load.communicate(timeout=duration + 15)
    cpu = parse_wrk(out, duration + 1)
    others = ((_busy() - b0) - (_tree_cpu(server) - s0)) / (time.monotonic() - t0)
    h = subprocess.run(wrk_args(server.url + "/hello", 32, hello), capture_output=True, text=True,
                       timeout=hello + 15)
    return {"p99": probe.get("p99_ms"), "p50": probe.get("p50_ms"), "max": probe.get("max_ms"),
            "probes": probe.get("requests"), "cpu_rps": cpu["good_rps"], "others": others,
            "hello_rps": parse_wrk(h.stdout, hello)["good_rps"]}


#: Servers a variant can run on (``variant@server``): the default, and one whose pool runs
#: ``worker_sched="autogroup"`` (its zygote's session is its own: set at start, not from outside).
SERVERS: dict[str, dict[str, str]] = {
    "": {},
    "ag": {"BENCH_MP_OPTIONS": json.dumps({"worker_sched": "autogroup"})},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--hello", type=float, default=2.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--burn", type=int, default=0,
                        help="N busy loops in a session of their own for the whole run (another session's CPU load)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    idle: dict[str, Any] = {}
    servers: dict[str, Server] = {}
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
               for _ in range(args.burn)]
    with tempfile.TemporaryDirectory() as logdir:
        try:
            for where in sorted({n.partition("@")[2] for n in names}):
                server = Server(Config("a2wsgi_mp", 2, 1, "router"), logdir)
                server.env.update(SERVERS[where])
                server.logpath += f".{where or 'default'}"
                server.start()
                servers[where] = server
                front, workers = roles(server)
                probe = run_probe(server.port, "/ping", 2.0)
                idle[where] = probe.get("p99_ms")
                print(f"server {where or 'default'}: front {front}, workers {workers}, idle p99 {idle[where]}",
                      file=sys.stderr)
            for r in range(args.rounds):
                for name in (names if r % 2 == 0 else names[::-1]):
                    spec, _, where = name.partition("@")
                    base, _, flag = spec.partition("+")
                    server = servers[where]
                    front, workers = roles(server)
                    VARIANTS[base](front, workers)
                    try:
                        m = measure(server, args.duration, args.hello, ["chrt", "-f", "1"] if flag == "prt" else [])
                    finally:
                        reset(front, workers)
                    results[name].append(m)
                    print(f"round {r} {name:13} p99 {m['p99']:.2f} ms p50 {m['p50']:.2f} max {m['max']:.1f} "
                          f"cpu {m['cpu_rps']:.0f} rps others {m['others']:.2f} hello {m['hello_rps']:.0f} rps",
                          file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                server.stop()
            for burner in burners:
                burner.kill()
                burner.wait()
    summary = {n: {k: statistics.median(m[k] for m in ms) for k in ("p99", "p50", "cpu_rps", "hello_rps")}
               | {"p99_all": [m["p99"] for m in ms]} for n, ms in results.items() if ms}
    print(json.dumps({"idle_p99": idle, "variants": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
