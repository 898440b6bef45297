"""Micro-benchmark of a response's head: ``start_response`` (validation) and the front's START decode.

* ``start_response``: :class:`a2wsgi_mp.response.StartResponse` called with a
  Django page's headers (8, with a CSRF ``Set-Cookie``) and with 2; this runs
  in the pool worker or, for ``WSGIMiddleware``, in the server's process.
* ``decode START``: :class:`a2wsgi_mp.ipc.protocol.Decoder` fed one START
  frame with those headers; this runs in the front, the project's bottleneck.

Usage: ``PYTHONPATH=REPO python -m benchmarks.headers_micro``; run it against
two checkouts alternately to compare (the machine's noise is ±30 %).
"""

from __future__ import annotations

import time
import timeit

from a2wsgi_mp.ipc import protocol
from a2wsgi_mp.response import StartResponse

DJANGO = [
    ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "1234"), ("X-Frame-Options", "DENY"),
    ("Vary", "Cookie"), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Set-Cookie", " csrftoken=abcdefghijklmnopqrstuvwxyz0123456789; expires=Thu, 25 Nov 2027 16:00:00 GMT; "
                   "Max-Age=31449600; Path=/; SameSite=Lax"),
]


class _Sink:
    pass


def _best_us(fn, number: int = 50_000, repeat: int = 15) -> float:
    # CPU time of this process, best of many: on a shared machine, wall time mostly measures the others.
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)) / number * 1e6


def main() -> None:
    for label, headers in (("2 headers", DJANGO[:2]), ("8 headers", DJANGO)):
        start = lambda: StartResponse(_Sink())("200 OK", headers)  # noqa: B023, E731 (timed in this iteration)
        print(f"start_response, {label}: {_best_us(start):.2f} us")
    for label, headers in (("2 headers", DJANGO[:2]), ("8 headers", DJANGO)):
        encoded = [(n.strip().lower().encode("latin-1"), v.strip().encode("latin-1")) for n, v in headers]
        frame = protocol.encode_start(7, 200, encoded, b"hello world", True)
        decoder = protocol.Decoder()

        def decode() -> None:  # (timed in this iteration: the loop variables are the ones meant)
            decoder.feed(frame)  # noqa: B023
            for _ in decoder.events():  # noqa: B023
                pass

        print(f"decode START, {label}: {_best_us(decode):.2f} us")


if __name__ == "__main__":
    main()
