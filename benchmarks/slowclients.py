"""Slow uploaders for P4: N raw-socket clients trickling a chunked POST body.

Each client connects to 127.0.0.1:PORT, sends the request head of a chunked
``POST /upload`` and then one byte every ``--interval`` seconds.  After
``--duration`` seconds every client sends the last chunk and waits (at most
``--drain`` seconds) for the answer.  A client whose connection is refused or
reset reconnects until the deadline.  Everything is bounded in time; a JSON
summary goes to stdout.

    python -m benchmarks.slowclients --port 8000 --clients 200 --duration 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

HEAD = (
    "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
    "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
)


async def client(port: int, deadline: float, interval: float, drain: float, stats: dict) -> None:
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
            stats["connects"] += 1
            writer.write(HEAD.format(port=port).encode())
            sent = 0
            while time.monotonic() < deadline:
                writer.write(b"1\r\nx\r\n")
                await asyncio.wait_for(writer.drain(), 2.0)
                sent += 1
                stats["bytes"] += 1
                await asyncio.sleep(interval)
            writer.write(b"0\r\n\r\n")
            await asyncio.wait_for(writer.drain(), 2.0)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), drain)
                status = head.split(b" ", 2)[1].decode() if b" " in head else "?"
                stats["status"][status] = stats["status"].get(status, 0) + 1
                if status == "200":
                    body = await asyncio.wait_for(reader.read(64), 0.5)
                    if body.strip() == str(sent).encode():
                        stats["complete_ok"] += 1
                    else:
                        stats["bad_count"] += 1
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                stats["no_answer"] += 1
            return
        except (OSError, asyncio.TimeoutError) as exc:
            key = type(exc).__name__
            stats["errors"][key] = stats["errors"].get(key, 0) + 1
            await asyncio.sleep(0.1)
        finally:
            if writer is not None:
                writer.close()


async def main_async(args: argparse.Namespace) -> dict:
    stats = {"clients": args.clients, "connects": 0, "bytes": 0, "status": {}, "complete_ok": 0,
             "bad_count": 0, "no_answer": 0, "errors": {}}
    deadline = time.monotonic() + args.duration
    tasks = []
    for i in range(args.clients):
        tasks.append(asyncio.create_task(client(args.port, deadline, args.interval, args.drain, stats)))
        if i % 20 == 19:
            await asyncio.sleep(0.01)  # don't overflow the listen backlog all at once
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                               args.duration + args.drain + 5)
    except asyncio.TimeoutError:
        stats["errors"]["overall_timeout"] = 1
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--drain", type=float, default=3.0)
    args = parser.parse_args()
    stats = asyncio.run(main_async(args))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
