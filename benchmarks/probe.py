"""A paced latency probe: GET PATH at a fixed rate over one keep-alive connection.

Unlike wrk (closed loop: as many requests as the server can take), this asks
at a steady rate, so the figure is the latency a light user of an async
endpoint sees, not the queueing of a saturating load generator.  Bounded in
time; JSON summary on stdout.

    python -m benchmarks.probe --port 8000 --path /ping --rate 200 --duration 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def probe(port: int, path: str, rate: float, duration: float, timeout: float = 2.0) -> dict:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    interval = 1.0 / rate
    deadline = time.perf_counter() + duration
    reader = writer = None
    next_at = time.perf_counter()
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
            t0 = time.perf_counter()
            writer.write(request)
            status = await asyncio.wait_for(_read_response(reader), timeout)
            latencies.append((time.perf_counter() - t0) * 1e3)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
        next_at = max(next_at + interval, time.perf_counter())
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    if writer is not None:
        writer.close()
    return {"requests": len(latencies), "rate": rate, "statuses": statuses, "errors": errors,
            "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies) if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ping")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(probe(args.port, args.path, args.rate, args.duration))), flush=True)


if __name__ == "__main__":
    main()
