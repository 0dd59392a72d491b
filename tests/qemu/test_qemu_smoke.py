"""The qemu board smoke (part of `make test`): the firmware on a real kernel, end to end, on the
board's key custody: the DES keys in the emulated reader's PIN pad (the TMK loaded by the key
ceremony's TR-31 block, the working keys at sign-on, every MAC computed there), the card numbers
sealed under the guest's TPM (tpm2-pkcs11, the CBC vault). The factory's boot (the TPM token and
the ceremony) is cached per image and sources (board/qemu/rig.py factory_key).

Boot to the idle screen; sign-on reached the simulator through QEMU's user-mode network; one sale
typed on the keypad through QMP with the card swiped at the emulated reader on /dev/ttyS1, and one
with a chip card in that reader's slot (the chip's APDUs over the same line; its online PIN typed
on the PIN pad, whose block the host checks); the receipt read off the emulated printer on
/dev/ttyS2; a power cut (SIGKILL of qemu) while a sale driven over the ECR line on /dev/ttyS3 is at
the host; the reboot sends the reversal; the journal, read off the ext4 data disk without its card
numbers (sealed in the TPM's format, no clear one anywhere), and the simulator's ledger agree.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

# `make test` and `make qemu-test` set these; a bare pytest without QEMU skips with the reason.
if os.environ.get("QEMU_SMOKE") != "1" and os.environ.get("QEMU_TESTS") != "1":
    pytest.skip("the qemu smoke runs under `make test` (QEMU_SMOKE=1; needs qemu-system-x86 and "
                "`make qemu-image`)", allow_module_level=True)

from guestkit import image_fixture  # noqa: F401 - the fixture "image"
from helpers import assert_agree

from board.qemu.books import open_books
from board.qemu.image import BuiltImage
from board.qemu.rig import TID, TMK_HEX, QemuTerminal
from board.sim.cards import TEST_CARDS
from board.sim.chipcards import PROFILES as CHIP_CARDS
from board.sim.pinpad import check_value
from drivers.keystore.vault_cbc import FORMAT_CBC_CMAC
from drivers.reader import link_protocol as lp
from firmware.app.core.custody import read_record
from firmware.ports import KeyMissing

CHIP_CARD = "cup-debit"  # online PIN: typed on the PIN pad, its block under the pad's PIK
PANS = (TEST_CARDS["cup_credit"].pan, CHIP_CARDS[CHIP_CARD].pan, TEST_CARDS["visa"].pan)


def pad_macs(reader) -> int:
    """MAC computations the terminal asked of the reader's PIN pad."""
    return sum(1 for c in reader.commands_of(lp.PINPAD) if c.args.get("op") == lp.PAD_MAC)


# A first run per image and sources does the factory's boot (the TPM token and the ceremony,
# about a minute under TCG on a busy machine) before the smoke; later runs take it from the cache.
@pytest.mark.timeout(300)
def test_boot_sale_by_keys_power_cut_reversal_and_books_agree(tmp_path: Path, image: BuiltImage) -> None:
    started = time.monotonic()
    with QemuTerminal(tmp_path / "rig", image, reply_timeout=5.0) as rig:
        assert rig.sim is not None and rig.peripherals is not None
        assert rig.tpm and rig.pinpad, "the qemu board keeps its keys in the PIN pad and the TPM"
        setup_s = time.monotonic() - started
        ledger, reader, printer = rig.sim.ledger, rig.peripherals.reader, rig.peripherals.printer
        # The ceremony put the acquirer's TMK into the pad (not the guest): its check value.
        assert reader.pinpad.tmk_check == check_value(bytes.fromhex(TMK_HEX))

        boot_s = rig.boot()
        assert rig.sim.ledger.working_keys(TID) is not None, "no sign-on reached the simulator"
        # The sign-on's working keys went into the pad, which the terminal checked at start.
        assert {"PIK", "MAK"} <= set(reader.pinpad.roles), reader.pinpad.roles
        macs_at_idle = pad_macs(reader)

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

        # One chip sale on the keypad: cup-debit into the reader's slot, its PIN on the PIN pad,
        # "Please remove card", approved with the card's TC; the host verified its ARQC and PIN.
        rig.press("2345")
        rig.lcd.wait(lambda f: "23.45" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        rig.lcd.wait(lambda f: "ENTER confirm" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        assert reader.wait_armed(15), "the chip sale never armed the card reader"
        reader.insert_chip(CHIP_CARD)
        # The LCD sends the cardholder to the pad; the PIN is typed there and never crosses
        # the link (only the pad's ISO-0 block under its PIK does; the host checks it).
        rig.lcd.wait(lambda f: "PIN pad" in " ".join(f.rows), 30)
        deadline = time.monotonic() + 15
        while not reader.pin_keys(f"{CHIP_CARDS[CHIP_CARD].pin}E"):  # the pad's entry is armed
            assert time.monotonic() < deadline, "the PIN pad never asked for the PIN"
            time.sleep(0.05)
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
        # Every MACed request (three sales, the reversal) had its MAC from the pad; the simulator
        # checks each one (a wrong MAC is no approval), so the approvals above are its verdict.
        assert pad_macs(reader) - macs_at_idle >= 4, pad_macs(reader)

        # The journal as the device's disk holds it: cut the power once more, let the kernel replay
        # the ext4 journal (a boot that only mounts the disk), then read it without mounting.
        rig.power_cut()
        assert rig.run_to_exit("true", timeout=60) == 0
        copy = rig.read_terminal_dir(tmp_path / "disk")
        assert read_record(copy).key_store == "pinpad"  # provisioned by the ceremony
        assert not (copy / "keys" / "card.key").exists() and not (copy / "keys" / "tmk.key").exists()
        # The card numbers as the TPM sealed them: the CBC vault's format byte, IV, whole blocks
        # and the CMAC; none in clear anywhere in the terminal's files.
        with sqlite3.connect(copy / "journal.db") as db:
            blobs = [bytes(row[0]) for row in
                     db.execute("SELECT pan_enc FROM txn WHERE pan_enc IS NOT NULL")]
        assert len(blobs) == 3, len(blobs)
        for blob in blobs:
            assert blob[0] == FORMAT_CBC_CMAC and (len(blob) - 33) % 16 == 0 and len(blob) > 33
        for path in (p for p in copy.rglob("*") if p.is_file()):
            data = path.read_bytes()
            assert not any(pan.encode() in data for pan in PANS), f"a clear card number in {path}"
        journal = open_books(copy)  # read on the host without the card numbers
        try:
            assert journal.integrity() == "ok"
            assert_agree(journal, ledger)
            stans = [(r.batch, r.stan) for r in journal.records()]
            assert len(stans) == len(set(stans)), "a STAN was used twice"
            with pytest.raises(KeyMissing):  # the host holds no card-vault key
                journal.decrypt_pan(journal.records()[0].id)
        finally:
            journal.close()
        assert not list(copy.rglob("*track*")), "track data on disk"
        factory = ("cached" if rig.factory_s is None else f"factory boot {rig.factory_s:.1f} s")
        print(f"\n[qemu smoke] rig ready in {setup_s:.1f} s ({factory}); boot to idle "
              f"{boot_s:.1f} s; after the power cut: idle again in {reboot_s:.1f} s, reversal "
              f"acknowledged {recovered_s:.1f} s after power-on")
    shutil.rmtree(tmp_path / "rig" / "devices", ignore_errors=True)
