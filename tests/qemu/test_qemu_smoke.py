"""The qemu board smoke (part of `make test`): the firmware on a real kernel, end to end.

Boot to the idle screen; sign-on reached the simulator through QEMU's user-mode network; one sale
typed on the keypad through QMP with the card swiped at the emulated reader on /dev/ttyS1, and one
with a chip card in that reader's slot and its PIN typed (the chip's APDUs over the same line); the
receipt read off the emulated printer on /dev/ttyS2; a power cut (SIGKILL of qemu) while a sale
driven over the ECR line on /dev/ttyS3 is at the host; the reboot sends the reversal; the journal,
read off the ext4 data disk, and the simulator's ledger agree.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

# `make test` and `make qemu-test` set these; a bare pytest without QEMU skips with the reason.
if os.environ.get("QEMU_SMOKE") != "1" and os.environ.get("QEMU_TESTS") != "1":
    pytest.skip("the qemu smoke runs under `make test` (QEMU_SMOKE=1; needs qemu-system-x86 and "
                "`make qemu-image`)", allow_module_level=True)

from guestkit import image_fixture  # noqa: F401 - the fixture "image"
from helpers import assert_agree, open_journal

from board.qemu.image import BuiltImage
from board.qemu.rig import TID, QemuTerminal


def test_boot_sale_by_keys_power_cut_reversal_and_books_agree(tmp_path: Path, image: BuiltImage) -> None:
    with QemuTerminal(tmp_path / "rig", image, reply_timeout=5.0) as rig:
        assert rig.sim is not None and rig.peripherals is not None
        ledger, reader, printer = rig.sim.ledger, rig.peripherals.reader, rig.peripherals.printer

        boot_s = rig.boot()
        assert rig.sim.ledger.working_keys(TID) is not None, "no sign-on reached the simulator"

        # One sale on the keypad: amount, confirm, card at the reader, approved, two copies.
        rig.press("1234")
        rig.lcd.wait(lambda f: "12.34" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        rig.lcd.wait(lambda f: "ENTER confirm" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        assert reader.wait_armed(15), "the sale never armed the card reader on /dev/ttyS1"
        reader.swipe("cup_credit")
        rig.lcd.wait(lambda f: "Approved" in "\n".join(f.rows), 30)
        assert printer.wait_for(lambda p: len(p.slips) >= 2, timeout=30), "no receipts printed"
        approved = ledger.approved(TID)
        assert [(r.kind, r.amount) for r in approved] == [("sale", 1234)]
        rrn = approved[0].rrn  # the slip names the sale by its RRN and voucher no. (the STAN is wire-only)
        for slip in printer.slips[:2]:
            assert "RMB 12.34" in slip.text and rrn in slip.text and "622588******0001" in slip.text
        drawn = len(rig.lcd.frames)
        rig.press("ENTER")
        rig.wait_idle(15, since=drawn)

        # One chip sale on the keypad: cup-debit into the reader's slot, its PIN typed, "Please
        # remove card", approved with the card's TC; the host verified its ARQC.
        rig.press("2345")
        rig.lcd.wait(lambda f: "23.45" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        rig.lcd.wait(lambda f: "ENTER confirm" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        assert reader.wait_armed(15), "the chip sale never armed the card reader"
        reader.insert_chip("cup-debit")
        rig.lcd.wait(lambda f: "Enter PIN" in "\n".join(f.rows), 30)
        rig.press("123456")
        rig.press("ENTER")
        rig.lcd.wait(lambda f: "Please remove" in "\n".join(f.rows), 30)
        reader.remove_chip()
        rig.lcd.wait(lambda f: "Approved" in "\n".join(f.rows), 30)
        assert printer.wait_for(lambda p: len(p.slips) >= 4, timeout=30), "no chip receipts"
        assert "A000000333010101" in printer.slips[2].text and "TC" in printer.slips[2].text
        chip_log = rig.sim.call(rig.sim._sim.control, {"cmd": "chip_log", "tid": TID})["chip_log"]
        assert [(row["mti"], row["result"]) for row in chip_log] == [("0200", "ok")], chip_log
        drawn = len(rig.lcd.frames)
        rig.press("ENTER")
        rig.wait_idle(15, since=drawn)

        # A sale over the ECR line, approved at the host, whose answer is held back: power cut.
        rig.sim.add_fault("delay", mti="0200", seconds=30.0, count=1)
        assert rig.ecr is not None
        rig.ecr.send(op="sale", amount=5678, card="visa")
        deadline = time.monotonic() + 30
        while not any(r.amount == 5678 for r in ledger.approved(TID)):
            assert time.monotonic() < deadline, "the ECR sale never reached the host"
            time.sleep(0.05)
        rig.power_cut()
        cut_stan = next(r.stan for r in ledger.approved(TID) if r.amount == 5678)

        # Power back: the terminal reverses what it never heard the answer to, before idle work.
        recover_started = time.monotonic()
        reboot_s = rig.boot()
        deadline = time.monotonic() + 60
        while True:
            status = rig.ecr.request(op="status", timeout=10)
            if status["unresolved"]["REVERSAL_DUE"] == 0 and status["unresolved"]["PENDING"] == 0:
                break
            assert time.monotonic() < deadline, f"the reversal was never acknowledged: {status}"
            time.sleep(0.5)
        recovered_s = time.monotonic() - recover_started
        assert ledger.reversal_seen(TID, 1, cut_stan), "no reversal of the cut sale reached the host"
        assert [(r.kind, r.amount) for r in ledger.approved(TID)] == [("sale", 1234), ("sale", 2345)]

        # The journal as the device's disk holds it: cut the power once more, let the kernel replay
        # the ext4 journal (a boot that only mounts the disk), then read it without mounting.
        rig.power_cut()
        assert rig.run_to_exit("true", timeout=60) == 0
        copy = rig.read_terminal_dir(tmp_path / "disk")
        journal = open_journal(copy, board="qemu")
        try:
            assert journal.integrity() == "ok"
            assert_agree(journal, ledger)
            stans = [(r.batch, r.stan) for r in journal.records()]
            assert len(stans) == len(set(stans)), "a STAN was used twice"
        finally:
            journal.close()
        assert not list(copy.rglob("*track*")), "track data on disk"
        print(f"\n[qemu smoke] boot to idle {boot_s:.1f} s; after the power cut: idle again in "
              f"{reboot_s:.1f} s, reversal acknowledged {recovered_s:.1f} s after power-on")
    shutil.rmtree(tmp_path / "rig" / "devices", ignore_errors=True)
