"""Card-reader emulator for a Raspberry Pi Pico (RP2040, MicroPython 1.2x): the reader end of
docs/reader-link.md over UART0, frames per c_ext/FRAMING.md, buttons that swipe or insert one
fake test card, the onboard LED as the green lamp. Valid MicroPython; runs on CPython via shim/.
It has no ISO 7816 UART, so no chip session: the chip commands (P, W, X, G, O) are answered as
the protocol says for a reader without a chip slot (chip status 5 and words). Nor has it a PIN
pad: the PIN pad commands (Y, J, Q) get pad status 1 and words (Q: nothing to cancel).

Theory of operation: one plain loop (`main`) calls `Reader.poll()` every few milliseconds.
A poll drains the UART into the frame decoder (each complete frame is a command, answered at
once), gives up a partial frame after a 50 ms quiet gap, samples the debounced buttons (a card
event is sent only while armed), and runs the clocks: the arm's timeout, the chip activation
(500 ms from insertion to K, during which an A is NAKed busy) and the end of a beep.
Every time comparison goes through ticks_diff, so the 2**30 ms tick wrap-around is harmless.
"""

import time

from micropython import const

# MicroPython has no `typing` at run time. mypy treats a name TYPE_CHECKING as always true
# (see mypy.ini), so the Protocols below exist for the checker only; annotations that name
# them are strings, which neither CPython nor MicroPython evaluates. MicroPython has no `/` in
# parameter lists, so positional-only parameters are spelled the older way, with a `__` prefix.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from _mpy_shed.time_mp import _TicksMs as Ticks

    class Clock(Protocol):
        """What the reader needs of MicroPython's `time` module (which satisfies it)."""

        def ticks_ms(self) -> Ticks: ...

        def ticks_diff(self, __ticks1: Ticks, __ticks2: Ticks) -> int: ...

    class SerialLink(Protocol):
        """The part of machine.UART the reader uses (non-blocking reads)."""

        def any(self) -> int: ...

        def readinto(self, __buf: bytearray) -> int | None: ...

        def write(self, __buf: memoryview) -> int | None: ...

    class InputPin(Protocol):
        def value(self) -> int: ...

    class OutputPin(Protocol):
        def on(self) -> None: ...

        def off(self) -> None: ...

    class Buzzer(Protocol):
        def duty_u16(self, __value: int) -> None: ...

    class FrameHandler(Protocol):
        def __call__(self, __frame: bytearray, __size: int) -> None: ...

    class Logger(Protocol):
        def __call__(self, __message: str) -> None: ...


VERSION = b"posreader-pico 1.0"

# ---- wiring (GPIO numbers on the Pico; see README.md) ------------------------------------
UART_ID = const(0)
UART_TX_GP = const(0)
UART_RX_GP = const(1)
BAUDRATE = const(115200)
SWIPE_BUTTON_GP = const(15)
CHIP_BUTTON_GP = const(14)
# A passive buzzer on GP16 sounds the beeps; without one the PWM drives a free pin, harmlessly.
# Set to None if GP16 is wired to something else.
BUZZER_GP: "int | None" = 16
BUZZER_HZ = const(2700)
BUZZER_DUTY = const(32768)
POLL_MS = const(2)

# ---- the one test card (clearly fake: board/sim/cards.py "cup_debit", PAN ...0017) -------
TRACK1 = b"B6222021000000000017^CUP DEBIT/TEST^30121200000000000000"
TRACK2 = b"6222021000000000017=30121200000000000"
# A short, obviously synthetic ATR (direct convention, no interface bytes, 2 historical bytes).
CHIP_ATR = b"\x3b\x02\x14\x50"

# ---- frame format (c_ext/FRAMING.md) -----------------------------------------------------
_STX = const(0x02)
_ETX = const(0x03)
_PAYLOAD_MAX = const(250)
_FRAME_MAX = const(254)
_GAP_MS = const(50)  # a partial frame older than this is given up (reader-link.md)

# Decoder verdicts on the newest byte of a candidate frame.
_PENDING = const(0)
_DONE = const(1)
_FAILED = const(2)

# ---- protocol (docs/reader-link.md) --------------------------------------------------------
_FLAG_MAGSTRIPE = const(0x01)
_FLAG_CHIP = const(0x02)
_NAK_UNKNOWN = const(1)
_NAK_BAD_BODY = const(2)
_NAK_BUSY = const(3)
_TRACK_READ = const(0)
_TRACK_BLANK = const(1)
_ERROR_SWIPE_UNREADABLE = const(1)
_ERROR_REMOVED_TOO_EARLY = const(3)
# Chip status (first byte of `p` and `x`): this board has no ISO 7816 interface.
_CHIP_NO_SLOT = const(5)
_NO_CHIP_SLOT_WORDS = b"no chip slot: this reader (posreader-pico) reads magstripe only"
# Pad status (first byte of `y` and `j`): this board has no PIN pad.
_PAD_NONE = const(1)
_NO_PIN_PAD_WORDS = b"this reader (posreader-pico) has no PIN pad: it takes no PIN and holds no keys"
_PAD_OPS = b"STIFMED"  # the `Y` operations (docs/reader-link.md, "PIN pad")
_PIN_ENTRY_MIN = const(4)  # timeout (2), flags, PAN length
_OFFSET_LEN = const(2)
_APDU_MIN = const(4)
# Powering a freshly inserted chip and reading its ATR: the "chip transaction" of this reader.
# K goes out when it ends; an A meanwhile is NAKed busy, pulling the card meanwhile is E 3.
_CHIP_ACTIVATION_MS = const(500)
_BEEP_MAX_MS = const(2000)
_LED_COLOURS = const(4)  # 0 green (the onboard LED), 1 red, 2 amber, 3 blue (acknowledged only)

_NAK_WORDS = ("", "unknown command", "bad body (wrong length or value)", "busy: activating a chip card")

# ---- buttons ----------------------------------------------------------------------------------
_DEBOUNCE_MS = const(20)
_LONG_PRESS_MS = const(1000)  # holding the swipe button this long is an unreadable swipe
_NO_EDGE = const(0)
_PRESSED = const(1)
_RELEASED = const(2)


class FrameDecoder:
    """Incremental, resynchronising decoder for STX LEN PAYLOAD ETX LRC (c_ext/FRAMING.md).

    The MicroPython twin of c_ext.posio.FrameDecoder, with the same counters and the same
    resync rule (after a failed candidate, hunt again from the byte after its STX). It
    allocates nothing per byte: one 254-byte buffer holds the candidate, and each good frame
    is handed to on_frame(buffer, payload_length) with the payload at offset 2, valid only
    during the call.
    """

    def __init__(self, on_frame: "FrameHandler") -> None:
        self._on_frame = on_frame
        self._buf = bytearray(_FRAME_MAX)
        self._len = 0
        self.frames = 0
        self.noise_bytes = 0
        self.bad_length = 0
        self.bad_etx = 0
        self.bad_checksum = 0
        self.truncated = 0

    @property
    def buffered(self) -> int:
        """Bytes of the partial frame held (always < 254)."""
        return self._len

    def errors(self) -> int:
        """All error counts summed: changes whenever bytes were skipped or a frame failed."""
        return self.noise_bytes + self.bad_length + self.bad_etx + self.bad_checksum + self.truncated

    def feed(self, data: "bytes | bytearray", count: int) -> None:
        """Consumes data[0:count] (a count, so a reused receive buffer needs no slicing)."""
        for i in range(count):
            self._push(data[i])

    def flush(self) -> None:
        """The link went quiet mid-frame: give up each candidate and rescan what it held."""
        while self._len:
            self.truncated += 1
            self._rescan()

    def _push(self, byte: int) -> None:
        if self._len == 0 and byte != _STX:
            self.noise_bytes += 1
            return
        self._buf[self._len] = byte
        self._len += 1
        if self._judge_newest() == _FAILED:
            self._rescan()

    def _judge_newest(self) -> int:
        """Checks the byte just appended to the candidate frame in _buf[0:_len]."""
        buf = self._buf
        newest = self._len - 1
        if newest == 0:
            return _PENDING
        size = buf[1]
        if newest == 1:
            if size > _PAYLOAD_MAX:
                self.bad_length += 1
                return _FAILED
            return _PENDING
        if newest < size + 2:
            return _PENDING
        if newest == size + 2:
            if buf[newest] != _ETX:
                self.bad_etx += 1
                return _FAILED
            return _PENDING
        lrc = 0
        for i in range(1, size + 3):
            lrc ^= buf[i]
        if buf[newest] != lrc:
            self.bad_checksum += 1
            return _FAILED
        self.frames += 1
        self._len = 0
        self._on_frame(buf, size)
        return _DONE

    def _rescan(self) -> None:
        """Drops the failed candidate's STX and hunts again through the bytes after it.

        Compacts in place: the write position (_len) always stays behind the read position,
        so no byte is overwritten before it has been re-read.
        """
        buf = self._buf
        end = self._len
        read = 1
        self._len = 0
        while read < end:
            byte = buf[read]
            read += 1
            if self._len == 0 and byte != _STX:
                self.noise_bytes += 1
                continue
            buf[self._len] = byte
            self._len += 1
            if self._judge_newest() == _FAILED:
                # This candidate failed as well: its bytes after its STX come next, then the
                # unread rest, so move the rest down behind them and start over.
                keep = self._len
                for i in range(end - read):
                    buf[keep + i] = buf[read + i]
                end = keep + end - read
                read = 1
                self._len = 0


class Button:
    """A push button to ground on a pulled-up input, debounced in software."""

    def __init__(self, pin: "InputPin", clock: "Clock") -> None:
        self._pin = pin
        self._clock = clock
        self._raw = 1
        self._stable = 1
        self._changed_at = clock.ticks_ms()
        self.pressed_at = self._changed_at

    @property
    def is_down(self) -> bool:
        return self._stable == 0

    def update(self, now: "Ticks") -> int:
        """Samples the pin; _PRESSED or _RELEASED once the level has held for _DEBOUNCE_MS."""
        raw = self._pin.value()
        if raw != self._raw:
            self._raw = raw
            self._changed_at = now
            return _NO_EDGE
        if raw == self._stable or self._clock.ticks_diff(now, self._changed_at) < _DEBOUNCE_MS:
            return _NO_EDGE
        self._stable = raw
        if raw == 0:
            self.pressed_at = now
            return _PRESSED
        return _RELEASED


def track_records(track1: bytes, track2: bytes, track3: bytes) -> bytes:
    """The M event body: per track, status (read / blank) + length + characters."""
    body = bytearray()
    for track in (track1, track2, track3):
        body.append(_TRACK_READ if track else _TRACK_BLANK)
        body.append(len(track))
        body.extend(track)
    return bytes(body)


def _log_to_console(message: str) -> None:
    # On the Pico this is the USB REPL, separate from the UART link.
    print(message)


class Reader:
    """The reader's protocol logic; the UART, clock, buttons, LED and buzzer are injected.

    Holds the arm (SEQ, flags, timeout), the chip slot (present, activating, which K reported
    it), the LED state, the beep in progress, and the last command and its encoded reply, so a
    repeated command is answered again without acting twice.

    Events: M (short press of the swipe button), E 1 (long press), K (a chip arm and a card in
    the slot, after the activation), E 3 (card pulled during the activation), R (card pulled:
    the chip arm's event, or unarmed if a K had reported the card), T (the arm's timeout). Every
    event but an unarmed R ends the arm.
    """

    def __init__(self, link: "SerialLink", clock: "Clock", swipe_pin: "InputPin",
                 chip_pin: "InputPin", led: "OutputPin", buzzer: "Buzzer | None" = None,
                 log: "Logger" = _log_to_console) -> None:
        self._link = link
        self._clock = clock
        self._led = led
        self._buzzer = buzzer
        self._log = log
        self._decoder = FrameDecoder(self._on_frame)
        self._rx = bytearray(64)
        self._reply = bytearray(_FRAME_MAX)  # the last reply, kept whole for a repeated SEQ
        self._reply_len = 0
        self._event = bytearray(_FRAME_MAX)
        self._last_command = bytearray(_PAYLOAD_MAX)
        self._last_command_len = -1  # -1: nothing to repeat yet
        self._reported_errors = 0
        self._swipe_body = track_records(TRACK1, TRACK2, b"")
        now = clock.ticks_ms()
        self._last_rx_at = now
        self._swipe_button = Button(swipe_pin, clock)
        self._chip_button = Button(chip_pin, clock)
        self._long_press_sent = False
        self.armed = False
        self.arm_seq = 0
        self._arm_flags = 0
        self._arm_timeout_ms = 0
        self._armed_at = now
        self.chip_present = False
        self._activating = False
        self._activation_started = now
        self._chip_reported_seq = -1  # SEQ of the K that told the terminal about the card in the slot
        self._last_event = 0  # TYPE of the last event sent, 0 for none
        self.green = False
        self.lamps = bytearray(_LED_COLOURS)
        self._beeping = False
        self._beep_ms = 0
        self._beep_started = now
        self._show_led()

    # ---- the loop -----------------------------------------------------------------------

    def poll(self) -> None:
        """One pass: serial input, the inter-byte gap, the buttons, the timers."""
        now = self._clock.ticks_ms()
        if self._link.any():
            count = self._link.readinto(self._rx)
            if count:
                self._last_rx_at = now
                self._decoder.feed(self._rx, count)
        if self._decoder.buffered and self._clock.ticks_diff(now, self._last_rx_at) >= _GAP_MS:
            self._decoder.flush()
        self._report_link_errors()
        self._poll_buttons(now)
        self._poll_timers(now)

    def _report_link_errors(self) -> None:
        errors = self._decoder.errors()
        if errors == self._reported_errors:
            return
        self._reported_errors = errors
        d = self._decoder
        self._log(f"reader link: skipped bad input so far: {d.noise_bytes} noise bytes, "
                  f"{d.bad_length} bad length, {d.bad_etx} bad ETX, {d.bad_checksum} bad checksum, "
                  f"{d.truncated} cut short")

    def _poll_buttons(self, now: "Ticks") -> None:
        edge = self._swipe_button.update(now)
        if edge == _PRESSED:
            self._long_press_sent = False
        elif edge == _RELEASED and not self._long_press_sent:
            self._swiped()
        elif (self._swipe_button.is_down and not self._long_press_sent and self._clock.ticks_diff(
                now, self._swipe_button.pressed_at) >= _LONG_PRESS_MS):
            self._long_press_sent = True
            self._swipe_unreadable()
        if self._chip_button.update(now) == _PRESSED:
            if self.chip_present:
                self._chip_removed()
            else:
                self._chip_inserted()

    def _poll_timers(self, now: "Ticks") -> None:
        if (self.armed and self._arm_timeout_ms
                and self._clock.ticks_diff(now, self._armed_at) >= self._arm_timeout_ms):
            self._end_arm(b"T", b"")
        if self._activating and self._clock.ticks_diff(now, self._activation_started) >= _CHIP_ACTIVATION_MS:
            self._activating = False
            if self.armed and self._arm_flags & _FLAG_CHIP:
                self._end_arm(b"K", CHIP_ATR)
                self._chip_reported_seq = self.arm_seq
        if self._beeping and self._clock.ticks_diff(now, self._beep_started) >= self._beep_ms:
            self._beeping = False
            if self._buzzer is not None:
                self._buzzer.duty_u16(0)
            self._show_led()

    # ---- card events ---------------------------------------------------------------------

    def _swiped(self) -> None:
        if self.armed and self._arm_flags & _FLAG_MAGSTRIPE:
            self._end_arm(b"M", self._swipe_body)

    def _swipe_unreadable(self) -> None:
        if self.armed and self._arm_flags & _FLAG_MAGSTRIPE:
            self._end_arm(b"E", bytes((_ERROR_SWIPE_UNREADABLE,))
                          + b"swipe unreadable on every track (long press)")

    def _chip_inserted(self) -> None:
        self.chip_present = True
        self._chip_reported_seq = -1
        if self.armed and self._arm_flags & _FLAG_CHIP:
            self._start_activation()

    def _start_activation(self) -> None:
        self._activating = True
        self._activation_started = self._clock.ticks_ms()

    def _chip_removed(self) -> None:
        self.chip_present = False
        reported = self._chip_reported_seq
        self._chip_reported_seq = -1
        armed_for_chip = self.armed and self._arm_flags & _FLAG_CHIP
        if self._activating:
            self._activating = False
            if armed_for_chip:
                self._end_arm(b"E", bytes((_ERROR_REMOVED_TOO_EARLY,))
                              + b"card removed too early (during activation)")
                return
        if armed_for_chip:
            self._end_arm(b"R", b"")
        elif reported >= 0:
            # Not armed for chip, but a K told the terminal the card was in: say it left.
            self._send_event(b"R", reported, b"")

    # ---- commands -------------------------------------------------------------------------

    def _on_frame(self, frame: bytearray, size: int) -> None:
        """One command; the payload is frame[2:2 + size]."""
        if size < 2:
            # No SEQ to answer with: NAK under SEQ 0, and forget the last command so a repeat
            # of it is not answered with this NAK.
            self._last_command_len = -1
            self._nak(0 if size == 0 else frame[2], 0, _NAK_BAD_BODY)
            return
        if self._is_repeat(frame, size):
            self._link.write(memoryview(self._reply)[:self._reply_len])
            return
        for i in range(size):
            self._last_command[i] = frame[2 + i]
        self._last_command_len = size
        kind = frame[2]
        seq = frame[3]
        body = bytes(frame[4:2 + size])
        if kind == 0x56:  # V
            self._on_version(seq, body)
        elif kind == 0x41:  # A
            self._on_arm(seq, body)
        elif kind == 0x43:  # C
            self._on_cancel(seq, body)
        elif kind == 0x42:  # B
            self._on_beep(seq, body)
        elif kind == 0x4C:  # L
            self._on_led(seq, body)
        elif kind == 0x53:  # S
            self._on_status(seq, body)
        elif kind == 0x50 or kind == 0x58 or kind == 0x57 or kind == 0x47 or kind == 0x4F:  # P X W G O
            self._on_chip_command(kind, seq, body)
        elif kind == 0x59 or kind == 0x4A or kind == 0x51:  # Y J Q
            self._on_pinpad_command(kind, seq, body)
        else:
            self._nak(kind, seq, _NAK_UNKNOWN)

    def _is_repeat(self, frame: bytearray, size: int) -> bool:
        if size != self._last_command_len:
            return False
        last = self._last_command
        # A loop, not all(<generator>): MicroPython would allocate the generator per frame.
        for i in range(size):  # noqa: SIM110
            if frame[2 + i] != last[i]:
                return False
        return True

    def _on_version(self, seq: int, body: bytes) -> None:
        if body:
            self._nak(0x56, seq, _NAK_BAD_BODY)
            return
        self._reply_with(b"v", seq, VERSION)

    def _on_arm(self, seq: int, body: bytes) -> None:
        if len(body) != 3 or not body[0] or body[0] & ~(_FLAG_MAGSTRIPE | _FLAG_CHIP):
            self._nak(0x41, seq, _NAK_BAD_BODY)
            return
        if self._activating:
            self._nak(0x41, seq, _NAK_BUSY)
            return
        self.armed = True  # replaces any earlier arm, whose SEQ gets no event
        self.arm_seq = seq
        self._arm_flags = body[0]
        self._arm_timeout_ms = (body[1] << 8 | body[2]) * 1000
        self._armed_at = self._clock.ticks_ms()
        self._reply_with(b"a", seq, b"")
        if self.chip_present and self._arm_flags & _FLAG_CHIP and self._chip_reported_seq < 0:
            self._start_activation()  # a card the terminal has not been told about is in the slot

    def _on_cancel(self, seq: int, body: bytes) -> None:
        if body:
            self._nak(0x43, seq, _NAK_BAD_BODY)
            return
        if not self.armed and self._last_event == 0x4B and self._chip_reported_seq >= 0:
            # The K may have crossed this cancel on the wire and been dropped by the terminal:
            # report the card again on the next chip arm.
            self._chip_reported_seq = -1
        self.armed = False
        self._reply_with(b"c", seq, b"")

    def _on_beep(self, seq: int, body: bytes) -> None:
        duration = body[0] << 8 | body[1] if len(body) == 2 else 0
        if not 1 <= duration <= _BEEP_MAX_MS:
            self._nak(0x42, seq, _NAK_BAD_BODY)
            return
        self._beeping = True
        self._beep_ms = duration
        self._beep_started = self._clock.ticks_ms()
        if self._buzzer is not None:
            self._buzzer.duty_u16(BUZZER_DUTY)
        self._show_led()
        self._reply_with(b"b", seq, b"")

    def _on_led(self, seq: int, body: bytes) -> None:
        if len(body) != 2 or body[0] >= _LED_COLOURS or body[1] > 1:
            self._nak(0x4C, seq, _NAK_BAD_BODY)
            return
        self.lamps[body[0]] = body[1]
        self.green = bool(self.lamps[0])
        self._show_led()
        self._reply_with(b"l", seq, b"")

    def _on_status(self, seq: int, body: bytes) -> None:
        if body:
            self._nak(0x53, seq, _NAK_BAD_BODY)
            return
        flags = (1 if self.armed else 0) | (2 if self.chip_present else 0)
        self._reply_with(b"s", seq, bytes((flags,)))

    def _on_chip_command(self, kind: int, seq: int, body: bytes) -> None:
        """P, W, X, G, O with no chip slot: well-formed ones get their reply (P and X with
        status 5 and words), malformed ones NAK 2, as on any reader."""
        if kind == 0x50:  # P: power on
            if body:
                self._nak(kind, seq, _NAK_BAD_BODY)
                return
            self._reply_with(b"p", seq, bytes((_CHIP_NO_SLOT,)) + _NO_CHIP_SLOT_WORDS)
        elif kind == 0x4F:  # O: power off, answered with or without a session
            if body:
                self._nak(kind, seq, _NAK_BAD_BODY)
                return
            self._reply_with(b"o", seq, b"")
        elif kind == 0x57:  # W: a command APDU's part; kept by nobody here
            if len(body) <= _OFFSET_LEN:
                self._nak(kind, seq, _NAK_BAD_BODY)
                return
            self._reply_with(b"w", seq, b"")
        elif kind == 0x58:  # X: the exchange itself
            whole = len(body) >= _OFFSET_LEN and body[0] == 0 and body[1] == 0  # offset 0: all of it
            if len(body) < _OFFSET_LEN or (whole and len(body) < _OFFSET_LEN + _APDU_MIN):
                self._nak(kind, seq, _NAK_BAD_BODY)
                return
            self._reply_with(b"x", seq, bytes((_CHIP_NO_SLOT,)) + _NO_CHIP_SLOT_WORDS)
        else:  # G: there is never a response to take parts of
            self._nak(kind, seq, _NAK_BAD_BODY)

    def _on_pinpad_command(self, kind: int, seq: int, body: bytes) -> None:
        """Y, J, Q with no PIN pad: Y (a known operation) and J (at least its fixed fields) get
        pad status 1 and words, Q answers that nothing was running; the rest NAK 2. Only the
        fields that say which command it is are checked: there is no pad to use the others."""
        if kind == 0x51:  # Q: cancel a PIN entry; none ever runs here
            if body:
                self._nak(kind, seq, _NAK_BAD_BODY)
                return
            self._reply_with(b"q", seq, b"\x00")
        elif kind == 0x59:  # Y: a key operation
            if not body or _PAD_OPS.find(bytes((body[0],))) < 0:
                self._nak(kind, seq, _NAK_BAD_BODY)
                return
            self._reply_with(b"y", seq, bytes((_PAD_NONE,)) + _NO_PIN_PAD_WORDS)
        else:  # J: a PIN entry
            if len(body) < _PIN_ENTRY_MIN:
                self._nak(kind, seq, _NAK_BAD_BODY)
                return
            self._reply_with(b"j", seq, bytes((_PAD_NONE,)) + _NO_PIN_PAD_WORDS)

    # ---- output -----------------------------------------------------------------------------

    def _show_led(self) -> None:
        # A beep shows as the green lamp inverted for the beep's length: a blink either way.
        if self.green != self._beeping:
            self._led.on()
        else:
            self._led.off()

    def _nak(self, kind: int, seq: int, reason: int) -> None:
        self._log(f"reader link: NAK {reason} ({_NAK_WORDS[reason]}) for command 0x{kind:02x} seq {seq}")
        self._reply_with(b"n", seq, bytes((reason,)))

    def _reply_with(self, kind: bytes, seq: int, body: bytes) -> None:
        self._reply_len = self._write_frame(self._reply, kind, seq, body)

    def _end_arm(self, kind: bytes, body: bytes) -> None:
        """Sends the current arm's event, which ends the arm."""
        self.armed = False
        self._send_event(kind, self.arm_seq, body)

    def _send_event(self, kind: bytes, seq: int, body: bytes) -> None:
        self._last_event = kind[0]
        self._write_frame(self._event, kind, seq, body)

    def _write_frame(self, out: bytearray, kind: bytes, seq: int, body: bytes) -> int:
        """Encodes TYPE SEQ BODY as one frame into out, writes it, returns its length."""
        size = 2 + len(body)
        out[0] = _STX
        out[1] = size
        out[2] = kind[0]
        out[3] = seq
        out[4:2 + size] = body
        out[2 + size] = _ETX
        lrc = 0
        for i in range(1, size + 3):
            lrc ^= out[i]
        out[3 + size] = lrc
        self._link.write(memoryview(out)[:4 + size])
        return 4 + size


def main() -> None:
    """Builds the real UART0, buttons, LED and buzzer and runs the reader for ever."""
    from machine import PWM, UART, Pin

    link = UART(UART_ID, baudrate=BAUDRATE, tx=Pin(UART_TX_GP), rx=Pin(UART_RX_GP), rxbuf=1024)
    buzzer = None
    if BUZZER_GP is not None:
        buzzer = PWM(Pin(BUZZER_GP), freq=BUZZER_HZ, duty_u16=0)
    reader = Reader(link, time,
                    swipe_pin=Pin(SWIPE_BUTTON_GP, Pin.IN, Pin.PULL_UP),
                    chip_pin=Pin(CHIP_BUTTON_GP, Pin.IN, Pin.PULL_UP),
                    led=Pin("LED", Pin.OUT), buzzer=buzzer)
    print(f"posreader-pico: reader link on UART{UART_ID} (GP{UART_TX_GP} TX, GP{UART_RX_GP} RX) "
          f"at {BAUDRATE} baud")
    while True:
        reader.poll()
        time.sleep_ms(POLL_MS)


if __name__ == "__main__":
    main()
