"""The qemu board's TPM under a real kernel (QEMU_TESTS=1, `make qemu-test`): swtpm on the host
attached as tpm-tis, /dev/tpmrm0 in the guest, the factory's token initialisation
(board/qemu/rig.py tpm_token_init_command), python-pkcs11 in the guest opening tpm2-pkcs11's
token and sealing a card number with the CBC vault (drivers/keystore/vault_cbc.py) under its two
TPM keys; the blob opens again after a clean power-off and after a power cut (the TPM's state
is swtpm's, kept under the guest's var dir), and no swtpm outlives its qemu. And the firmware
selling on such a guest (the rig's TPM board: factory boot, then a guest without ACPI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("QEMU_TESTS") != "1":
    pytest.skip("QEMU board tests run with `make qemu-test` (QEMU_TESTS=1)", allow_module_level=True)

from guestkit import image_fixture  # noqa: F401 - the fixture "image"

from board.qemu.guest import Guest
from board.qemu.image import BuiltImage, make_data_disk, read_data_disk
from board.qemu.rig import (
    CEREMONY_DONE,
    GUEST_DATA,
    TERMINAL_DIR,
    TID,
    TOKEN_PIN_FILE,
    TPM_INIT_DONE,
    QemuTerminal,
    tpm_env_command,
    tpm_token_init_command,
)

REPO = Path(__file__).resolve().parents[2]
PIN = "qemu-token-2468"

GUEST_VAULT = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
import pkcs11
from tpmkit import TPM2_PKCS11_MODULE, vault_over
mode, blob_path = sys.argv[1], sys.argv[2]
pin = open({pin_file!r}).read().strip()
token = pkcs11.lib(TPM2_PKCS11_MODULE).get_token(token_label="posfw")
mechanisms = token.slot.get_mechanisms()
print("MECHS", "GCM" if pkcs11.Mechanism.AES_GCM in mechanisms else "no-GCM",
      "DES" if pkcs11.Mechanism.DES3_ECB in mechanisms else "no-DES", flush=True)
with token.open(user_pin=pin) as session:
    vault, fast = vault_over(session), vault_over(session, one_call_mac=True)
    if mode == "seal":
        blob = vault.seal(b"6225880000000001", b"posfw/pan/v1")
        open(blob_path, "wb").write(blob)
        fast.seal(b"0", b"")  # its subkeys, before timing
        n = 5
        started = time.perf_counter()
        for _ in range(n):
            vault.seal(b"6225880000000001", b"posfw/pan/v1")
        ecb_cmac = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for _ in range(n):
            fast.seal(b"6225880000000001", b"posfw/pan/v1")
        cbc_cmac = (time.perf_counter() - started) / n
        print(f"SEAL-MS {{ecb_cmac * 1000:.0f}} {{cbc_cmac * 1000:.0f}}", flush=True)
    blob = open(blob_path, "rb").read()
    assert fast.unseal(blob, b"posfw/pan/v1") == b"6225880000000001"
    print("UNSEAL-OK", mode, flush=True)
"""


def test_tpm_token_in_the_guest_survives_power_off_and_a_power_cut(
        image: BuiltImage, tmp_path: Path) -> None:
    factory = tmp_path / "factory"
    pin_path = factory / TERMINAL_DIR / TOKEN_PIN_FILE
    pin_path.parent.mkdir(parents=True)
    pin_path.write_text(PIN)
    pin_path.chmod(0o600)
    disk = make_data_disk(tmp_path / "data.img", contents=factory)
    script = tmp_path / "vault.py"
    script.write_text(GUEST_VAULT.format(repo=str(REPO), tests=str(REPO / "tests"),
                                         pin_file=f"{GUEST_DATA}/{TERMINAL_DIR}/{TOKEN_PIN_FILE}"))
    blob = f"{GUEST_DATA}/blob.bin"
    run = f".venv/bin/python {script}"
    guest = Guest(image, console_path=tmp_path / "console-1.log", tpm_state=tmp_path / "var" / "tpm")
    try:
        # 1. The factory's boot: the TPM appears, the token is made, a card number is sealed.
        guest.start("ls /dev/tpm0 /dev/tpmrm0 && " + tpm_token_init_command()
                    + f"{run} seal {blob}", data_disk=disk, cwd=str(REPO))
        argv = guest.process.args
        assert argv[argv.index("-tpmdev") + 1].startswith("emulator,")
        assert "tpm-tis,tpmdev=tpm0" in argv
        swtpm = guest.swtpm
        assert swtpm is not None and swtpm.process is not None and swtpm.process.poll() is None
        swtpm_pid = swtpm.process.pid
        status = guest.wait_exit(timeout=300)
        console = guest.console()
        assert status == 0, console[-3000:]
        assert TPM_INIT_DONE in console and "MECHS no-GCM no-DES" in console
        assert "UNSEAL-OK seal" in console
        seal_ms = next(line.split()[1:] for line in console.splitlines()
                       if line.startswith("SEAL-MS"))
        # swtpm went with its qemu (killed by its pid, or ended with --terminate), and its state
        # (the TPM's NVRAM) stays for the next boot.
        assert guest.swtpm is None and not Path(f"/proc/{swtpm_pid}").exists()
        assert any((tmp_path / "var" / "tpm").iterdir())

        # 2. Next power-on: the same TPM opens the blob (clean power-off before).
        guest.console_path = tmp_path / "console-2.log"
        guest.start(tpm_env_command() + f"{run} open {blob} && sleep 600",
                    data_disk=disk, cwd=str(REPO))
        guest.wait_for("UNSEAL-OK open", timeout=180)
        swtpm_pid = guest.swtpm.process.pid
        guest.power_cut()  # SIGKILL of qemu while the firmware would be running
        assert guest.swtpm is None and not Path(f"/proc/{swtpm_pid}").exists()

        # 3. After the power cut: still the same keys.
        guest.console_path = tmp_path / "console-3.log"
        guest.start(tpm_env_command() + f"{run} open {blob}", data_disk=disk, cwd=str(REPO))
        assert guest.wait_exit(timeout=180) == 0, guest.console()[-3000:]
        assert "UNSEAL-OK open" in guest.console()
        print(f"\n[qemu tpm] seal of a card number in the guest: {seal_ms[0]} ms with the CMAC "
              f"block by block, {seal_ms[1]} ms with one CBC call")
    finally:
        guest.close()


def test_the_firmware_sells_on_a_guest_with_a_tpm(image: BuiltImage, tmp_path: Path) -> None:
    """The rig's TPM board as the smoke runs it, its factory's boot done here rather than taken
    from the cache: the token made, the key ceremony (the TMK into the reader's PIN pad, the
    terminal provisioned in the guest), then the firmware on the guest without ACPI (serial
    ports, the PCI LCD port, the virtio keyboard and network all found without it): boot to idle,
    one sale typed and swiped, approved."""
    with QemuTerminal(tmp_path / "rig", image, reply_timeout=5.0, tpm=True,
                      factory_cache=False) as rig:
        assert rig.sim is not None and rig.peripherals is not None and rig.guest is not None
        factory_console = (tmp_path / "rig" / "console-1.log").read_text(errors="replace")
        assert TPM_INIT_DONE in factory_console and CEREMONY_DONE in factory_console
        assert rig.factory_s is not None
        boot_s = rig.boot()
        assert "acpi=off" in rig.guest.process.args[rig.guest.process.args.index("-append") + 1]
        assert rig.sim.ledger.working_keys(TID) is not None, "no sign-on reached the simulator"
        reader, printer = rig.peripherals.reader, rig.peripherals.printer
        rig.press("1234")
        rig.lcd.wait(lambda f: "12.34" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        rig.lcd.wait(lambda f: "ENTER confirm" in "\n".join(f.rows), 10)
        rig.press("ENTER")
        assert reader.wait_armed(15), "the sale never armed the card reader on /dev/ttyS1"
        reader.swipe("cup_credit")
        rig.lcd.wait(lambda f: "Approved" in "\n".join(f.rows), 30)
        assert printer.wait_for(lambda p: len(p.slips) >= 1, timeout=30), "no receipt printed"
        assert [(r.kind, r.amount) for r in rig.sim.ledger.approved(TID)] == [("sale", 1234)]
        status = rig.ecr.request(op="status", timeout=10)
        assert status["unresolved"]["PENDING"] == 0, status  # the ECR line on ttyS3 answers
        rig.power_cut()
        assert rig.guest.swtpm is None
        store = read_data_disk(rig.data_disk, "/tpm2", tmp_path / "disk")
        assert (store / "tpm2_pkcs11.sqlite3").exists()
        print(f"\n[qemu tpm] factory boot (token and ceremony) {rig.factory_s:.1f} s; firmware on "
              f"the TPM guest: boot to idle {boot_s:.1f} s")
