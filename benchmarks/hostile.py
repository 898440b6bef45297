"""Hostile clients against a real ``a2wsgi-mp`` server on 127.0.0.1: what the front holds.

Starts the CLI (``tests.apps.core_app:app``, 1 worker) on a free 127.0.0.1
port, runs the attacks of issue 11 one after the other, samples the front's
RSS (the uvicorn process only, every 20 ms) and prints one JSON summary.
Everything is bounded (sizes, counts, a deadline per attack) and the server is
stopped by pid at the end (TERM, then KILL).

    python -m benchmarks.hostile                       # httptools, header timeout 3 s
    python -m benchmarks.hostile --http h11 --only big_heads,idle

Attacks:

* ``big_heads``: 50 connections each send an unfinished 10 MB header, then
  hold the connection; RSS before, peak and after.
* ``full_heads``: 200 connections each send the largest head the default
  limits allow (98 fields of 8 KB), unfinished, and hold it: what the front keeps.
* ``huge_head``: one 256 MB header, while another client times /hello
  (the worst stall of the other requests).
* ``many_headers``: 10,000 small headers: the status code.
* ``idle``: 2,000 connections that never send a byte: how many the server
  closed within header-timeout + 5 s.
* ``slowloris``: 200 connections sending a head one byte per second: how many
  closed (and answered 408) within header-timeout + 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import psutil

from benchmarks.servers import stop_tree

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Front:
    """The server process under attack, with an RSS sampler."""

    def __init__(self, http: str, header_timeout: float, extra: list[str]) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        argv = [sys.executable, "-m", "a2wsgi_mp", "tests.apps.core_app:app", "--port", str(self.port),
                "--workers", "1", "--log-level", "error", "--no-access-log", "--http", http,
                "--header-timeout", str(header_timeout), *extra]
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)
        self.peak = 0
        self._sampling = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}")
            try:
                if b" 200 " in get(self.port, "/hello", 2.0)[:20]:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("the server did not come up within 60 s")

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def sample(self) -> "Front":
        self.peak = self.rss()
        self._sampling = True

        def loop() -> None:
            while self._sampling:
                try:
                    self.peak = max(self.peak, self.rss())
                except psutil.Error:
                    return
                time.sleep(0.02)

        threading.Thread(target=loop, daemon=True).start()
        return self

    def end_sample(self) -> int:
        self._sampling = False
        return self.peak

    def stop(self) -> None:
        children = []
        try:
            children = self.ps.children(recursive=True)
        except psutil.Error:
            pass
        stop_tree(self.proc, children, 15)  # (children by pid, in case one outlived the front)


def get(port: int, path: str, timeout: float) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def status_of(data: bytes) -> int | None:
    try:
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    except (IndexError, ValueError):
        return None


async def read_status(reader: asyncio.StreamReader, timeout: float) -> int | None:
    try:
        return status_of(await asyncio.wait_for(reader.read(4096), timeout))
    except (OSError, asyncio.TimeoutError):
        return None


async def send_big_head(port: int, size: int, hold: float, stats: dict) -> None:
    """Send an unfinished header of ``size`` bytes, then hold the connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ")
    piece = b"a" * (64 * 1024)
    sent = 0
    try:
        while sent < size:
            writer.write(piece)
            await asyncio.wait_for(writer.drain(), 30)
            sent += len(piece)
        stats["sent_all"] += 1
    except (OSError, asyncio.TimeoutError):
        pass
    stats["sent_bytes"] += sent
    status = await read_status(reader, hold)
    stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
    writer.close()


async def big_heads(front: Front, args: argparse.Namespace) -> dict[str, Any]:
    before = front.rss()
    front.sample()
    stats: dict[str, Any] = {"sent_all": 0, "sent_bytes": 0, "statuses": {}}
    await asyncio.wait_for(asyncio.gather(*(send_big_head(front.port, 10 * MB, 5.0, stats) for _ in range(50))), 120)
    peak = front.end_sample()
    return {"connections": 50, "header_mb": 10, "rss_before_mb": before / MB, "rss_peak_mb": peak / MB,
            "rss_after_mb": front.rss() / MB, **stats}


async def full_heads(front: Front, args: argparse.Namespace) -> dict[str, Any]:
    """The most a head may legally hold, unfinished, on many connections at once."""
    count = 200
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-F%02d: %s\r\n" % (i, b"a" * 8000) for i in range(98))
    before = front.rss()
    front.sample()
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(HOST, front.port)
        writer.write(head)
        conns.append((reader, writer))
    for _r, w in conns:
        await asyncio.wait_for(w.drain(), 30)
    await asyncio.sleep(2.0)  # let the server read it all
    held = front.rss()
    peak = front.end_sample()
    for _r, w in conns:
        w.close()
    return {"connections": count, "head_kb": len(head) // 1024, "rss_before_mb": before / MB,
            "rss_held_mb": held / MB, "rss_peak_mb": peak / MB,
            "per_connection_kb": (held - before) / count / 1024}


async def huge_head(front: Front, args: argparse.Namespace) -> dict[str, Any]:
    before = front.rss()
    front.sample()
    stats: dict[str, Any] = {"sent_all": 0, "sent_bytes": 0, "statuses": {}}
    done = asyncio.Event()
    worst = 0.0

    async def probe() -> None:
        nonlocal worst
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                await asyncio.to_thread(get, front.port, "/hello", 30.0)
            except OSError:
                pass  # timed out: counted as the time it took
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.05)

    prober = asyncio.ensure_future(probe())
    await asyncio.wait_for(send_big_head(front.port, 256 * MB, 5.0, stats), 180)
    done.set()
    await prober
    peak = front.end_sample()
    return {"header_mb": 256, "rss_before_mb": before / MB, "rss_peak_mb": peak / MB, "rss_after_mb": front.rss() / MB,
            "worst_hello_s": worst, **stats}


async def many_headers(front: Front, args: argparse.Namespace) -> dict[str, Any]:
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\n"
    reader, writer = await asyncio.open_connection(HOST, front.port)
    writer.write(head)
    try:
        await asyncio.wait_for(writer.drain(), 30)
    except (OSError, asyncio.TimeoutError):
        pass
    status = await read_status(reader, 30)
    writer.close()
    return {"headers": 10_000, "status": status}


async def _watch_closed(reader: asyncio.StreamReader, deadline: float) -> tuple[bool, int | None]:
    """(closed by the server before the deadline, status it sent)."""
    data = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), max(0.01, deadline - time.monotonic()))
            if not chunk:
                return True, status_of(data)
            data += chunk
    except asyncio.TimeoutError:
        return False, status_of(data)
    except OSError:
        return True, status_of(data)


async def idle(front: Front, args: argparse.Namespace) -> dict[str, Any]:
    count = args.idle
    conns = []
    for _ in range(count):
        conns.append(await asyncio.open_connection(HOST, front.port))
    t0 = time.monotonic()
    deadline = t0 + args.header_timeout + 5
    results = await asyncio.gather(*(_watch_closed(r, deadline) for r, _w in conns))
    for _r, w in conns:
        w.close()
    closed = sum(1 for c, _s in results if c)
    return {"connections": count, "header_timeout_s": args.header_timeout, "closed": closed,
            "answered": sum(1 for _c, s in results if s is not None), "waited_s": time.monotonic() - t0}


async def slowloris(front: Front, args: argparse.Namespace) -> dict[str, Any]:
    count = 200
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    t0 = time.monotonic()
    deadline = t0 + args.header_timeout + 5

    async def one() -> tuple[bool, int | None]:
        reader, writer = await asyncio.open_connection(HOST, front.port)
        watch = asyncio.ensure_future(_watch_closed(reader, deadline))
        try:
            for byte in head:
                if watch.done():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(1.0)
        except OSError:
            pass
        result = await watch
        writer.close()
        return result

    results = await asyncio.gather(*(one() for _ in range(count)))
    statuses: dict[str, int] = {}
    for _c, s in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    return {"connections": count, "byte_interval_s": 1.0, "header_timeout_s": args.header_timeout,
            "closed": sum(1 for c, _s in results if c), "statuses": statuses, "waited_s": time.monotonic() - t0}


ATTACKS: dict[str, Callable[[Front, argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "big_heads": big_heads, "full_heads": full_heads, "huge_head": huge_head, "many_headers": many_headers,
    "idle": idle,
    "slowloris": slowloris,
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    p.add_argument("--header-timeout", type=float, default=3.0)
    p.add_argument("--idle", type=int, default=2000, help="idle connections (default: %(default)s)")
    p.add_argument("--only", default=",".join(ATTACKS), help="comma-separated attacks")
    p.add_argument("--server-args", default="",
                   help="more CLI options for the server, e.g. '--limit-request-head 65536'")
    p.add_argument("--baseline", metavar="TREE",
                   help="serve from this source tree (e.g. a `git archive` of an older commit) without the "
                        "head-limit options, to measure it the same way")
    args = p.parse_args(argv)
    global REPO
    if args.baseline:
        REPO = Path(args.baseline).resolve()
    extra: list[str] = args.server_args.split()
    results: dict[str, Any] = {"http": args.http}
    for name in args.only.split(","):
        front = Front(args.http, args.header_timeout, extra) if not args.baseline else _baseline(args)
        try:
            results[name] = asyncio.run(ATTACKS[name](front, args))
        finally:
            front.stop()
        print(name, json.dumps(results[name]), file=sys.stderr)
    print(json.dumps(results, indent=2))


def _baseline(args: argparse.Namespace) -> Front:
    """A front started without the options a tree before the limits lacks."""
    front = Front.__new__(Front)
    front.port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, "-m", "a2wsgi_mp", "tests.apps.core_app:app", "--port", str(front.port), "--workers", "1",
            "--log-level", "error", "--no-access-log"]
    front.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    front.ps = psutil.Process(front.proc.pid)
    front.peak, front._sampling = 0, False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if b" 200 " in get(front.port, "/hello", 2.0)[:20]:
                return front
        except OSError:
            time.sleep(0.1)
    front.stop()
    raise SystemExit("the baseline server did not come up")


if __name__ == "__main__":
    main()
