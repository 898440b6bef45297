"""Chaos: checksummed traffic while processes of the server's tree are killed at random.

``python -m benchmarks.chaos [--server a2wsgi|gunicorn] [--duration 60] [-- SERVER OPTIONS...]``

Starts one server on 127.0.0.1 (``a2wsgi-mp benchmarks.chaos_app:app`` with the
options after ``--``, default ``--workers 3``; or gunicorn's sync worker as the
reference), then for ``--duration`` seconds:

* **traffic**: ``--clients`` closed-loop clients, each request one of hello,
  upload (1-20 MB, the server answers its SHA-256), download (up to 50 MB) or a
  slow stream, every body checked against what it must be (see
  :mod:`benchmarks.chaos_app`); a response with the wrong bytes is a defect
  whatever else happened;
* **hostile clients beside it**: ``--non-readers`` ask for 200 MB and read
  nothing (reconnecting every 10-30 s), ``--tricklers`` read a download at
  256 KB/s and send an upload at 1 MB/s, in turn;
* **chaos**: every 2-3 s a SIGKILL to a random process of the tree (never the
  process we started: it is the one front, or the front manager / the
  arbiter), by pid, after checking it is still a descendant; a SIGHUP to the
  server every ``--hup-every`` seconds.

Every failed request is then matched against the kill log: a kill of a worker
while the request was in flight (of *its* worker, once the response named it
in ``X-Pid``), or of a front since its keep-alive connection was last known
alive (the end of the client's previous request), makes it **expected**;
anything else is **unexpected** (a defect), flagged when a SIGHUP was near.
Resources of the tree (processes, descriptors, memfds, unlinked files — spill
and spool — and /dev/shm entries) are compared between the idle server before
and after the run, and after SIGTERM nothing of the tree may remain.

It talks only to 127.0.0.1, sends a bounded number of requests (closed loop,
bounded time) and kills only processes of the tree it started.  Exit status 1
if anything unexpected happened.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from typing import Any

import httpx
import psutil

from benchmarks.chaos_app import payload_chunks, payload_digest
from tests.serverproc import HOST, Server, subprocess_env, wait_for

MB = 1000 * 1000
APP = "benchmarks.chaos_app:app"


# ---------------------------------------------------------------- what is sent and expected


@dataclasses.dataclass
class Plan:
    """The traffic: bodies precomputed once, so checking costs one hash per response."""

    uploads: list[tuple[bytes, str]]
    downloads: list[tuple[int, int, str]]  # (seed, size, sha256)
    streams: list[tuple[int, int, str]]  # (seed, chunks, sha256)
    trickle: tuple[int, int, str]

    @classmethod
    def make(cls, scale: float, rng: random.Random) -> Plan:
        def size(lo: float, hi: float) -> int:
            return max(1024, int(rng.uniform(lo, hi) * MB * scale))

        uploads = []
        for i in range(4):
            body = b"".join(payload_chunks(1000 + i, size(1, 20)))
            uploads.append((body, hashlib.sha256(body).hexdigest()))
        downloads = [(s, n, payload_digest(s, n)) for s, n in ((2000 + i, size(0.1, 50)) for i in range(6))]
        streams = [(s, n, payload_digest(s, n * 16384)) for s, n in ((3000 + i, rng.randint(4, 20)) for i in range(3))]
        t_size = size(2, 4)
        return cls(uploads, downloads, streams, (4000, t_size, payload_digest(4000, t_size)))


@dataclasses.dataclass
class Result:
    kind: str
    start: float
    end: float
    outcome: str  # ok | wrong | failed
    detail: str = ""
    pid: int | None = None  # the worker that answered (X-Pid), if the response started
    conn_since: float = 0.0  # when its connection was last known alive (the end of the previous request)
    verdict: str = ""  # for failures: expected (why) | unexpected


# ---------------------------------------------------------------- clients


async def one_request(http: httpx.AsyncClient, url: str, plan: Plan, rng: random.Random) -> tuple[str, str, str,
                                                                                               int | None]:
    """(kind, outcome, detail, pid) of one request of a random kind."""
    roll = rng.random()
    pid: int | None = None
    try:
        if roll < 0.4:
            kind = "hello"
            r = await http.get(url + "/hello")
            pid = _pid(r)
            ok = r.status_code == 200 and r.content == b"Hello, world!"
            return kind, "ok" if ok else _bad(r), f"{r.status_code}", pid
        if roll < 0.6:
            kind = "upload"
            body, digest = rng.choice(plan.uploads)
            r = await http.post(url + "/upload", content=body)
            pid = _pid(r)
            if r.status_code != 200:
                return kind, "failed", f"{r.status_code}", pid
            got = r.json()
            ok = got == {"sha256": digest, "size": len(body)}
            return kind, "ok" if ok else "wrong", "" if ok else f"answered {got}", pid
        if roll < 0.85:
            kind = "download"
            seed, size, digest = rng.choice(plan.downloads)
            path = f"/download?size={size}&seed={seed}"
        else:
            kind = "stream"
            seed, n, digest = rng.choice(plan.streams)
            size = n * 16384
            path = f"/stream?n={n}&seed={seed}&delay=0.02"
        async with http.stream("GET", url + path) as r:
            pid = _pid(r)
            if r.status_code != 200:
                await r.aread()
                return kind, "failed", f"{r.status_code}", pid
            sha, got = hashlib.sha256(), 0
            async for chunk in r.aiter_raw():
                sha.update(chunk)
                got += len(chunk)
        if got != size:  # (a complete response of the wrong length: the framing lied)
            return kind, "wrong", f"{got} of {size} bytes in a complete response", pid
        if sha.hexdigest() != digest:
            return kind, "wrong", "checksum mismatch", pid
        return kind, "ok", "", pid
    except (httpx.TransportError, httpx.DecodingError) as exc:
        return locals().get("kind", "?"), "failed", f"{type(exc).__name__}: {exc}"[:120], pid


def _pid(r: httpx.Response) -> int | None:
    value = r.headers.get("x-pid")
    return int(value) if value and value.isdigit() else None


def _bad(r: httpx.Response) -> str:
    return "wrong" if r.status_code == 200 else "failed"


async def client(url: str, plan: Plan, seed: int, stop: asyncio.Event, results: list[Result]) -> None:
    rng = random.Random(seed)
    conn_since = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=httpx.Limits(max_connections=1)) as http:
        while not stop.is_set():
            start = time.monotonic()
            kind, outcome, detail, pid = await one_request(http, url, plan, rng)
            end = time.monotonic()
            results.append(Result(kind, start, end, outcome, detail, pid, conn_since))
            # The connection was alive then (or is new after a failure): a front killed
            # before this cannot fail the next request.
            conn_since = end


async def non_reader(port: int, stop: asyncio.Event, rng: random.Random, stats: collections.Counter) -> None:
    """Ask for 200 MB and read nothing; hang up after 10-30 s and start again."""
    while not stop.is_set():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
            await asyncio.get_running_loop().sock_sendall(
                sock, b"GET /download?size=200000000&seed=9 HTTP/1.1\r\nHost: chaos\r\n\r\n")
            stats["non-reader connections"] += 1
            try:
                await asyncio.wait_for(stop.wait(), rng.uniform(10, 30))
            except asyncio.TimeoutError:
                pass
        except OSError:
            stats["non-reader connect errors"] += 1
            await asyncio.sleep(1)
        finally:
            sock.close()


async def trickler(url: str, plan: Plan, stop: asyncio.Event, results: list[Result]) -> None:
    """In turn, read a 2-4 MB download at 256 KB/s, and send a 1-20 MB upload at 1 MB/s, and
    check them (requests of kinds "trickle down" and "trickle up")."""
    seed, size, digest = plan.trickle
    conn_since = time.monotonic()
    up = False
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=httpx.Limits(max_connections=1)) as http:
        while not stop.is_set():
            start = time.monotonic()
            pid = None
            try:
                if up:
                    body, body_digest = plan.uploads[0]
                    r = await http.post(f"{url}/upload", content=_slowly(body, 1024 * 1024))
                    pid = _pid(r)
                    if r.status_code != 200:
                        outcome, detail = "failed", str(r.status_code)
                    elif r.json() != {"sha256": body_digest, "size": len(body)}:
                        outcome, detail = "wrong", f"answered {r.json()}"
                    else:
                        outcome, detail = "ok", ""
                else:
                    sha, got = hashlib.sha256(), 0
                    async with http.stream("GET", f"{url}/download?size={size}&seed={seed}") as r:
                        pid = _pid(r)
                        async for chunk in r.aiter_raw(16384):
                            sha.update(chunk)
                            got += len(chunk)
                            await asyncio.sleep(len(chunk) / (256 * 1024))
                    if r.status_code != 200:
                        outcome, detail = "failed", str(r.status_code)
                    elif got != size or sha.hexdigest() != digest:
                        checksum = "ok" if sha.hexdigest() == digest else "bad"
                        outcome, detail = "wrong", f"{got} of {size} bytes, checksum {checksum}"
                    else:
                        outcome, detail = "ok", ""
            except (httpx.TransportError, httpx.DecodingError) as exc:
                outcome, detail = "failed", f"{type(exc).__name__}: {exc}"[:120]
            end = time.monotonic()
            results.append(Result("trickle up" if up else "trickle down", start, end, outcome, detail, pid,
                                  conn_since))
            conn_since = end
            up = not up


async def _slowly(body: bytes, rate: float):  # type: ignore[no-untyped-def]
    """``body`` in 64 KiB pieces at ``rate`` bytes/s."""
    for i in range(0, len(body), 65536):
        yield body[i:i + 65536]
        await asyncio.sleep(65536 / rate)


# ---------------------------------------------------------------- the process tree


class Tree:
    """The processes of the server's tree: its descendants, and those once seen as such
    (a worker whose zygote died is re-parented to init, and still serves)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, psutil.Process] = {}

    def members(self) -> list[psutil.Process]:
        try:
            for p in psutil.Process(self.root).children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass
        alive = []
        for pid, p in list(self.seen.items()):
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # (is_running checks the start time)
                    alive.append(p)
                    continue
            except psutil.Error:
                pass
            self.seen.pop(pid, None)  # (not del: follow() looks from a thread while chaos() looks too)
        return alive

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.members)
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass


def tree_descendants(root: int) -> list[psutil.Process]:
    try:
        return psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return []


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:100]
    except psutil.Error:
        return "?"


def role(proc: psutil.Process, root: int, server: str) -> str:
    try:
        title = " ".join(proc.cmdline())
        parent = proc.ppid()
    except psutil.Error:
        return "gone"
    if server == "gunicorn":
        return "worker"
    if "zygote" in title:
        return "zygote"
    if "worker" in title:
        return "worker"
    if parent == root:
        return "front"  # (--fronts: uvicorn's children of the manager)
    return "worker"  # (a worker re-parented after its zygote died, before it set its title)


def snapshot(tree: Tree) -> dict[str, int]:
    procs = [psutil.Process(tree.root), *tree.members()]
    fds = memfds = unlinked = 0
    for p in procs:
        try:
            entries = os.listdir(f"/proc/{p.pid}/fd")
        except OSError:
            continue
        for fd in entries:
            fds += 1
            try:
                target = os.readlink(f"/proc/{p.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/memfd:"):
                memfds += 1
            elif target.endswith("(deleted)"):
                unlinked += 1
    return {"processes": len(procs), "fds": fds, "memfds": memfds, "unlinked files": unlinked,
            "/dev/shm entries": _shm_entries()}


def _shm_entries() -> int:
    try:
        return len(os.listdir("/dev/shm"))
    except OSError:
        return 0


async def chaos(tree: Tree, server: str, stop: asyncio.Event, rng: random.Random, kills: list[tuple[float, int, str]],
                hups: list[float], hup_every: float, kill_every: tuple[float, float]) -> None:
    root = tree.root
    next_hup = time.monotonic() + hup_every if hup_every else float("inf")
    next_kill = time.monotonic() + rng.uniform(*kill_every)
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_kill:
            candidates = [p for p in tree.members() if role(p, root, server) != "gone"]
            if candidates:
                victim = rng.choice(candidates)
                what = role(victim, root, server)
                if victim.is_running():  # still the process we saw (pid and start time): by pid, now
                    try:
                        os.kill(victim.pid, signal.SIGKILL)
                    except ProcessLookupError:  # it exited (and was reaped) since is_running(): no kill
                        pass
                    else:
                        kills.append((time.monotonic(), victim.pid, what))
            next_kill = now + rng.uniform(*kill_every)
        if now >= next_hup:
            os.kill(root, signal.SIGHUP)
            hups.append(time.monotonic())
            next_hup = now + hup_every
        try:
            await asyncio.wait_for(stop.wait(), max(0.01, min(next_kill, next_hup) - time.monotonic()))
        except asyncio.TimeoutError:
            pass


# ---------------------------------------------------------------- classification


SLACK = 0.05  # seconds around a request's lifetime for a kill to count (clock of one process: ours)
HUP_WINDOW = 5.0  # a failure this long after a SIGHUP is labelled as near it (still unexpected)


def classify(results: list[Result], kills: list[tuple[float, int, str]], hups: list[float]) -> None:
    for r in results:
        if r.outcome != "failed":
            continue
        why = []
        for t, pid, what in kills:
            if what == "worker" and r.start - SLACK <= t <= r.end + SLACK and (r.pid is None or r.pid == pid):
                why.append(f"worker {pid} killed in flight")
            elif what == "front" and r.conn_since - SLACK <= t <= r.end + SLACK:
                why.append(f"front {pid} killed")
        if why:
            r.verdict = "expected: " + why[0]
        else:
            # (a SIGHUP's effects can last seconds: uvicorn's manager restarts --fronts one by one)
            near = [h for h in hups if r.start - HUP_WINDOW <= h <= r.end + SLACK]
            r.verdict = "unexpected" + (f" (within {HUP_WINDOW:g} s of a SIGHUP)" if near else "")


def report(args: argparse.Namespace, results: list[Result], kills: list[tuple[float, int, str]], hups: list[float],
           stats: collections.Counter, before: dict[str, int], after: dict[str, int], survivors: list[str],
           shm_start: int, shm_end: int, duration: float) -> dict[str, Any]:
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in results:
        key = r.outcome if r.outcome != "failed" else ("failed, expected" if r.verdict.startswith("expected")
                                                       else "failed, UNEXPECTED")
        by_kind[r.kind][key] += 1
        by_kind["all"][key] += 1
    kill_roles = collections.Counter(what for _, _, what in kills)
    unexpected = [r for r in results if r.verdict.startswith("unexpected")]
    wrong = [r for r in results if r.outcome == "wrong"]
    out = {
        "server": args.server, "options": args.server_options, "duration_s": round(duration, 1),
        "requests": {k: dict(v) for k, v in sorted(by_kind.items())},
        "kills": dict(kill_roles), "hups": len(hups),
        "failures per worker kill": round(sum(1 for r in results if r.outcome == "failed")
                                          / max(1, kill_roles.get("worker", 0)), 2),
        "hostile": dict(stats),
        "resources": {"before": before, "after": after},
        "after TERM": {"processes left": survivors, "/dev/shm entries": f"{shm_start} before start, {shm_end} after"},
        "failures": [dataclasses.asdict(r) for r in results if r.outcome == "failed"][:100],
        "unexpected": [dataclasses.asdict(r) for r in unexpected[:20]],
        "wrong": [dataclasses.asdict(r) for r in wrong[:20]],
    }
    print(f"\n== chaos: {args.server} {' '.join(args.server_options)} — {duration:.0f} s")
    kinds = [k for k in ("hello", "upload", "download", "stream", "trickle down", "trickle up", "all") if k in by_kind]
    cols = ["ok", "failed, expected", "failed, UNEXPECTED", "wrong"]
    print(f"{'requests':<12}" + "".join(f"{c:>20}" for c in cols))
    for k in kinds:
        print(f"{k:<12}" + "".join(f"{by_kind[k].get(c, 0):>20}" for c in cols))
    print(f"kills: {dict(kill_roles)}; SIGHUPs: {len(hups)}; failures per worker kill: "
          f"{out['failures per worker kill']}")
    print(f"hostile clients: {dict(stats)}")
    print(f"{'resources':<18}{'before':>10}{'after':>10}")
    for key, value in before.items():
        print(f"{key:<18}{value:>10}{after.get(key, 0):>10}")
    print(f"after TERM: {len(survivors)} process(es) of the tree left; /dev/shm entries {shm_start} -> {shm_end}")
    for survivor in survivors:
        print(f"  LEFT AFTER TERM: {survivor}")
    for r in unexpected[:10]:
        print(f"  UNEXPECTED {r.kind} {r.detail} pid={r.pid} t=[{r.start:.2f}, {r.end:.2f}] {r.verdict}")
    for r in wrong[:10]:
        print(f"  WRONG BYTES {r.kind} {r.detail} pid={r.pid}")
    return out


# ---------------------------------------------------------------- running it


def start_server(args: argparse.Namespace, logdir: str) -> Server:
    if args.server == "gunicorn":
        argv = [sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{{port}}", "-k", "sync", "--no-control-socket",
                *(args.server_options or ["-w", "3", "--timeout", "30"]), APP]
        server = Server("gunicorn-chaos", argv, log_dir=None, env=subprocess_env(), probe="/hello")
    else:
        argv = [sys.executable, "-m", "a2wsgi_mp", APP, "--host", HOST, "--port", "{port}", "--no-access-log",
                *(args.server_options or ["--workers", "3"])]
        server = Server("a2wsgi-chaos", argv, env=subprocess_env(), probe="/hello")
    server.start().wait_ready(60)
    return server


async def run_chaos(args: argparse.Namespace, server: Server, plan: Plan) -> dict[str, Any]:
    rng = random.Random(args.seed)
    stop = asyncio.Event()
    results: list[Result] = []
    kills: list[tuple[float, int, str]] = []
    hups: list[float] = []
    stats: collections.Counter = collections.Counter()
    tree = Tree(server.pid)
    before = await asyncio.to_thread(_settled_snapshot, tree, 1.0)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(client(server.url, plan, args.seed * 1000 + i, stop, results))
             for i in range(args.clients)]
    tasks += [asyncio.ensure_future(non_reader(server.port, stop, random.Random(args.seed + i), stats))
              for i in range(args.non_readers)]
    tasks += [asyncio.ensure_future(trickler(server.url, plan, stop, results)) for _ in range(args.tricklers)]
    tasks.append(asyncio.ensure_future(chaos(tree, args.server, stop, rng, kills, hups, args.hup_every,
                                             (args.kill_min, args.kill_max) if args.kills else (1e9, 1e9))))
    tasks.append(asyncio.ensure_future(tree.follow(stop)))
    await asyncio.sleep(args.duration)
    stop.set()
    try:
        ended = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 180)
    except asyncio.TimeoutError:
        for task in tasks:
            task.cancel()
        stats["clients still running after 180 s"] += 1
        ended = []
    # A task that died early (the killer, the follower, a client) leaves only odd counts: say why.
    errors = [f"{type(e).__name__}: {e}" for e in ended
              if isinstance(e, BaseException) and not isinstance(e, asyncio.CancelledError)]
    duration = time.monotonic() - t0
    after = await asyncio.to_thread(_settled_snapshot, tree, args.settle)
    classify(results, kills, hups)
    return {"results": results, "kills": kills, "hups": hups, "stats": stats, "errors": errors, "before": before,
            "after": after, "tree": tree, "duration": duration}


def _settled_snapshot(tree: Tree, settle: float) -> dict[str, int]:
    """The tree's resources once idle: after ``settle`` s, and once two looks agree."""
    time.sleep(settle)
    last = snapshot(tree)
    for _ in range(20):
        time.sleep(0.5)
        now = snapshot(tree)
        if now == last:
            return now
        last = now
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("a2wsgi", "gunicorn"), default="a2wsgi")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--non-readers", type=int, default=2)
    parser.add_argument("--tricklers", type=int, default=1)
    parser.add_argument("--kill-min", type=float, default=2.0)
    parser.add_argument("--kill-max", type=float, default=3.0)
    parser.add_argument("--no-kills", dest="kills", action="store_false")
    parser.add_argument("--hup-every", type=float, default=5.0, help="0 = no SIGHUP")
    parser.add_argument("--scale", type=float, default=1.0, help="body sizes x this (CI: 0.05)")
    parser.add_argument("--settle", type=float, default=7.0,
                        help="seconds before the 'after' look (keep-alive connections close after 5 s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--log", help="write the server's log here")
    parser.add_argument("server_options", nargs=argparse.REMAINDER,
                        help="after --: the server's own options (default: --workers 3 / -w 3 --timeout 30)")
    args = parser.parse_args(argv)
    if args.server_options[:1] == ["--"]:
        args.server_options = args.server_options[1:]
    out = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0 if out["ok"] else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, run the chaos, stop it, and report (``out["ok"]``: nothing unexpected)."""
    plan = Plan.make(args.scale, random.Random(args.seed))
    shm_start = _shm_entries()
    logdir = tempfile.mkdtemp(prefix="chaos-")
    server = start_server(args, logdir)
    try:
        data = asyncio.run(run_chaos(args, server, plan))
        data["log"] = server.log()
        members = data["tree"].members()
        titles = {p.pid: _title(p) for p in [*members, *tree_descendants(server.pid)]}
    finally:
        left = server.stop()  # TERM, then whatever of the tree outlived it (killed, and reported here)
    outlived = psutil.wait_procs(members, 5.0)[1]
    for p in outlived:  # (reported below; not left behind)
        try:
            p.kill()
        except psutil.Error:
            pass
    survivors = [f"{pid} {titles.get(pid, '?')}" for pid in sorted({p.pid for p in left} | {p.pid for p in outlived})]
    wait_for(lambda: _shm_entries() <= shm_start, 5.0)
    shm_end = _shm_entries()
    out = report(args, data["results"], data["kills"], data["hups"], data["stats"], data["before"], data["after"],
                 survivors, shm_start, shm_end, data["duration"])
    leaks = {k for k in ("memfds", "unlinked files") if data["after"][k] > data["before"][k]}
    out["leaks"] = sorted(leaks)
    out["task errors"] = data["errors"]
    if data["errors"]:
        print(f"tasks that died of an error: {data['errors']}")
    out["ok"] = not out["unexpected"] and not out["wrong"] and not survivors and not leaks and shm_end <= shm_start
    if args.log:
        with open(args.log, "w") as f:
            f.write(data.get("log", ""))
    print("OK: nothing unexpected" if out["ok"] else f"NOT OK: leaks={sorted(leaks)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
