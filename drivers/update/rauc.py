"""The update agent over RAUC 1.8's command line (Debian `rauc`): `rauc status --detailed
--output-format=json`, `rauc info --output-format=json`, `rauc install`, `rauc status
mark-good|mark-bad booted`, each as an asyncio subprocess; and the reboot request file.

The firmware runs as an unprivileged user and cannot reboot the board: request_reboot() writes a
file (POSFW_REBOOT_REQUEST, default /run/posfw/reboot-request) that a root systemd .path unit of
the image watches and answers with a reboot. The `rauc` executable is POSFW_RAUC, else `rauc`
on PATH (the D-Bus service does the privileged work; the image's polkit rule lets the service
user call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.update.verity import PayloadCorrupted, check_payload
from firmware.ports import BundleInfo, InstallProgress, SlotInfo, UpdateError, UpdateStatus

REBOOT_REQUEST = "/run/posfw/reboot-request"
STATUS_TIMEOUT_S = 30.0
INFO_TIMEOUT_S = 300.0  # a bundle on a slow USB stick is read whole to check its signature
INSTALL_TIMEOUT_S = 3600.0
# rauc's progress lines: "%3d%% %s" (src/main.c, on_installer_changed, without --progress)
_PROGRESS = re.compile(r"^\s*(\d{1,3})% (.*)$")
# From these steps on the other slot is being written (RAUC 1.8's install steps).
_WRITING = ("Updating slots", "Checking slot", "Copying image", "Installing done")


def _rauc() -> str:
    return os.environ.get("POSFW_RAUC", "rauc")


def _last_words(stderr: str, stdout: str = "") -> str:
    """rauc's own reason: its LastError line, else its last line on stderr."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("LastError:"):
            return line.removeprefix("LastError:").strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


class RaucAgent:
    """UpdateAgent (firmware/ports.py) over the rauc command line."""

    available = True

    def __init__(self, rauc: str | None = None, reboot_request: str | None = None) -> None:
        self.rauc = rauc or _rauc()
        self.reboot_request = Path(reboot_request or os.environ.get("POSFW_REBOOT_REQUEST",
                                                                    REBOOT_REQUEST))

    async def _run(self, args: list[str], timeout: float) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.rauc, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            raise UpdateError(f"the update system cannot be run ({self.rauc}: {exc.strerror})") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise UpdateError(f"the update system did not answer within {timeout:.0f} s") from None
        assert proc.returncode is not None
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    async def status(self) -> UpdateStatus:
        code, out, err = await self._run(["status", "--detailed", "--output-format=json"],
                                         STATUS_TIMEOUT_S)
        if code != 0:
            raise UpdateError(f"the update system's status cannot be read: {_last_words(err)}")
        try:
            return parse_status(json.loads(out))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UpdateError(f"the update system's status is not understood ({exc})") from None

    async def bundle_info(self, path: str) -> BundleInfo:
        code, out, err = await self._run(["info", "--output-format=json", path], INFO_TIMEOUT_S)
        if code != 0:
            raise UpdateError(f"the bundle was refused: {_last_words(err)}")
        # rauc info checks the signature, not the payload: a damaged block would only show as a
        # read error half-way through writing the other slot. Every block is checked first.
        try:
            await asyncio.to_thread(check_payload, Path(path), None, rauc=self.rauc)
        except PayloadCorrupted as exc:
            raise UpdateError(f"the bundle was refused: {exc}") from None
        try:
            raw = json.loads(out)
            return BundleInfo(path=path, compatible=str(raw["compatible"] or ""),
                              version=str(raw["version"] or ""),
                              description=str(raw.get("description") or ""),
                              build=str(raw.get("build") or ""))
        except (ValueError, TypeError, KeyError) as exc:
            raise UpdateError(f"the bundle's description is not understood ({exc})") from None

    async def install(self, path: str, progress: Callable[[InstallProgress], None]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.rauc, "install", path, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            raise UpdateError(f"the update system cannot be run ({self.rauc}: {exc.strerror})") from exc
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.ensure_future(proc.stderr.read())
        seen: list[str] = []
        writing = False
        deadline = time.monotonic() + INSTALL_TIMEOUT_S
        try:
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
                if not line:
                    break
                text = line.decode("utf-8", "replace").rstrip("\n")
                seen.append(text)
                match = _PROGRESS.match(text)
                if match:
                    step = match.group(2).strip()
                    writing = writing or step.startswith(_WRITING)
                    progress(InstallProgress(min(100, int(match.group(1))), step, writing))
            code = await proc.wait()
        except TimeoutError:
            # Not killed: the install runs in rauc's service, not in this client; the slot is
            # switched only when it completes, so a reboot later still boots a good slot.
            raise UpdateError(f"the install did not finish within {INSTALL_TIMEOUT_S:.0f} s") from None
        err = await errors
        if code != 0:
            raise UpdateError(f"the install failed: {_last_words(err, chr(10).join(seen))}")

    async def _mark(self, what: str) -> None:
        code, _out, err = await self._run(["status", what, "booted"], STATUS_TIMEOUT_S)
        if code != 0:
            raise UpdateError(f"the booted slot could not be marked ({what}): {_last_words(err)}")

    async def mark_good(self) -> None:
        await self._mark("mark-good")

    async def mark_bad(self) -> None:
        await self._mark("mark-bad")

    def request_reboot(self) -> None:
        try:
            self.reboot_request.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.reboot_request.with_name(self.reboot_request.name + ".tmp")
            tmp.write_text(f"{time.time():.0f} firmware update\n", encoding="utf-8")
            os.replace(tmp, self.reboot_request)
        except OSError as exc:
            raise UpdateError(f"the restart could not be requested ({self.reboot_request}: "
                              f"{exc.strerror}); switch the terminal off and on") from exc


def parse_status(raw: dict[str, Any]) -> UpdateStatus:
    """RAUC 1.8's status JSON: {"compatible", "variant", "booted" (the booted slot's boot name,
    or its device when the kernel command line names none), "boot_primary" (the slot name, e.g.
    "rootfs.1"), "slots": [{"rootfs.0": {"class", "device", "bootname", "state"
    ("booted"|"active"|"inactive"), "boot_status" ("good"|"bad"|null), "slot_status": {"bundle":
    {"compatible", "version"?}, ...}}}, ...]}. Only slots with a boot name are root slots."""
    booted_field = raw.get("booted") or ""
    primary = raw.get("boot_primary") or ""
    slots: list[SlotInfo] = []
    for entry in raw["slots"]:
        for name, slot in entry.items():
            bootname = slot.get("bootname")
            if not bootname:
                continue
            detail = slot.get("slot_status") or {}
            bundle = detail.get("bundle") or {}
            activated = detail.get("activated") or {}
            stamp = f"{activated['timestamp']} #{activated.get('count', '')}" \
                if activated.get("timestamp") else None
            booted = slot.get("state") == "booted" or booted_field in (bootname, slot.get("device"))
            slots.append(SlotInfo(name=str(bootname), version=bundle.get("version"),
                                  state="good" if slot.get("boot_status") == "good" else "bad",
                                  booted=booted, boots_next=name == primary,
                                  device=str(slot.get("device") or ""), activated=stamp))
    slots.sort(key=lambda s: s.name)
    return UpdateStatus(compatible=str(raw.get("compatible") or ""), slots=tuple(slots))
