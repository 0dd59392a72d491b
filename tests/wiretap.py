"""A TCP tap between the terminal and the acquirer simulator: the bytes on the wire, as sent.

Forwards every connection on 127.0.0.1 to the host port and keeps each frame (2-byte length
prefix and payload) in the order it crossed, with its direction. Tests read the frames and
decode them; nothing here knows ISO 8583 beyond the length prefix.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    to_host: bool  # True: terminal -> host (a request); False: host -> terminal
    payload: bytes  # after the 2-byte length prefix (TPDU onward)


class WireTap:
    """Listen on an ephemeral loopback port; forward to `host_port`; record frames."""

    def __init__(self, host_port: int) -> None:
        self._host_port = host_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frames: list[Frame] = []
        self._changed = threading.Condition()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, name="wiretap-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self._host_port))
            self._sockets += [client, upstream]
            for src, dst, to_host in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, to_host),
                                 name="wiretap-pump", daemon=True).start()

    @staticmethod
    def _read_exact(sock: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _pump(self, src: socket.socket, dst: socket.socket, to_host: bool) -> None:
        try:
            while True:
                prefix = self._read_exact(src, 2)
                if prefix is None:
                    break
                payload = self._read_exact(src, int.from_bytes(prefix, "big"))
                if payload is None:
                    break
                with self._changed:
                    self._frames.append(Frame(to_host, payload))
                    self._changed.notify_all()
                dst.sendall(prefix + payload)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def frames(self) -> list[Frame]:
        with self._changed:
            return list(self._frames)

    def wait_for(self, done: Callable[[list[Frame]], bool], timeout: float = 30.0) -> list[Frame]:
        """Block until `done(frames)` holds (checked on every new frame); AssertionError at the
        deadline, with the frame count."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self._frames):
                left = deadline - time.monotonic()
                assert left > 0, f"wire tap: condition not met after {len(self._frames)} frames"
                self._changed.wait(left)
            return list(self._frames)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
