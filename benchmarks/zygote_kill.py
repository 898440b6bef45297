"""Requests failed per zygote kill: closed-loop clients against a real server.

``python -m benchmarks.zygote_kill [--kills 3] [--clients 4] [--workers 2]``

Starts the CLI on a free port with ``tests.apps.sup_faults:app``, runs
``--clients`` closed-loop clients (each sends its next request when the last
one is answered), SIGKILLs the zygote ``--kills`` times (waiting each time for
the new zygote to be up, at least 1 s apart), and prints the status counts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import time

import httpx
import psutil

from tests.serverproc import Server, wait_for


def zygote(server: Server) -> psutil.Process | None:
    return next((p for p in server.descendants() if p.ppid() == server.pid), None)


async def run(args: argparse.Namespace, server: Server) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    stop = asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                try:
                    counts[(await http.get(server.url + "/sleep?0.002")).status_code] += 1
                except httpx.TransportError:
                    counts["transport error"] += 1

    tasks = [asyncio.ensure_future(client()) for _ in range(args.clients)]
    await asyncio.sleep(1.0)
    for _ in range(args.kills):
        victim = zygote(server)
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        t0 = time.monotonic()
        await asyncio.to_thread(
            wait_for, lambda: (z := zygote(server)) is not None and z.pid != victim.pid, 15)  # noqa: B023
        print(f"zygote {victim.pid} killed; new zygote after {(time.monotonic() - t0) * 1000:.0f} ms")
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with Server.cli("tests.apps.sup_faults:app", "--workers", str(args.workers), "--no-access-log") as server:
        counts = asyncio.run(run(args, server))
    total = sum(counts.values())
    failed = total - counts[200]
    print(f"{total} requests, {failed} failed ({dict(counts)}); {failed / args.kills:.1f} failed per zygote kill")


if __name__ == "__main__":
    main()
