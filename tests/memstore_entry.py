"""Test-only entry: `python -m tests.memstore_entry ARGS` runs board.sim.firmware as it is, with its
keys in the development store (keys/tmk.key, keys/card.key: MemoryKeyStore) instead of the
board's token. The control run of tests/test_key_memory_e2e.py: the same terminal process, whose
memory scan must find the keys.
"""

from __future__ import annotations

from board.sim.firmware import main
from firmware.app import devices
from firmware.app.terminal import Terminal
from firmware.ports import KeyStore


class MemoryStoreTerminal(Terminal):
    def _open_key_store(self) -> KeyStore:
        return devices.open_key_store(self.board, self.data_dir, "memory")


if __name__ == "__main__":
    raise SystemExit(main(terminal_class=MemoryStoreTerminal))
