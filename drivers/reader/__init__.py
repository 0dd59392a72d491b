"""Card reader drivers: the framed serial link (serial_link) and the HID keyboard wedge (hid_wedge).

Both implement firmware.ports.CardReader; link_protocol is the one home of the serial
link's payload format, shared with the emulated reader in board/sim/reader.py.
"""

from __future__ import annotations

from firmware.ports import ReaderUnavailable


class ReaderRefused(ReaderUnavailable):
    """The reader answered a command with NAK (unknown command, bad body, busy); the message says which.

    A ReaderUnavailable so callers that only know firmware.ports handle it too.
    """
