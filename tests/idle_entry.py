"""Test-only entry: `python -m tests.idle_entry ARGS` runs the firmware as a device runs it
(`python -m firmware.app ARGS`), and on SIGUSR1 writes the names of every module it has imported
so far (sys.modules, sorted, as JSON) to the file POSFW_MODULES_FILE names: what the idle screen
costs in imports (tests/test_idle_imports.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from firmware.app.main import main

MODULES_FILE = "POSFW_MODULES_FILE"


def write_modules(signum: int, frame: FrameType | None) -> None:
    """Runs in the main thread between two bytecodes of the event loop (a Python signal handler)."""
    target = Path(os.environ[MODULES_FILE])
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(sys.modules)))
    os.replace(tmp, target)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, write_modules)
    raise SystemExit(main())
