"""The qemu-pcsc board (QEMU_SMOKE=1, like the smoke): the chip through the PC/SC stack inside the
guest. The guest runs pcscd with vsmartcard's vpcd driver (its reader.conf under the guest's /run)
before the firmware, whose drivers/reader/pcsc.py talks to it; the test chip card runs on the host
(board/sim/vpcd.py) and reaches vpcd's port 35963 only through a QEMU hostfwd bound to 127.0.0.1.
One chip sale typed on the keypad, the card inserted and removed through the card's control
socket, approved with the card's TC after the simulator verified its ARQC.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

if os.environ.get("QEMU_SMOKE") != "1" and os.environ.get("QEMU_TESTS") != "1":
    pytest.skip("the qemu tests run under QEMU_SMOKE=1 (needs qemu-system-x86, pcscd, "
                "vsmartcard-vpcd and `make qemu-image`)", allow_module_level=True)

from guestkit import image_fixture  # noqa: F401 - the fixture "image"

from board.qemu.guest import GuestError
from board.qemu.image import BuiltImage
from board.qemu.rig import TID, QemuTerminal


def shows(text: str):
    return lambda frame: text in "\n".join(frame.rows).replace("\n", " ")


def test_chip_sale_over_pcsc_in_the_guest(tmp_path: Path, image: BuiltImage) -> None:
    with QemuTerminal(tmp_path / "rig", image, reply_timeout=5.0, board="qemu-pcsc") as rig:
        assert rig.sim is not None and rig.peripherals is not None and rig.guest is not None
        boot_s = rig.boot()
        # The only way in: the card's port on the host's loopback, to vpcd's port in the guest.
        argv = rig.guest.process.args
        netdev = argv[argv.index("-netdev") + 1]
        assert "restrict=on" in netdev and netdev.count("hostfwd=") == 1 and \
            f"hostfwd=tcp:127.0.0.1:{rig.card_port}-:35963" in netdev, \
            f"not one loopback-only forward to the guest's vpcd port 35963: {netdev}"
        assert rig.sim.ledger.working_keys(TID) is not None, "no sign-on reached the simulator"
        assert "qemu-pcsc: pcscd did not start" not in rig.console()

        rig.press("2345")
        rig.lcd.wait(shows("23.45"), 10)
        rig.press("ENTER")
        rig.lcd.wait(shows("ENTER confirm"), 10)
        rig.press("ENTER")
        rig.lcd.wait(shows("Insert chip"), 15)
        answer = rig.card("insert cup-debit")
        assert answer == "ok inserted cup-debit", (
            f"the card on the host did not reach the guest's vpcd through the hostfwd: {answer}")
        try:
            rig.lcd.wait(shows("Enter PIN"), 60)
        except GuestError as error:
            raise AssertionError(f"the guest's PC/SC reader never read the chip (card: "
                                 f"{rig.card('status')}): {error}\nconsole:\n"
                                 f"{rig.console()[-3000:]}") from None
        rig.press("123456")
        rig.press("ENTER")
        rig.lcd.wait(shows("Please remove"), 60)
        assert rig.card("remove") == "ok removed cup-debit"
        rig.lcd.wait(shows("Approved"), 30)

        approved = rig.sim.ledger.approved(TID)
        assert [(r.kind, r.amount) for r in approved] == [("sale", 2345)]
        chip_log = rig.sim.call(rig.sim._sim.control, {"cmd": "chip_log", "tid": TID})["chip_log"]
        assert [(row["mti"], row["result"]) for row in chip_log] == [("0200", "ok")], chip_log
        printer = rig.peripherals.printer
        assert printer.wait_for(lambda p: len(p.slips) >= 1, timeout=30), "no receipt printed"
        assert "A000000333010101" in printer.slips[0].text and "TC" in printer.slips[0].text
        print(f"\n[qemu pcsc] boot to idle {boot_s:.1f} s; chip sale over PC/SC in the guest approved")
    shutil.rmtree(tmp_path / "rig" / "devices", ignore_errors=True)
