"""Settings > Update firmware and Diagnostics > Firmware: the screens through core.Ui (snapshots in
both languages, 4x16 and 8x21; nothing installs before the confirm's ENTER; CANCEL counts until
the write begins, never after), then the whole path by keys on a real terminal (panelkit's Shop:
the keypad on a pty, the capture LCD), with the stand-in update agent of tests/updatekit.py at
the RAUC edge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from panelkit import Shop
from ui_snapshots import assert_snapshot
from updatekit import bundle_file, stand_in

from firmware.app.services import updates  # (importing it registers the app's result words)
from firmware.i18n import text
from firmware.ports import Frame, Key
from firmware.settings.model import factory
from firmware.ui import core
from firmware.ui.diag_screens import DiagMenu, DiagRunning
from firmware.ui.idle import IdleScreen
from firmware.ui.settings_screens import settings_root
from firmware.ui.update_screens import Confirm, FilePick, UpdateResult, Working, update_root

LANGS = [("en", 4, 16), ("zh_CN", 4, 16), ("en", 8, 21), ("zh_CN", 8, 21)]
FILES = ({"path": "/media/usb0/posfw-1.1.0.raucb", "name": "posfw-1.1.0"},
         {"path": "/media/usb0/old/posfw-1.0.5.raucb", "name": "posfw-1.0.5"})


@dataclass(frozen=True)
class Home(core.Screen):
    def handle(self, event, ctx):
        return None

    def render(self, ctx) -> Frame:
        return core.frame(ctx, ["HOME"])


HOME = Home()


class Driver:
    def __init__(self, lang="en", rows=4, cols=16) -> None:
        self.lang, self.rows, self.cols, self.mono = lang, rows, cols, 100.0
        self.ui = core.Ui(IdleScreen, lambda outcome, screen: screen, lambda op, screen: screen)
        self.commands: list = []

    def ctx(self) -> core.UiContext:
        return core.UiContext(now=datetime(2026, 12, 7, 23, 0), mono=self.mono, rows=self.rows,
                              cols=self.cols, lang=self.lang, settings=factory())

    def feed(self, event):
        out = self.ui.feed(event, self.ctx())
        self.commands += out.commands
        return out

    def keys(self, *keys: Key):
        for key in keys:
            self.feed(core.KeyIn(key))

    def snap(self, name: str) -> None:
        suffix = "" if self.rows == 4 else "_8x21"
        assert_snapshot(f"update_{name}_{self.lang}{suffix}", self.ui.frame(self.ctx()), self.cols)

    def ops(self, op: str) -> list[core.StartOp]:
        return [c for c in self.commands if isinstance(c, core.StartOp) and c.op == op]


def _checked(d: Driver) -> None:
    d.ui.screen = update_root(HOME)
    d.feed(core.Tick())
    d.feed(core.OpDone(core.OpOutcome("update_sources", "done", "upd_pick", items=FILES)))
    d.keys(Key.ENTER)
    d.feed(core.Tick())
    d.feed(core.OpDone(core.OpOutcome(
        "update_check", "done", "upd_confirm",
        detail=text("upd_confirm", d.lang, version="1.1.0", current="1.0.0"),
        items=({"path": FILES[0]["path"], "version": "1.1.0", "current": "1.0.0"},))))


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_the_whole_flow_commands_and_screens(lang, rows, cols) -> None:
    d = Driver(lang, rows, cols)
    d.ui.screen = update_root(HOME)
    d.snap("looking")
    assert d.feed(core.Tick()).commands == (core.StartOp("update_sources"),)
    d.feed(core.OpDone(core.OpOutcome("update_sources", "done", "upd_pick", items=FILES)))
    d.snap("files")
    d.keys(Key.ENTER)
    assert d.feed(core.Tick()).commands == (core.StartOp("update_check", path=FILES[0]["path"]),)
    d.snap("checking")
    d.feed(core.OpDone(core.OpOutcome(
        "update_check", "done", "upd_confirm",
        detail=text("upd_confirm", lang, version="1.1.0", current="1.0.0"),
        items=({"path": FILES[0]["path"], "version": "1.1.0", "current": "1.0.0"},))))
    d.snap("confirm")
    assert d.ops("update_install") == []  # nothing installs before this ENTER
    d.keys(Key.ENTER)
    assert d.ops("update_install") == [core.StartOp("update_install", path=FILES[0]["path"],
                                                    reference="1.1.0", authorised=True)]
    d.feed(core.OpStep("upd_checking", cancellable=True))
    d.snap("working_check")
    d.feed(core.OpStep("upd_writing", 40, 100, cancellable=False))
    d.snap("working_write")
    d.keys(Key.CANCEL)
    assert not [c for c in d.commands if isinstance(c, core.CancelOp)]  # too late: said, not sent
    d.snap("working_no_cancel")
    d.feed(core.OpDone(core.OpOutcome("update_install", "done", "upd_restarting",
                                      detail=text("upd_restarting", lang, version="1.1.0"))))
    d.snap("restarting")
    d.keys(Key.ENTER)
    assert isinstance(d.ui.screen, IdleScreen)


def test_cancel_while_the_file_is_checked_is_sent() -> None:
    d = Driver()
    _checked(d)
    d.keys(Key.ENTER)
    d.feed(core.OpStep("upd_checking", cancellable=True))
    d.keys(Key.CANCEL)
    assert [c for c in d.commands if isinstance(c, core.CancelOp)] == [core.CancelOp()]
    assert isinstance(d.ui.screen, Working) and d.ui.screen.cancelling
    d.feed(core.OpDone(core.OpOutcome("update_install", "cancelled", "upd_cancelled",
                                      detail=text("upd_cancelled", "en"))))
    assert isinstance(d.ui.screen, UpdateResult)
    assert " ".join(d.ui.screen.rows(d.ctx())) == "Update cancelled: nothing changed"
    d.keys(Key.ENTER)  # back to the file list, not home: nothing happened
    assert isinstance(d.ui.screen, FilePick)


def test_cancel_before_the_install_goes_back_a_level_each_time() -> None:
    d = Driver()
    _checked(d)
    assert isinstance(d.ui.screen, Confirm)
    d.keys(Key.CANCEL)
    assert isinstance(d.ui.screen, FilePick)
    d.keys(Key.CANCEL)
    assert d.ui.screen is HOME
    assert d.ops("update_install") == []


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_refusals_are_shown_in_words(lang) -> None:
    d = Driver(lang)
    d.ui.screen = update_root(HOME)
    d.feed(core.Tick())
    d.feed(core.OpDone(core.OpOutcome("update_sources", "refused", "upd_no_bundles")))
    d.snap("no_files")
    d.keys(Key.ENTER)
    assert d.ui.screen is HOME
    _checked(d)
    d.keys(Key.ENTER)
    why = text("upd_blocked", lang, why=text("upd_item_reversal", lang, n=1))
    d.feed(core.OpDone(core.OpOutcome("update_install", "refused", "upd_blocked", detail=why)))
    d.snap("blocked")


def test_settings_offers_update_firmware_as_its_tenth_item() -> None:
    d = Driver()
    d.ui.screen = settings_root(HOME)
    d.keys(*[Key.UP])  # the last item, shown with its digit 0
    d.snap("settings_item")
    d.ui.screen = settings_root(HOME)
    d.keys(Key.D0)
    assert d.ui.screen.__class__.__name__ == "Looking"


def test_diagnostics_offers_the_firmware_screen() -> None:
    d = Driver("zh_CN")
    d.ui.screen = DiagMenu(HOME)
    out = d.feed(core.KeyIn(Key.D0))
    assert out.commands == (core.RunDiag("firmware"),) and isinstance(d.ui.screen, DiagRunning)
    d.feed(core.DiagResult("firmware", True, "固件版本1.1.0", "", (
        "分区A:出厂,正常", "分区B:1.1.0,正常,运行中,下次启动", "分区B自检通过")))
    d.snap("diag_firmware")


# -- the whole path by keys on a real terminal ----------------------------------------------

def test_update_firmware_by_keys(tmp_path: Path, sim, monkeypatch) -> None:
    import asyncio

    monkeypatch.setattr(updates, "RESTART_DELAY_S", 0.0)

    async def go() -> None:
        async with Shop(tmp_path, sim.port) as shop:
            shop.terminal.update_agent = agent = stand_in()
            path = bundle_file(shop.data_dir)
            await shop.press("MENU", "0", "1")
            await shop.shows("Settings", "Supervisor pwd")
            await shop.password()
            await shop.press("0")  # Update firmware
            await shop.shows("Update file", "posfw-1.1.0")
            await shop.press("ENTER")
            await shop.shows_words("Install version 1.1.0?")
            assert agent.installed == []
            await shop.press("ENTER")
            await shop.shows_words("Restarting into version 1.1.0")
            await shop.until(lambda: agent.reboots == 1, "the restart asked")
            assert agent.installed == [path]
            await shop.press("ENTER")
            await shop.idle()
            await shop.shows_words("Update installed: restarting")  # the idle screen says it too
            audit = [a for _at, _who, a, _d, o in shop.journal.audit_lines() if "firmware" in a]
            assert audit[0] == "firmware update: install"
            # Diagnostics > Firmware: both slots and why this one runs
            await shop.press("MENU", "0", "2", "0")
            await shop.shows_words("Slot A: factory, good, running")
            await shop.press("DOWN", "DOWN", "DOWN")
            await shop.shows_words("Slot B: 1.0.0, good")
    asyncio.run(go())


def test_a_board_without_updates_says_so_by_keys(tmp_path: Path, sim) -> None:
    import asyncio

    async def go() -> None:
        async with Shop(tmp_path, sim.port) as shop:  # the sim board: no update agent
            await shop.press("MENU", "0", "1")
            await shop.password()
            await shop.press("0")
            await shop.shows_words("Updates are not available on this board")
    asyncio.run(go())


def test_an_update_a_till_asked_for_shows_its_progress_on_the_lcd(tmp_path: Path, sim,
                                                                   monkeypatch) -> None:
    """ECR `update`: the LCD says what runs, the write's percentage, that CANCEL no longer
    counts, and how it ended, in full words."""
    import asyncio

    from helpers import PASSWORD

    monkeypatch.setattr(updates, "RESTART_DELAY_S", 0.0)

    async def go() -> None:
        async with Shop(tmp_path, sim.port, ecr=True, rows=8, cols=21) as shop:
            shop.terminal.update_agent = agent = stand_in(hold=asyncio.Event())
            path = bundle_file(shop.data_dir)
            reply = shop.ecr_request(op="update", path=path, password=PASSWORD, version="1.1.0")
            await shop.shows("ECR: Update")
            await shop.shows_words("Writing 80%: do not switch off")
            await shop.press("CANCEL")
            await shop.shows_words("Cannot cancel now")
            assert agent.hold is not None
            agent.hold.set()
            answer = await reply
            assert answer["ok"] and answer["message"] == "Restarting into version 1.1.0"
            await shop.shows_words("Restarting into version 1.1.0")
            assert agent.installed == [path]
    asyncio.run(go())
