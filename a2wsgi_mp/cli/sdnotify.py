"""systemd's notification protocol (``sd_notify(3)``), without libsystemd.

With ``Type=notify`` systemd starts the unit's dependants on ``READY=1`` (not
on ``exec``, before the app could even be imported), shows the ``STATUS=``
line in ``systemctl status``, and with ``WatchdogSec=`` restarts a server
whose event loop stopped sending ``WATCHDOG=1``.  The protocol is one datagram
of ``KEY=VALUE`` lines to the Unix socket named by ``$NOTIFY_SOCKET`` (``@``:
the abstract namespace).  Without that variable every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

logger = logging.getLogger("a2wsgi_mp")


class Notifier:
    """Sends ``sd_notify`` messages to ``$NOTIFY_SOCKET`` (read once, then removed from the
    environment so that the pool's processes, which are not the unit's main process, never try)."""

    def __init__(self, environ: os._Environ[str] | dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.pop("WATCHDOG_USEC", "")
        pid = env.pop("WATCHDOG_PID", "")
        #: Seconds between watchdog pings (half systemd's WatchdogSec), or 0: none asked for.
        self.watchdog = int(usec) / 2e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0.0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop: a reader that fell behind (its queue holds only
                # net.unix.max_dgram_qlen datagrams) costs a message, not the server.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # systemd gone, the queue full, or not a socket: never fatal
            logger.debug("sd_notify %s failed: %s", lines, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload to this message.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading the workers")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    async def keep_watchdog(self) -> None:
        """``WATCHDOG=1`` every half ``WatchdogSec`` while this event loop runs."""
        while self.watchdog:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
