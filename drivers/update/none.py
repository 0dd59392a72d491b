"""The update agent of a board without A/B slots (a development machine, the simulator, the x86
QEMU guest): every request is refused in words, nothing is touched."""

from __future__ import annotations

from collections.abc import Callable

from firmware.ports import BundleInfo, InstallProgress, UpdateStatus, UpdatesUnavailable

WHY = "updates are not available on this board (it has no A/B firmware slots)"


class NoUpdates:
    available = False

    async def status(self) -> UpdateStatus:
        raise UpdatesUnavailable(WHY)

    async def bundle_info(self, path: str) -> BundleInfo:
        raise UpdatesUnavailable(WHY)

    async def install(self, path: str, progress: Callable[[InstallProgress], None]) -> None:
        raise UpdatesUnavailable(WHY)

    async def mark_good(self) -> None:
        raise UpdatesUnavailable(WHY)

    async def mark_bad(self) -> None:
        raise UpdatesUnavailable(WHY)

    def request_reboot(self) -> None:
        raise UpdatesUnavailable(WHY)
