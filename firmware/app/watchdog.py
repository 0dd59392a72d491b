"""The systemd notify protocol (sd_notify) without a library: READY=1 once the terminal is up,
STATUS= lines in words, WATCHDOG=1 pets from the event loop, STOPPING=1 at the end.

A datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" in the abstract
namespace). The pets run as a task of the firmware's own event loop every half of
$WATCHDOG_USEC, so a loop that is stuck (a blocking call, an endless step) stops petting and
systemd restarts the service after WatchdogSec. Nothing at all happens when NOTIFY_SOCKET is
unset (a development run, the tests), and a send that fails is logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("posfw.watchdog")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        where = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = ("\0" + where[1:] if where.startswith("@") else where) or None
        self.interval: float | None = None  # seconds between pets; None: no watchdog asked
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if self.address and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.interval = int(usec) / 2 / 1_000_000
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of `lines` (e.g. "READY=1", "STATUS=..."); False when it did not go."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self.address)
            return True
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", lines[0] if lines else "", exc)
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    async def pet(self) -> None:
        """WATCHDOG=1 every `interval` for as long as the event loop runs it (cancel to stop)."""
        if self.interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
