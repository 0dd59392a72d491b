"""A keypad probe for the QEMU guest: opens the keypad exactly as the firmware does for board
"qemu" (firmware/app/devices.py's make_keypad: evdev device by name, the board's key map, the
default decoder) and prints every firmware Key it reads on stdout, the guest console (ttyS0).

Usage in the guest: python -m board.qemu.keyprobe --count N [--timeout S]. Lines:
  KEYPROBE-READY <device path>      the device is open and grabbed: keys sent now are read
  KEYPROBE-KEY <Key name>[ repeat]  one KeyPress as next_key() returned it
  KEYPROBE-DONE keys=.. unmapped=.. bounced=.. overflowed=.. timed_out=0|1
  KEYPROBE-ERROR <why>               no keypad (not found, not grabbed, gone); exit status 2
Exit status 0 when N keys were read before the timeout, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from drivers.keypad import KeypadUnavailable
from firmware.app.boards import profile

# The firmware's own construction path, so the probe reads keys through what the terminal runs.
from firmware.app.devices import make_keypad

READY = "KEYPROBE-READY"
KEY = "KEYPROBE-KEY"
DONE = "KEYPROBE-DONE"
ERROR = "KEYPROBE-ERROR"
BOARD = "qemu"


async def probe(count: int, timeout: float) -> int:
    """Reads `count` keys (or until `timeout` seconds pass) and prints them; returns the exit status."""
    keypad = make_keypad(profile(BOARD))
    read = 0
    timed_out = False
    try:
        print(f"{READY} {keypad.path}", flush=True)
        try:
            async with asyncio.timeout(timeout):
                while read < count:
                    press = await keypad.next_key()
                    read += 1
                    print(f"{KEY} {press.key.name}{' repeat' if press.repeat else ''}", flush=True)
        except TimeoutError:
            timed_out = True
        # The decoder's counters tell a lost key (unmapped, bounced) from one never sent.
        decoder = keypad.decoder
        print(f"{DONE} keys={read} unmapped={decoder.unmapped} bounced={decoder.bounced} "
              f"overflowed={keypad.overflowed} timed_out={int(timed_out)}", flush=True)
    finally:
        keypad.close()
    return 0 if read == count else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.qemu.keyprobe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, required=True, help="keys to read, then exit")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for them all")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(probe(args.count, args.timeout))
    except KeypadUnavailable as exc:
        print(f"{ERROR} {exc}", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
