"""Micro-benchmark of the front <-> worker IPC: ``--ipc pipe`` vs ``--ipc shm``.

No HTTP: the ASGI app (:class:`a2wsgi_mp.WSGIPool`) is called directly in a
uvloop loop, one request at a time, with one worker.  For each body size it
times

* down: the worker returns a body of that size (a one-element list), the
  front receives all of it;
* down-stream: the same body streamed in 64 KiB chunks;
* up: the front sends a request body of that size, the worker reads it all.

Usage: ``python -m benchmarks.ipc_micro [--repeat N]``.  Prints a Markdown
table of medians (ms per request and MB/s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from a2wsgi_mp.pool.app import WSGIPool

APP = "tests.apps.transport_app:app"
SIZES = [("1 KiB", 1024), ("64 KiB", 64 * 1024), ("1 MiB", 1024 * 1024), ("64 MiB", 64 * 1024 * 1024)]


def _scope(method: str, path: str, query: str, length: int) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"content-length", str(length).encode())] if length else [],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }


async def _one(pool: WSGIPool, method: str, path: str, query: str, body: bytes) -> int:
    received = 0
    sent_body = False

    async def receive():
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            # The front spools what it receives; hand it over in 1 MiB pieces as a server would.
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        nonlocal received
        if message["type"] == "http.response.body":
            received += len(message.get("body", b""))

    await pool(_scope(method, path, query, len(body)), receive, send)
    return received


async def _bench(ipc: str, repeat: int) -> dict[tuple[str, str], float]:
    pool = WSGIPool(APP, workers=1, threads=1, ipc=ipc, timeout=120)
    await pool.startup()
    out: dict[tuple[str, str], float] = {}
    try:
        for label, size in SIZES:
            n = repeat if size < 16 * 1024 * 1024 else max(3, repeat // 10)
            up = b"x" * size
            cases = {
                "down": ("GET", "/once", f"size={size}", b""),
                "down-stream": ("GET", "/download", f"mib=1&chunk={min(size, 65536)}", b""),
                "up": ("POST", "/drain", "", up),
            }
            for name, (method, path, query, body) in cases.items():
                if name == "down-stream" and size != 1024 * 1024:
                    continue  # streamed: one size is enough (64 KiB chunks of 1 MiB)
                for _ in range(2):
                    await _one(pool, method, path, query, body)
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await _one(pool, method, path, query, body)
                    times.append(time.perf_counter() - t0)
                out[(name, label)] = statistics.median(times)
    finally:
        await pool.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    # Alternate the transports and keep each one's best median: the first run
    # of a process pays warm-up costs that are not the transport's.
    results: dict[str, dict[tuple[str, str], float]] = {}
    for ipc in ("pipe", "shm", "pipe", "shm"):
        for key, value in run(_bench(ipc, args.repeat)).items():
            results.setdefault(ipc, {})[key] = min(value, results.get(ipc, {}).get(key, value))
    sizes = dict(SIZES)
    print("| direction | body | pipe ms | shm ms | pipe MB/s | shm MB/s |")
    print("|---|---|---|---|---|---|")
    for key in results["pipe"]:
        name, label = key
        size = sizes[label]
        p, s = results["pipe"][key], results["shm"][key]
        print(f"| {name} | {label} | {p * 1e3:.3f} | {s * 1e3:.3f} | {size / p / 1e6:.0f} | {size / s / 1e6:.0f} |")


if __name__ == "__main__":
    main()
