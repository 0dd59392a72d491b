"""A stand-in update agent for the tests of the updates service and its screens: RAUC needs a
booted A/B system, which this host is not (the real rauc runs in the lead's QEMU image test; the
RAUC driver's own parsing is tests/test_updates_rauc.py). Bundles are known by file name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from firmware.ports import BundleInfo, InstallProgress, SlotInfo, UpdateError, UpdateStatus

COMPATIBLE = "posfw-qemu-arm64"


@dataclass
class FakeAgent:
    """Stands in for RAUC (module docstring): slot A booted, B the other; bundles by file name."""

    bundles: dict[str, BundleInfo | str] = field(default_factory=dict)
    slots: tuple[SlotInfo, ...] = (
        SlotInfo("A", None, "good", True, True),
        SlotInfo("B", "1.0.0", "good", False, False, activated="2026-12-01T10:00:00Z #1"))
    install_error: str | None = None
    on_info: Callable[[], None] | None = None
    available: bool = True
    installed: list[str] = field(default_factory=list)
    progress: list[InstallProgress] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    reboots: int = 0
    status_calls: int = 0
    hold: asyncio.Event | None = None  # set: the write waits for it once it has begun

    async def status(self) -> UpdateStatus:
        self.status_calls += 1
        return UpdateStatus(COMPATIBLE, self.slots)

    async def bundle_info(self, path: str) -> BundleInfo:
        if self.on_info is not None:
            self.on_info()
        found = self.bundles.get(Path(path).name)
        if found is None or isinstance(found, str):
            raise UpdateError(f"the bundle was refused: {found or 'not a bundle'}")
        return replace(found, path=path)

    async def install(self, path: str, progress: Callable[[InstallProgress], None]) -> None:
        for pct, step, writing in ((0, "Installing", False), (80, "Updating slots", True),
                                   (100, "Installing done.", True)):
            progress(InstallProgress(pct, step, writing))
            if writing and pct < 100 and self.hold is not None:
                await self.hold.wait()
        if self.install_error:
            raise UpdateError(f"the install failed: {self.install_error}")
        self.installed.append(path)

    async def mark_good(self) -> None:
        self.marked.append("good")

    async def mark_bad(self) -> None:
        self.marked.append("bad")

    def request_reboot(self) -> None:
        self.reboots += 1


def bundle_file(data_dir: Path, name: str = "posfw-1.1.0.raucb") -> str:
    export = data_dir / "export"
    export.mkdir(exist_ok=True)
    (export / name).write_bytes(b"bundle")
    return str(export / name)


def stand_in(**kw) -> FakeAgent:
    return FakeAgent(bundles={"posfw-1.1.0.raucb": BundleInfo("", COMPATIBLE, "1.1.0"),
                              "other-board.raucb": BundleInfo("", "posfw-rpi", "1.1.0"),
                              "tampered.raucb": "signature verification failed"}, **kw)


