"""A test-only entry: `python -m board.sim.firmware` as an IC terminal, whose sign-on header
says application type 61 (firmware.host.messages.signon_request ic=True), so the simulator asks
it to load the chip parameters. Used by tests/test_param_download.py through
helpers.TerminalProcess(module="ic_entry"); the app does not yet say 61 by itself."""

from __future__ import annotations

import functools
import sys

import firmware.host.channel as channel
from board.sim.firmware import main
from firmware.host.messages import signon_request

channel.signon_request = functools.partial(signon_request, ic=True)  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main())
