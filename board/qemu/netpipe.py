"""One guest TCP connection, handed over by QEMU user-mode networking, piped to a host port.

QEMU's `guestfwd=tcp:ADDR:PORT-cmd:...` starts this program for every connection the guest opens
to ADDR:PORT, with the connection on stdin and stdout. It connects to HOST:PORT (the acquirer
simulator on 127.0.0.1) and copies bytes both ways until either side closes, so the guest reaches
the simulator only through QEMU and no packet leaves loopback.

    python board/qemu/netpipe.py 127.0.0.1 5800
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def pipe(host: str, port: int, guest_in: int = 0, guest_out: int = 1) -> int:
    try:
        upstream = socket.create_connection((host, port), timeout=5)
    except OSError as error:
        print(f"netpipe: cannot reach {host}:{port}: {error}", file=sys.stderr)
        return 1
    upstream.settimeout(None)
    selector = selectors.DefaultSelector()
    selector.register(guest_in, selectors.EVENT_READ, "guest")
    selector.register(upstream, selectors.EVENT_READ, "host")
    while True:
        for key, _ in selector.select():
            if key.data == "guest":
                data = os.read(guest_in, 65536)
                if not data:
                    upstream.close()
                    return 0
                upstream.sendall(data)
            else:
                try:
                    data = upstream.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(guest_out, view):]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not (args[1].isascii() and args[1].isdigit()):
        print("usage: netpipe.py HOST PORT", file=sys.stderr)
        return 2
    return pipe(args[0], int(args[1]))


if __name__ == "__main__":
    raise SystemExit(main())
