"""A stand-in `rauc` executable for tests of drivers/update/rauc.py: this host has no booted A/B
system for the real one (the lead's QEMU image test runs the real rauc). It prints what rauc 1.8
prints, with rauc's exit codes, from a state file the test writes.

The output is transcribed, not captured on a board: the status JSON follows rauc 1.8's
formatter (src/main.c r_status_formatter_json: the keys, their nesting, null for an absent
value; `rauc info` is tested against the real rauc in tests/test_image_bundle.py), the install
lines its progress printer ("%3d%% %s" per progress step, the step names of rauc's install tree,
"LastError: ..." and "Installing `PATH` succeeded|failed"). Every call is logged (argv as JSON
lines) for the test to read.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

INSTALL_STEPS = [
    (0, "Installing"), (0, "Determining slot states"), (20, "Determining slot states done."),
    (20, "Checking bundle"), (20, "Verifying signature"), (40, "Verifying signature done."),
    (40, "Checking bundle done."), (40, "Checking manifest contents"),
    (60, "Checking manifest contents done."), (60, "Determining target install group"),
    (80, "Determining target install group done."), (80, "Updating slots"),
    (80, "Checking slot rootfs.1"), (90, "Checking slot rootfs.1 done."),
    (90, "Copying image to rootfs.1"), (100, "Copying image to rootfs.1 done."),
    (100, "Updating slots done."), (100, "Installing done."),
]


def slot(bootname: str, device: str, state: str, good: bool | None, version: str | None,
         activated: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"compatible": "posfw-qemu-arm64" if version else None}
    if version:
        bundle["version"] = version
    detail: dict[str, Any] = {"bundle": bundle}
    if activated:
        detail["activated"] = {"timestamp": activated, "count": 1}
        detail["installed"] = {"timestamp": activated, "count": 1}
        detail["status"] = "ok"
    return {"class": "rootfs", "device": device, "type": "raw", "bootname": bootname,
            "state": state, "parent": None, "mountpoint": "/" if state == "booted" else None,
            "boot_status": None if good is None else ("good" if good else "bad"),
            "slot_status": detail}


def status(booted: str = "A", primary: str = "rootfs.0", a_good: bool = True, b_good: bool = True,
           a_version: str | None = None, b_version: str | None = "1.1.0",
           b_activated: str | None = "2026-12-07T22:00:00Z") -> dict[str, Any]:
    """`rauc status --detailed --output-format=json` on the image: A booted (factory), B with
    a bundle's version; the slots in the order rauc's hash table gave them."""
    return {"compatible": "posfw-qemu-arm64", "variant": "", "booted": booted,
            "boot_primary": primary, "slots": [
                {"rootfs.1": slot("B", "/dev/vda3", "booted" if booted == "B" else "inactive",
                                  b_good, b_version, b_activated)},
                {"rootfs.0": slot("A", "/dev/vda2", "booted" if booted == "A" else "inactive",
                                  a_good, a_version)},
            ]}


def install(tmp: Path, state: dict[str, Any]) -> tuple[Path, Path]:
    """The fake on PATH (tmp/bin/rauc) and its state file; returns (bin dir, call log)."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    (tmp / "rauc-state.json").write_text(json.dumps(state))
    exe = bindir / "rauc"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                   f"import raucfake\nraise SystemExit(raucfake.main({str(tmp)!r}, sys.argv[1:]))\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bindir, tmp / "rauc-calls.log"


def main(tmp: str, argv: list[str]) -> int:
    base = Path(tmp)
    state = json.loads((base / "rauc-state.json").read_text())
    with open(base / "rauc-calls.log", "a") as log:
        log.write(json.dumps(argv) + "\n")
    out = sys.stdout
    if argv[:1] == ["status"] and "--output-format=json" in argv:
        if state.get("status_error"):
            print(state["status_error"], file=sys.stderr)
            return 1
        out.write(json.dumps(state["status"]) + "\n")
        return 0
    if argv[:1] == ["status"] and argv[1:2] in (["mark-good"], ["mark-bad"]):
        print(f"rauc mark: marked slot rootfs.0 as {argv[1].removeprefix('mark-')}", file=sys.stderr)
        return 0
    if argv[:1] == ["install"]:
        path = argv[-1]
        fail_at = state.get("install_fail_at")  # a step name: the install stops there
        out.write("installing\n")
        for percent, step in INSTALL_STEPS:
            out.write(f"{percent:3d}% {step}\n")
            out.flush()
            if step == fail_at:
                out.write(f"LastError: {state.get('install_error', 'Failed to copy image')}\n")
                out.write("idle\n")
                print(f"Installing `{path}` failed", file=sys.stderr)
                return 1
        out.write("idle\n")
        out.write(f"Installing `{path}` succeeded\n")
        return 0
    print(f"fake rauc: not recorded: {argv}", file=sys.stderr)
    return 2
