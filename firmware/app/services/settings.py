"""The settings commands of the keypad's settings screens: save, restore the previous version,
factory defaults, roll back after a failed self-test, change the supervisor password.

It speaks the screens' commands (firmware/ui/core.py), which the terminal core does not know:
the core keeps the settings in memory and applies them (TerminalCore.apply_settings); this
service saves them through the settings store, under the one operation lock, and answers with
what the screens show next.
"""

from __future__ import annotations

import asyncio

from firmware.app.core.terminal import TerminalCore
from firmware.engine.model import TxnResult
from firmware.settings.model import SettingsInvalid, password_words
from firmware.settings.schema import self_tests_for
from firmware.ui import core as ui


async def run(terminal: TerminalCore, command: ui.UiCommand) -> ui.SettingsSaved:
    """Save / restore / factory defaults / roll back / password change, then apply.

    Answers with firmware.ui.core.SettingsSaved: the problems per field in words, or the
    self-tests the changed fields need and the backup version a roll back restores.
    """
    store = terminal.settings_store
    async with terminal.exclusive():
        old = terminal.settings
        # The store runs in a worker thread: it fsyncs, and a factory reset hashes (scrypt).
        try:
            if isinstance(command, ui.SaveSettings):
                data = {g: dict(v) for g, v in command.data.items()}
                why = command.reason
                version = await asyncio.to_thread(store.save, data, why)
            elif isinstance(command, ui.RestorePrevious):
                data, why = await asyncio.to_thread(store.restore_previous), "restore previous"
                version = store.last_backup
            elif isinstance(command, ui.FactoryDefaults):
                data = await asyncio.to_thread(store.factory_defaults, True)
                why, version = "factory defaults", store.last_backup
            elif isinstance(command, ui.RollBackSettings):
                why = "rolled back after a failed self-test"
                data = await asyncio.to_thread(store.restore, command.version, why)
                version = store.last_backup
            elif isinstance(command, ui.ChangePassword):
                hashed = await terminal.new_password_hash(command.new, "keypad")
                if isinstance(hashed, TxnResult):
                    return ui.SettingsSaved(False, {"security.supervisor_hash": password_words(
                        hashed.message_key, terminal.language())})
                data = {g: dict(v) for g, v in old.items()}
                data["security"]["supervisor_hash"] = hashed
                data["security"]["password_changed"] = True
                why = "supervisor password changed"
                version = await asyncio.to_thread(store.save, data, why)
            else:
                raise TypeError(f"not a settings command: {command!r}")
        except SettingsInvalid as exc:
            return ui.SettingsSaved(False, dict(exc.problems))
        except (RuntimeError, ValueError, OSError) as exc:
            return ui.SettingsSaved(False, {"settings": str(exc)})
        changed = [f"{g}.{n}" for g in data for n in data[g]
                   if old.get(g, {}).get(n) != data[g][n]]
        await terminal.apply_settings(data, changed)
        if terminal.journal is not None:
            detail = ", ".join(k for k in changed if not k.startswith("security.supervisor"))
            # the keypad's operator (the supervisor password, when one was asked, is audited
            # with the same who just before)
            terminal.journal.audit(terminal.actor("keypad"), f"settings: {why}", detail[:500],
                                   "saved")
    tests = () if isinstance(command, ui.RollBackSettings) else self_tests_for(changed)
    terminal.notify_changed()
    return ui.SettingsSaved(True, {}, tests, version)
