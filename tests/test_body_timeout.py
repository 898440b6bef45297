"""``--body-timeout``: a request body that stops coming gets 408 (nginx's client_body_timeout)."""

from __future__ import annotations

import socket
import time

from .serverproc import HOST, Server


def _post_head(length: int) -> bytes:
    return (f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def test_a_stalled_body_gets_408_and_a_slow_live_one_does_not():
    srv = Server.cli("tests.apps.core_app:app", "--workers", "1", "--no-access-log", "--body-timeout", "1",
                     ready_path="/hello")
    with srv:
        # Live but slow: a piece every 0.4 s (each read within the timeout) -> served.
        with socket.create_connection((HOST, srv.port), timeout=10) as s:
            s.sendall(_post_head(40))
            for _ in range(4):
                s.sendall(b"x" * 10)
                time.sleep(0.4)
            reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        # Stalled: 10 of 100 bytes then nothing, or the head and no body at all -> 408 after about
        # a second, connection closed.
        for sent in (b"x" * 10, b""):
            with socket.create_connection((HOST, srv.port), timeout=10) as s:
                s.sendall(_post_head(100) + sent)
                t0 = time.monotonic()
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
                waited = time.monotonic() - t0
            assert reply.startswith(b"HTTP/1.1 408"), reply
            assert b"connection: close" in reply.lower()
            assert 0.9 < waited < 4, waited
