"""The qemu board's host-side parts without QEMU: the serial bridge on a real pty, the ECR line and
the LCD watch on socketpairs, netpipe as the subprocess QEMU's guestfwd starts (loopback TCP),
is_idle_frame on screens the firmware's UI really draws, and books.compare on a real journal and
a real simulator ledger. Each test takes a fraction of a second; they run in plain `make test`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from board.qemu.books import TillApproval, compare
from board.qemu.guest import NETPIPE, GuestError
from board.qemu.rig import EcrLine, LcdWatch, SerialBridge, is_idle_frame
from board.sim.ledger import Ledger
from drivers.display.serial_frames import decode_frame, encode_frame
from firmware.engine.model import HostResult, PendingDraft, TxnRecord
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import TxnKind
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.entry import AmountEntry
from firmware.ui.idle import IdleScreen
from firmware.ui.machine import build_ui
from firmware.ui.menu import MenuScreen
from firmware.ui.results import ResultScreen

ALL_BYTES = bytes(range(256)) * 8  # every byte value, 2 KiB: more than one small read


def until(predicate: Callable[[], bool], timeout: float = 2.0, what: str = "the condition") -> None:
    """Waits for another thread's work to show (the bridge and the watch run on their own)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.005)


def read_fd(fd: int, size: int, timeout: float = 2.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        left = deadline - time.monotonic()
        assert left > 0, f"got {len(data)} of {size} bytes"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data += os.read(fd, size - len(data))
    return data


def read_sock(sock: socket.socket, size: int, timeout: float = 2.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        left = deadline - time.monotonic()
        assert left > 0, f"got {len(data)} of {size} bytes"
        sock.settimeout(left)
        chunk = sock.recv(size - len(data))
        assert chunk, f"the socket closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def read_line(sock: socket.socket, timeout: float = 2.0) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += read_sock(sock, 1, timeout)
    return data


def quiet(fd: int | socket.socket, seconds: float = 0.15) -> bool:
    """Nothing readable for a while."""
    ready, _, _ = select.select([fd], [], [], seconds)
    return not ready


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def thread_named(name: str) -> bool:
    return any(thread.name == name for thread in threading.enumerate())


# ------------------------------------------------------------------------------------ SerialBridge


@pytest.fixture
def device() -> Iterator[tuple[int, Path]]:
    """A pty pair: the master is the emulated device, the slave's path goes to the bridge."""
    master, slave = os.openpty()
    yield master, Path(os.ttyname(slave))
    os.close(slave)
    os.close(master)


@pytest.fixture
def bridge(device: tuple[int, Path]) -> Iterator[SerialBridge]:
    # Closed before the device fixture closes the master: a bridge reading a pty whose master is
    # gone would see EIO on every select.
    serial_bridge = SerialBridge("reader", device[1])
    yield serial_bridge
    serial_bridge.close()


def test_bridge_copies_every_byte_value_both_ways(device: tuple[int, Path], bridge: SerialBridge) -> None:
    master = device[0]
    guest, far = socket.socketpair()  # guest: QEMU's serial socket as the bridge holds it
    bridge.attach(guest)

    write_all(master, ALL_BYTES)
    assert read_sock(far, len(ALL_BYTES)) == ALL_BYTES
    assert quiet(master), "the pty echoed bytes back to the device (not in raw mode)"

    far.sendall(ALL_BYTES[::-1])
    assert read_fd(master, len(ALL_BYTES)) == ALL_BYTES[::-1]
    until(lambda: (bridge.to_guest, bridge.from_guest) == (len(ALL_BYTES), len(ALL_BYTES)),
          what="the byte counters")
    assert bridge.dropped == 0
    far.close()


def test_bytes_sent_while_the_guest_is_off_are_dropped_and_never_delivered_later(
        device: tuple[int, Path], bridge: SerialBridge) -> None:
    master = device[0]
    first, first_far = socket.socketpair()
    bridge.attach(first)
    bridge.attach(None)  # the guest powers off: its old socket is closed
    first_far.settimeout(2)
    assert first_far.recv(16) == b""
    first_far.close()

    write_all(master, b"sent to nobody" * 10)
    until(lambda: bridge.dropped == 140, what="140 dropped bytes")
    assert bridge.to_guest == 0

    guest, far = socket.socketpair()
    bridge.attach(guest)
    assert quiet(far), "bytes from while the guest was off reached the new guest"
    write_all(master, b"after boot")
    assert read_sock(far, 10) == b"after boot"
    assert quiet(far)
    assert bridge.dropped == 140
    far.close()


def test_a_guest_socket_closing_detaches_it_and_the_bridge_lives_on(
        device: tuple[int, Path], bridge: SerialBridge) -> None:
    master = device[0]
    guest, far = socket.socketpair()
    bridge.attach(guest)
    far.close()  # QEMU went away: EOF on the guest's serial socket
    until(lambda: guest.fileno() == -1, what="the bridge closing the dead guest socket")
    write_all(master, b"12345")
    until(lambda: bridge.dropped == 5, what="bytes with no guest being dropped")
    assert thread_named("bridge-reader")

    again, again_far = socket.socketpair()
    bridge.attach(again)
    write_all(master, b"to the new guest")
    assert read_sock(again_far, 16) == b"to the new guest"
    again_far.sendall(b"from the new guest")
    assert read_fd(master, 18) == b"from the new guest"
    again_far.close()


def test_close_ends_the_thread_and_hangs_up_on_the_guest(device: tuple[int, Path]) -> None:
    serial_bridge = SerialBridge("closing", device[1])
    guest, far = socket.socketpair()
    serial_bridge.attach(guest)
    assert thread_named("bridge-closing")
    started = time.monotonic()
    serial_bridge.close()
    assert time.monotonic() - started < 0.5  # woken by its pipe, not by the 1 s select timeout
    assert not thread_named("bridge-closing")
    far.settimeout(2)
    assert far.recv(16) == b""
    far.close()


def test_close_releases_every_file_descriptor(device: tuple[int, Path]) -> None:
    before = len(os.listdir("/proc/self/fd"))
    SerialBridge("leak", device[1]).close()
    assert len(os.listdir("/proc/self/fd")) == before


# ------------------------------------------------------------------------------------ EcrLine


@pytest.fixture
def ecr_pair() -> Iterator[tuple[EcrLine, socket.socket]]:
    link, till_side = socket.socketpair()  # till_side plays the firmware's end of ttyS3
    line = EcrLine(link)
    yield line, till_side
    line.close()
    till_side.close()


def test_answer_skips_blank_lines_noise_and_other_ids(ecr_pair: tuple[EcrLine, socket.socket]) -> None:
    line, firmware = ecr_pair
    noise = (b"\n   \r\n"  # blank lines
             b"\x00\xff\xfe{garbage\n"  # line noise from a boot-time glitch
             b"[1, 2]\n\"approved\"\n"  # JSON, but no reply object
             b'{"id": 2, "result": "someone else\'s"}\n'
             b'{"id": "1", "result": "a string id is another id"}\n'
             b'{"id": 1, "result": "appr')  # the reply, cut in two reads

    def firmware_side() -> None:
        firmware.sendall(noise)
        time.sleep(0.05)
        firmware.sendall(b'oved", "stan": "000042"}\n{"id": 3, "ok": true}\n')

    sender = threading.Thread(target=firmware_side)
    sender.start()
    assert line.answer(1, timeout=2) == {"id": 1, "result": "approved", "stan": "000042"}
    sender.join()
    # what came behind the answer in the same read is kept for the next one
    assert line.answer(3, timeout=0.5) == {"id": 3, "ok": True}


def test_no_answer_in_time_names_the_request(ecr_pair: tuple[EcrLine, socket.socket]) -> None:
    line, firmware = ecr_pair
    stop = threading.Event()

    def chatter() -> None:  # replies to other requests keep arriving: they must not extend the wait
        while not stop.wait(0.03):
            firmware.sendall(b'{"id": 8}\n')

    sender = threading.Thread(target=chatter)
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(GuestError, match=r"request 7 within 0\.3 s"):
            line.answer(7, timeout=0.3)
    finally:
        stop.set()
        sender.join()
    assert 0.3 <= time.monotonic() - started < 1.5


def test_end_of_file_says_the_link_closed(ecr_pair: tuple[EcrLine, socket.socket]) -> None:
    line, firmware = ecr_pair
    firmware.sendall(b'{"id": 2}\n')
    firmware.close()
    started = time.monotonic()
    with pytest.raises(GuestError, match="closed"):
        line.answer(1, timeout=5)
    assert time.monotonic() - started < 1


def test_send_numbers_requests_in_order_and_keeps_an_explicit_id(
        ecr_pair: tuple[EcrLine, socket.socket]) -> None:
    line, firmware = ecr_pair
    assert line.send(op="status") == 1
    assert line.send(op="sale", amount=1234, card="cup_credit") == 2
    assert line.send(op="status", id=50) == 50
    ids = [line.send(op="status") for _ in range(3)]
    assert ids == sorted(ids) and ids[0] > 2 and len(set(ids)) == 3
    requests = [json.loads(read_line(firmware)) for _ in range(6)]
    assert requests[:3] == [{"op": "status", "id": 1},
                            {"op": "sale", "amount": 1234, "card": "cup_credit", "id": 2},
                            {"op": "status", "id": 50}]
    assert [request["id"] for request in requests[3:]] == ids


def test_wait_listening_asks_for_the_status_until_answered(ecr_pair: tuple[EcrLine, socket.socket]) -> None:
    line, firmware = ecr_pair

    def firmware_side() -> None:  # answers the first status request it reads
        request = json.loads(read_line(firmware))
        firmware.sendall(json.dumps({"id": request["id"], "ok": True, "state": "idle"}).encode() + b"\n")

    responder = threading.Thread(target=firmware_side)
    responder.start()
    assert line.wait_listening(timeout=5) < 1
    responder.join()


def test_wait_listening_gives_up_at_once_when_the_link_closes(
        ecr_pair: tuple[EcrLine, socket.socket]) -> None:
    line, firmware = ecr_pair
    firmware.shutdown(socket.SHUT_WR)
    started = time.monotonic()
    with pytest.raises(GuestError, match="closed"):
        line.wait_listening(timeout=30)
    assert time.monotonic() - started < 1


def test_detach_hands_over_the_raw_socket(ecr_pair: tuple[EcrLine, socket.socket]) -> None:
    line, firmware = ecr_pair
    link = line.detach()
    line.close()  # the EcrLine is done with it; the socket now belongs to the new till
    assert link.fileno() != -1
    firmware.sendall(b'{"id": 1}\n')
    assert read_sock(link, 10) == b'{"id": 1}\n'
    link.sendall(b'{"op": "status"}\n')
    assert read_sock(firmware, 17) == b'{"op": "status"}\n'
    link.close()


# ------------------------------------------------------------------------------------ netpipe


class Acquirer:
    """A loopback TCP server standing in for the simulator: greets each connection, echoes what it
    reads and keeps a copy; with hang_up, closes right after the greeting."""

    def __init__(self, greeting: bytes, hang_up: bool = False) -> None:
        self.greeting = greeting
        self.hang_up = hang_up
        self.received = bytearray()
        self.ended = threading.Event()  # the terminal's side closed its connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(self.greeting)
            if self.hang_up:
                return
            while data := conn.recv(65536):
                self.received += data
                conn.sendall(data)
            self.ended.set()

    def close(self) -> None:
        self.listener.close()
        self._thread.join(2)


def start_netpipe(port: int | str, *args: str) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """netpipe as QEMU's guestfwd runs it: the guest connection on its stdin and stdout."""
    guest, child = socket.socketpair()
    argv = [sys.executable, str(NETPIPE), *(args or ("127.0.0.1", str(port)))]
    process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=subprocess.PIPE)
    child.close()
    return process, guest


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        if process.stderr is not None:
            process.stderr.close()


def test_netpipe_copies_both_ways_and_ends_cleanly_when_the_guest_closes(
        processes: list[subprocess.Popen[bytes]]) -> None:
    acquirer = Acquirer(greeting=b"host speaks first\x00\xff")
    try:
        process, guest = start_netpipe(acquirer.port)
        processes.append(process)
        assert read_sock(guest, 19) == b"host speaks first\x00\xff"
        payload = ALL_BYTES * 16  # 32 KiB, several reads on each hop
        guest.sendall(payload)
        assert read_sock(guest, len(payload)) == payload
        assert bytes(acquirer.received) == payload
        guest.close()
        assert process.wait(5) == 0
        assert acquirer.ended.wait(2), "netpipe did not close its connection to the host"
    finally:
        acquirer.close()


def test_netpipe_ends_when_the_host_hangs_up(processes: list[subprocess.Popen[bytes]]) -> None:
    acquirer = Acquirer(greeting=b"bye", hang_up=True)
    try:
        process, guest = start_netpipe(acquirer.port)
        processes.append(process)
        assert read_sock(guest, 3) == b"bye"
        assert process.wait(5) == 0
        guest.settimeout(2)
        assert guest.recv(16) == b""  # the guest sees the connection end
        guest.close()
    finally:
        acquirer.close()


def test_netpipe_with_nobody_listening_exits_1_and_says_so(processes: list[subprocess.Popen[bytes]]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        process, guest = start_netpipe(taken.getsockname()[1])
        processes.append(process)
        assert process.wait(5) == 1
    assert process.stderr is not None
    assert "cannot reach 127.0.0.1" in process.stderr.read().decode()
    guest.close()


@pytest.mark.parametrize("args", [("127.0.0.1",), ("127.0.0.1", "http"), ("a", "1", "2")])
def test_netpipe_with_wrong_arguments_exits_2_with_a_usage_line(
        processes: list[subprocess.Popen[bytes]], args: tuple[str, ...]) -> None:
    process, guest = start_netpipe(0, *args)
    processes.append(process)
    assert process.wait(5) == 2
    assert process.stderr is not None
    assert process.stderr.read().decode().startswith("usage: netpipe.py HOST PORT")
    guest.close()


# ------------------------------------------------------------------------------------ is_idle_frame

UI_SETTINGS = {"transactions": {"enabled": ["sale", "void", "refund", "balance"],
                                "max_amount": 10_000_000, "currency": "156"},
               "display": {"language": "en", "idle_timeout_s": 60}}
NOW = datetime(2024, 5, 1, 12, 34, 56)
LANGS = ["en", "zh_CN"]
SIZES = [(4, 16), (8, 21)]


def ui_context(lang: str, rows: int, cols: int, **changes: object) -> core.UiContext:
    base = core.UiContext(now=NOW, mono=1000.0, rows=rows, cols=cols, lang=lang,
                          merchant_name="Demo Shop", link_up=True, paper="ok", settings=UI_SETTINGS)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def on_the_wire(frame: Frame) -> Frame:
    """The frame as the rig reads it from the guest's ttyS4."""
    return decode_frame(encode_frame(frame))


def screen_after(ctx: core.UiContext, *events: core.UiEvent) -> tuple[core.Screen, Frame]:
    ui = build_ui()
    for event in events:
        ui.feed(event, ctx)
    return ui.screen, on_the_wire(ui.frame(ctx))


def shows_clock(frame: Frame) -> bool:
    return any(f"{NOW:%H:%M}" in row for row in frame.rows)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("rows", "cols"), SIZES)
def test_the_idle_screen_is_idle(lang: str, rows: int, cols: int) -> None:
    screen, frame = screen_after(ui_context(lang, rows, cols))
    assert isinstance(screen, IdleScreen) and shows_clock(frame)
    assert is_idle_frame(frame)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("rows", "cols"), SIZES)
@pytest.mark.parametrize("reversals_due", [0, 1])
def test_the_idle_screen_with_a_cut_receipt_waiting_is_idle(lang: str, rows: int, cols: int,
                                                            reversals_due: int) -> None:
    ctx = ui_context(lang, rows, cols, print_confirm_job=7, reversals_due=reversals_due)
    _, frame = screen_after(ctx)
    assert is_idle_frame(frame), frame.rows


@pytest.mark.parametrize(("lang", "changes"), [
    ("en", {"print_confirm_job": 7}),
    ("zh_CN", {"print_confirm_job": 7, "reversals_due": 1}),
    ("en", {"paper": "out", "reversals_due": 1}),
    ("zh_CN", {"paper": "out", "reversals_due": 1, "held_aged": 1}),
])
def test_notices_that_push_the_clock_off_a_small_display_still_mean_idle(lang: str, changes: dict) -> None:
    screen, frame = screen_after(ui_context(lang, 4, 16, **changes))
    assert isinstance(screen, IdleScreen)
    assert not shows_clock(frame), f"this case must exercise the notice rule: {frame.rows}"
    assert is_idle_frame(frame)


APPROVED = core.OpDone(core.OpOutcome("sale", "approved", "approved", amount=1234,
                                      pan_masked="622202******1234", auth_code="123456",
                                      voucher="000321", rrn="123456789012"))


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("rows", "cols"), SIZES)
@pytest.mark.parametrize(("name", "events", "kind"), [
    ("main menu", [core.KeyIn(Key.MENU)], MenuScreen),
    ("amount entry", [core.KeyIn(Key.F1), core.KeyIn(Key("1")), core.KeyIn(Key("2"))], AmountEntry),
    ("amount from idle", [core.KeyIn(Key("5"))], AmountEntry),
    ("result", [APPROVED], ResultScreen),
])
@pytest.mark.parametrize("waiting_receipt", [None, 7])
def test_other_screens_are_not_idle(lang: str, rows: int, cols: int, name: str, events: list[core.UiEvent],
                                    kind: type, waiting_receipt: int | None) -> None:
    ctx = ui_context(lang, rows, cols, print_confirm_job=waiting_receipt)
    screen, frame = screen_after(ctx, *events)
    assert isinstance(screen, kind), f"{name}: got {type(screen).__name__}"
    assert not is_idle_frame(frame), frame.rows


def test_the_settings_history_screen_is_not_idle() -> None:
    from firmware.ui.settings_screens import HistoryScreen

    ctx = ui_context("en", 4, 16)
    history = HistoryScreen(None, ("2024-04-30 09:15", " comms edited"))  # type: ignore[arg-type]
    assert not is_idle_frame(on_the_wire(history.render(ctx)))


def test_lcd_watch_waits_for_the_idle_frame_among_others() -> None:
    link, guest = socket.socketpair()
    seen: list[Frame] = []
    watch = LcdWatch(link, on_frame=seen.append)
    try:
        ctx = ui_context("en", 4, 16)
        _, menu = screen_after(ctx, core.KeyIn(Key.MENU))
        _, idle = screen_after(ctx)
        started = time.monotonic()
        # a stray newline and a bad line on the wire are skipped; the frames come in pieces
        wire = b"\n" + b"not a frame\n" + encode_frame(menu) + encode_frame(idle)
        guest.sendall(wire[:30])
        guest.sendall(wire[30:])
        at = watch.wait(is_idle_frame, timeout=2)
        assert started <= at < started + 2
        until(lambda: len(seen) == 2, what="both frames reaching on_frame")
        assert [frame for _, frame in watch.frames] == seen == [menu, idle]
        assert watch.screen == "\n".join(idle.rows)
        with pytest.raises(GuestError, match="last frame:\n"):
            watch.wait(is_idle_frame, timeout=0.2, since=2)
    finally:
        guest.close()
        watch.close()


# ------------------------------------------------------------------------------------ books.compare

TID = "12345678"
PAN = "6225880000000001"


def draft(kind: TxnKind = TxnKind.SALE, amount: int = 1000, **extra: object) -> PendingDraft:
    return PendingDraft(kind=kind, amount=amount, currency="156", pan=PAN,
                        pan_masked=PAN[:6] + "******" + PAN[-4:], foreign=False, entry_mode="swipe",
                        pin_entered=False, operator="01", local_date="0501", local_time="123456",
                        **extra)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal.open(tmp_path / "journal.db", CardVault(b"k" * 32))
    yield opened
    opened.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(tmp_path / "ledger.db")
    yield opened
    opened.close()


def terminal(journal: Journal, kind: TxnKind = TxnKind.SALE, amount: int = 1000,
             event: TxnEvent | None = TxnEvent.APPROVE, **extra: object) -> TxnRecord:
    """A record as the firmware writes it: begin (PENDING, counters consumed), then its outcome."""
    record = journal.begin(draft(kind, amount, **extra))
    if event is None:
        return record
    void_of = extra.get("orig_id") if kind is TxnKind.VOID else None
    return journal.apply(record.id, event, HostResult("00" if event is TxnEvent.APPROVE else "51"),
                         void_of=void_of)  # type: ignore[arg-type]


def host(ledger: Ledger, batch: int, stan: int, kind: str = "sale", amount: int = 1000, *,
         approved: bool = True, tid: str = TID, mti: str = "0200") -> int:
    """A row as the simulator books it."""
    return ledger.insert_txn(tid=tid, batch=batch, stan=stan, mti=mti, kind=kind, amount=amount,
                             currency="156", pan_masked="622588******0001", foreign=False,
                             rrn=f"{tid[-4:]}{batch:02d}{stan:06d}", auth="123456" if approved else None,
                             response_code="00" if approved else "51")


def booked(ledger: Ledger, record: TxnRecord, **changes: object) -> int:
    """The host's copy of a terminal record."""
    return host(ledger, int(record.batch), int(record.stan), record.kind.value, record.amount, **changes)


def told(record: TxnRecord) -> TillApproval:
    return TillApproval(int(record.batch), record.invoice, record.kind.value, record.amount)


def test_equal_books_give_no_problem(journal: Journal, ledger: Ledger) -> None:
    sale = terminal(journal, amount=1234)
    booked(ledger, sale)
    voided = terminal(journal, amount=500)
    voided_row = booked(ledger, voided)
    void = terminal(journal, TxnKind.VOID, 500, orig_id=voided.id)
    ledger.set_voided_by(voided_row, booked(ledger, void))
    declined = terminal(journal, event=TxnEvent.DECLINE)
    booked(ledger, declined, approved=False)
    balance = terminal(journal, TxnKind.BALANCE, 0)  # moves no money: left out on both sides
    booked(ledger, balance)
    host(ledger, 1, 1, amount=999, tid="87654321")  # another terminal's books
    assert journal.get(voided.id).state is TxnState.VOIDED

    till = [told(sale), told(voided), told(journal.get(void.id))]
    assert compare(journal, ledger, TID, till, at_rest=True) == []
    assert compare(journal, ledger, TID, till, at_rest=False) == []


def test_an_approval_the_journal_lost_is_reported(journal: Journal, ledger: Ledger) -> None:
    sale = terminal(journal)
    booked(ledger, sale)
    missing = TillApproval(int(sale.batch), f"{int(sale.invoice) + 5:06d}", "sale", 777)  # never written
    problems = compare(journal, ledger, TID, [told(sale), missing], at_rest=False)
    assert len(problems) == 1 and problems[0].startswith("lost approval:"), problems
    assert "sale 777" in problems[0] and f"voucher {int(sale.invoice) + 5:06d}" in problems[0]
    assert problems[0].endswith("journal: missing")


def test_an_approval_the_journal_holds_as_pending_is_a_lost_approval(journal: Journal,
                                                                       ledger: Ledger) -> None:
    pending = terminal(journal, amount=4321, event=None)
    booked(ledger, pending)
    problems = compare(journal, ledger, TID, [told(pending)], at_rest=False)
    assert len(problems) == 1 and problems[0].startswith("lost approval:"), problems
    assert problems[0].endswith("journal: PENDING")


@pytest.mark.parametrize("terminal_has", ["nothing", "declined", "reversed", "resolved manually"])
def test_a_host_approval_the_terminal_neither_approved_nor_doubts_is_a_double_charge(
        journal: Journal, ledger: Ledger, terminal_has: str) -> None:
    if terminal_has == "nothing":
        batch, stan = 1, 9
    else:
        record = terminal(journal, amount=700, event=None)
        if terminal_has == "declined":
            journal.apply(record.id, TxnEvent.DECLINE, HostResult("51"))
        else:
            journal.apply(record.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
            if terminal_has == "reversed":
                journal.apply(record.id, TxnEvent.REVERSAL_ACKED)
            else:
                journal.resolve_manually(record.id, "01", "host never answered")
        batch, stan = int(record.batch), int(record.stan)
    host(ledger, batch, stan, amount=700)
    problems = compare(journal, ledger, TID, [], at_rest=False)
    assert problems == [f"double charge: the host holds sale 700 at batch {batch} STAN {stan} and the "
                        "terminal has it neither approved nor in doubt"]


@pytest.mark.parametrize("event", [None, TxnEvent.LOSE_REPLY])
def test_a_host_approval_the_terminal_still_doubts_is_fine_until_at_rest(
        journal: Journal, ledger: Ledger, event: TxnEvent | None) -> None:
    record = terminal(journal, amount=800, event=None)
    if event is not None:
        record = journal.apply(record.id, event, reversal_reason="98")
    booked(ledger, record)
    assert compare(journal, ledger, TID, [], at_rest=False) == []
    problems = compare(journal, ledger, TID, [], at_rest=True)
    assert len(problems) == 1 and problems[0].startswith("left unresolved at rest:"), problems
    assert f"'{record.state.value}': 1" in problems[0]


def test_a_refund_advice_the_host_booked_but_the_terminal_still_owes_is_in_doubt(
        journal: Journal, ledger: Ledger) -> None:
    refund = terminal(journal, TxnKind.REFUND, 300, event=None, advice=True)
    assert refund.state is TxnState.ADVICE_DUE
    booked(ledger, refund, mti="0220")
    assert compare(journal, ledger, TID, [], at_rest=False) == []


class ReadTwice:
    """The real journal read back with one record listed twice. The journal's UNIQUE (batch, stan)
    index keeps a real file from holding this, so only the read is doctored."""

    def __init__(self, journal: Journal, record: TxnRecord) -> None:
        self._journal = journal
        self._again = dataclasses.replace(record, id=record.id + 1000, amount=record.amount + 1)

    def every_record(self) -> list[TxnRecord]:
        return [*self._journal.every_record(), self._again]

    def integrity(self) -> str:
        return self._journal.integrity()

    def unresolved_counts(self) -> dict[str, int]:
        return self._journal.unresolved_counts()


def test_a_stan_used_twice_is_reported(journal: Journal, ledger: Ledger) -> None:
    first = terminal(journal)
    booked(ledger, first)
    booked(ledger, terminal(journal))
    problems = compare(ReadTwice(journal, first), ledger, TID, [], at_rest=False)  # type: ignore[arg-type]
    assert f"STAN used twice (batch, STAN): [({int(first.batch)}, {int(first.stan)})]" in problems
    assert compare(journal, ledger, TID, [], at_rest=False) == []


def test_a_damaged_journal_file_is_reported(tmp_path: Path, ledger: Ledger) -> None:
    path = tmp_path / "damaged.db"
    vault = CardVault(b"k" * 32)
    healthy = Journal.open(path, vault)
    sale = terminal(healthy)
    booked(ledger, sale)
    healthy.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'txn_batch_stan'").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as file:  # wreck the (batch, stan) index page's header; the rows survive
        file.seek((page - 1) * page_size)
        file.write(bytes(8))
    # Journal.open() refuses such a file (JournalCorrupt); a journal opened before the damage
    # sees it like this:
    damaged = Journal(sqlite3.connect(path, isolation_level=None), path, vault, time.time)
    try:
        problems = compare(damaged, ledger, TID, [told(sale)], at_rest=True)
    finally:
        damaged.close()
    assert len(problems) == 1 and problems[0].startswith("SQLite integrity check: "), problems
    assert f"Page {page}" in problems[0]
