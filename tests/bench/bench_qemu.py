"""bench_qemu: the firmware on the qemu board (TCG): power-on to the idle screen and the
firmware's own share of it (its process start to ready, as it logs it), recovery after a power
cut with a sale at the host, and a QMP key press to the LCD frame that shows it.

Figures only. Needs qemu-system-x86 and the image (`make bench` builds it).
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from board.qemu.image import build  # noqa: E402
from board.qemu.rig import TID, QemuTerminal  # noqa: E402

BOOTS = 3
# The headline figures of the last main(), name -> (value, unit), for the bench infrastructure.
FIGURES: dict[str, tuple[float, str]] = {}
# The firmware's INFO line when it is ready (firmware/app/main.py), with its process's age.
READY_LINE = re.compile(r"terminal ready: .*?([0-9.]+) s after the process started")


def firmware_share(console: str) -> float:
    """The firmware's own seconds to ready in one boot's console (interpreter start included)."""
    found = READY_LINE.findall(console)
    if not found:
        raise RuntimeError("the firmware logged no ready line (is its log level INFO?)")
    return float(found[-1])


def main() -> int:
    image = build(log=lambda line: None)
    boot_s: list[float] = []
    idle_after_cut_s: list[float] = []
    resolved_after_cut_s: list[float] = []
    key_ms: list[float] = []
    share_s: list[float] = []
    # INFO: the firmware logs its ready line, with its own share of the boot, on the console.
    with tempfile.TemporaryDirectory(prefix="bench-qemu-") as tmp, \
            QemuTerminal(Path(tmp), image, reply_timeout=5.0, log_level="INFO") as rig:
        assert rig.sim is not None
        boot_s.append(rig.boot())
        share_s.append(firmware_share(rig.console()))
        for round_ in range(BOOTS):
            # A key at idle: QMP send-key -> kernel -> evdev -> screens -> frame on ttyS4.
            for digit in "123":
                assert rig.lcd is not None and rig.guest is not None
                drawn = len(rig.lcd.frames)
                pressed = time.monotonic()
                rig.guest.send_key(digit)
                at = rig.lcd.wait(lambda f, d=digit: f"0.0{d}" in "\n".join(f.rows),
                                  10, since=drawn)
                key_ms.append((at - pressed) * 1000)
                rig.press("CANCEL")
                rig.wait_idle(10, since=len(rig.lcd.frames) - 1)
                # QEMU plays each send-key as press, hold, release, hold: a key sent before that
                # has drained waits in its queue, and the wait would be counted here.
                time.sleep(0.3)
            # A sale answered late, the power cut while it is at the host, the reversal at start.
            rig.sim.add_fault("delay", mti="0200", seconds=30.0, count=1)
            assert rig.ecr is not None
            rig.ecr.send(op="sale", amount=1000 + round_, card="visa")
            deadline = time.monotonic() + 30
            while not any(r.amount == 1000 + round_ for r in rig.sim.ledger.rows(TID)):
                if time.monotonic() > deadline:
                    raise RuntimeError("the sale never reached the simulator")
                time.sleep(0.02)
            rig.power_cut()
            rig.sim.clear_faults()
            idle_after_cut_s.append(rig.boot())
            share_s.append(firmware_share(rig.console()))
            while rig.ecr.request(op="status", timeout=20)["unresolved"]["REVERSAL_DUE"]:
                time.sleep(0.1)
            assert rig.guest is not None
            resolved_after_cut_s.append(time.monotonic() - rig.guest.started_at)
            boot_s.append(idle_after_cut_s[-1])
    print(f"power-on to idle screen      median {statistics.median(boot_s):5.1f} s  "
          f"max {max(boot_s):5.1f} s  ({len(boot_s)} boots, TCG, 1 vCPU)")
    print(f"  the firmware's own share   median {statistics.median(share_s):5.1f} s  "
          f"max {max(share_s):5.1f} s  (its process start to ready: interpreter, imports, open)")
    print(f"power cut -> idle again      median {statistics.median(idle_after_cut_s):5.1f} s  "
          f"max {max(idle_after_cut_s):5.1f} s")
    print(f"power cut -> reversal acked  median {statistics.median(resolved_after_cut_s):5.1f} s  "
          f"max {max(resolved_after_cut_s):5.1f} s  (from power-on)")
    print(f"QMP key -> LCD frame         median {statistics.median(key_ms):5.1f} ms "
          f"max {max(key_ms):5.1f} ms  ({len(key_ms)} keys)")
    FIGURES.clear()
    FIGURES.update({
        "power_on_to_idle": (round(statistics.median(boot_s), 1), "s"),
        "firmware_share_of_boot": (round(statistics.median(share_s), 1), "s"),
        "power_cut_to_idle": (round(statistics.median(idle_after_cut_s), 1), "s"),
        "power_cut_to_reversal_acked": (round(statistics.median(resolved_after_cut_s), 1), "s"),
        "qmp_key_to_frame": (round(statistics.median(key_ms), 1), "ms"),
    })

    from results import emit  # the recorder beside this script: run_all collects what it emits
    for name, samples, unit, note in (
            ("power_on_to_idle_s", boot_s, "s", f"median of {len(boot_s)} boots, TCG, 1 vCPU"),
            ("firmware_share_of_boot_s", share_s, "s", "process start to the firmware's ready line"),
            ("power_cut_to_idle_s", idle_after_cut_s, "s", "a sale at the host when the power went"),
            ("power_cut_to_reversal_acked_s", resolved_after_cut_s, "s", "from power-on"),
            ("qmp_key_to_frame_ms", key_ms, "ms", f"median of {len(key_ms)} keys")):
        emit(name, statistics.median(samples), unit, group="bench_qemu", note=note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
