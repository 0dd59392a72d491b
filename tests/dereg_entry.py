"""Test-only entry: `python -m tests.dereg_entry ARGS` runs board.sim.firmware as it is, with one
addition: it SIGKILLs itself at the deregistration step named by POSFW_KILL_AT_STEP (a power
cut there), through the terminal's fault hook that every step passes.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from board.sim.firmware import main
from firmware.app.terminal import Terminal
from firmware.engine.deregistration import DeregStep

KILL_AT = os.environ.get("POSFW_KILL_AT_STEP", "")


class KillableTerminal(Terminal):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fault_hook = self._kill_hook  # before open(): a resumed wipe passes it too

    @staticmethod
    def _kill_hook(action: object) -> None:
        if KILL_AT and isinstance(action, DeregStep) and action.step == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    # A deregistered terminal runs on factory settings, whose comms.ecr_auth is "paired" (and its
    # paired tills are wiped): these tests drive it unauthenticated, as tests/helpers.py
    # provisions every test terminal ("open", which the sim board allows).
    from firmware.settings.model import FACTORY

    FACTORY["comms"]["ecr_auth"] = "open"
    raise SystemExit(main(terminal_class=KillableTerminal))
