"""The qemu board's image and launcher on a real kernel: the venv's Python in the guest, QMP keys
arriving as evdev EV_KEY events, and fsynced data on the ext4 data disk surviving a power cut.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

# Each test boots a kernel under TCG: only `make qemu-test` (QEMU_TESTS=1) runs them, never plain pytest.
# (A module-level skip, not a tests/qemu/conftest.py: a second module named conftest would shadow
# tests/conftest.py, which other tests import by that name.)
if os.environ.get("QEMU_TESTS") != "1":
    pytest.skip("QEMU board tests run with `make qemu-test` (QEMU_TESTS=1)", allow_module_level=True)

from guestkit import guest_fixture, image_fixture  # noqa: F401 - the fixtures "guest", "image"

from board.qemu.guest import Guest, GuestError
from board.qemu.image import make_data_disk

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


SERIAL_ECHO = """
import serial
port = serial.Serial("/dev/ttyS1", 115200, timeout=20)
port.write(b"PING\\x00\\xff\\n")
print("GUEST-GOT", port.readline().hex(), flush=True)
"""


def test_venv_python_runs_in_the_guest_imports_the_firmware_and_talks_on_ttys1(
        guest: Guest, tmp_path: Path) -> None:
    script = tmp_path / "serial_echo.py"
    script.write_text(SERIAL_ECHO)
    guest.start(f"uname -r; test -c /dev/ttyS4 && echo LCD-PORT-OK; "
                f"{VENV_PYTHON} -c 'import sys, evdev, serial, firmware.app.main; "
                f"print(\"PY\", sys.version.split()[0], sys.executable); print(\"IMPORTS-OK\")' "
                f"&& {VENV_PYTHON} {script}", cwd=str(REPO))
    host_end = guest.connect_serial("ttyS1")
    ready = guest.wait_ready(timeout=60)
    imported = guest.wait_for("IMPORTS-OK", timeout=60)
    host_end.settimeout(30)
    received = b""
    while not received.endswith(b"\n"):
        chunk = host_end.recv(64)
        assert chunk, "ttyS1 closed before the guest's line arrived"
        received += chunk
    assert received == b"PING\x00\xff\n"
    host_end.sendall(b"PONG\x01\n")
    assert guest.wait_exit(timeout=30) == 0
    host_end.close()
    console = guest.console()
    assert "LCD-PORT-OK" in console  # the LCD mirror's /dev/ttyS4 (PCI 16550) exists
    assert guest.image.kernel_release in console  # the Debian kernel, not the host's
    assert f"PY {sys.version.split()[0]}" in console
    assert "GUEST-GOT " + b"PONG\x01\n".hex() in console
    print(f"\n[qemu] /init ready {ready:.1f} s, firmware.app imported {imported:.1f} s after start")


KEYS = {"kp_5": 76, "kp_enter": 96, "esc": 1, "f1": 59, "backspace": 14}

KEY_READER = """
import sys, evdev
keyboard = next(evdev.InputDevice(p) for p in evdev.list_devices()
                if evdev.InputDevice(p).name == "QEMU Virtio Keyboard")
print("KEYS-READY", keyboard.path, flush=True)
wanted = int(sys.argv[1])
for event in keyboard.read_loop():
    if event.type == evdev.ecodes.EV_KEY and event.value == 1:
        print("KEY", event.code, flush=True)
        wanted -= 1
        if wanted == 0:
            break
"""


def test_qmp_keys_arrive_as_evdev_key_presses(guest: Guest, tmp_path: Path) -> None:
    script = tmp_path / "keys.py"
    script.write_text(KEY_READER)
    guest.start(f"{VENV_PYTHON} {script} {len(KEYS)}")
    guest.wait_for("KEYS-READY", timeout=60)
    sent = time.monotonic()
    for qcode in KEYS:
        guest.send_key(qcode)
    for code in KEYS.values():
        guest.wait_for(f"KEY {code}\n", timeout=10)
    latency = time.monotonic() - sent
    with pytest.raises(GuestError, match="send-key"):
        guest.send_key("no_such_key")
    assert "error" in guest.qmp({"execute": "no-such-command"})
    assert guest.wait_exit(timeout=30) == 0
    pressed = [int(line.split()[1]) for line in guest.console().splitlines() if line.startswith("KEY ")]
    assert pressed == list(KEYS.values())
    print(f"\n[qemu] {len(KEYS)} keys through QMP -> evdev in {latency:.2f} s")


WRITER = """
import os, sys, time
path = os.path.join(os.environ["QEMU_DATA"], "journal.log")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(fd, b"approved stan=000123\\n")
os.fsync(fd)
print("SYNCED", flush=True)
os.write(fd, b"never-synced\\n")
print("WROTE-UNSYNCED", flush=True)
time.sleep(120)
"""


def test_fsynced_record_survives_a_power_cut(guest: Guest, tmp_path: Path) -> None:
    disk = make_data_disk(tmp_path / "data.img", size_mb=32)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    with pytest.raises(GuestError, match="too long"):
        guest.start("echo " + "x" * 2000, data_disk=disk)
    guest.start(f"{VENV_PYTHON} {script}", data_disk=disk)
    guest.wait_for("WROTE-UNSYNCED", timeout=60)
    cut = time.monotonic()
    guest.power_cut()
    assert guest.process is not None and guest.process.returncode == -9

    guest.start('echo "JOURNAL-BEGIN"; cat "$QEMU_DATA/journal.log"; echo "JOURNAL-END"', data_disk=disk)
    assert guest.wait_exit(timeout=60) == 0
    recovered = time.monotonic() - cut
    console = guest.console()
    journal = console.split("JOURNAL-BEGIN", 1)[1].split("JOURNAL-END", 1)[0]
    assert "approved stan=000123\n" in journal
    assert "No such file" not in journal
    print(f"\n[qemu] power cut -> rebooted and read the journal in {recovered:.1f} s; "
          f"unsynced record {'kept' if 'never-synced' in journal else 'lost'}")
