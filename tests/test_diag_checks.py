"""The diagnostics checks against real parts: echo history, printer and reader verdicts,
network info with a real listening socket, the log tail of a real file holding card data,
and the build info of the real C extension (and of a missing one)."""

from __future__ import annotations

import errno
import socket
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from drivers.reader.serial_link import LinkStats
from firmware.diag import netinfo
from firmware.diag.buildinfo import version_info
from firmware.diag.checks import EchoHistory, echo_result, printer_result, reader_result
from firmware.diag.logview import log_tail
from firmware.diag.netinfo import default_gateway, dns_servers, network_info
from firmware.printing.queue import PrintState

PAN = "6225880000000001"
TRACK2 = f"{PAN}=27121011234567890"
REPO = Path(__file__).resolve().parent.parent


class WallClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 14, 9, 0, 0)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=30)
        return self.now


# ---------------------------------------------------------------------------- echo


def test_echo_keeps_the_last_ten_results_newest_first():
    history = EchoHistory(clock=WallClock())
    for i in range(11):
        echo_result(True, 0.010 + i / 1000, "", history, "en", "10.0.0.1", 5000)
    result = echo_result(False, None, "no reply in 5 s", history, "en", "10.0.0.1", 5000)
    assert len(history) == 10
    assert not result.passed
    assert result.reason == "No answer from the host: no reply in 5 s"
    assert result.next_step == "Check the network cable / host address in Settings > Comms"
    assert result.lines[:2] == ("Host 10.0.0.1:5000", "Last 10 results, newest first:")
    assert result.lines[2] == "09:06:00 FAIL no reply in 5 s"
    assert result.lines[3] == "09:05:30 OK 20ms"
    assert result.lines[-1] == "09:01:30 OK 12ms"  # the oldest two fell out
    assert len(result.lines) == 12


def test_echo_pass_and_chinese():
    history = EchoHistory(clock=WallClock())
    result = echo_result(True, 0.0354, "", history, "zh_CN", "10.0.0.1", 5000)
    assert result.passed and result.name == "echo"
    assert result.reason == "主机应答 35 毫秒"
    assert result.lines[-1] == "09:00:30 成功 35毫秒"


# ---------------------------------------------------------------------------- printer


def test_printer_done_passes():
    result = printer_result(PrintState.DONE, None, "en")
    assert result.passed and result.reason == "Test slip printed - check it is readable"
    assert "density" in result.next_step


@pytest.mark.parametrize("state, problem, reason, next_step", [
    (PrintState.PAUSED, "printer_paper_out", "Paper out - load paper and press ENTER",
     "Load paper, then run the test again"),
    (PrintState.PAUSED, "printer_cover_open", "Printer cover open - close it",
     "Close the printer cover, then test again"),
    (PrintState.FAILED, "printer_unavailable", "Printer not answering - check cable",
     "Check the printer cable, then test again"),
    (PrintState.FAILED, "printer_offline", "Printer offline - check power and cable",
     "Check the printer's power and cable, then test again"),
    (PrintState.FAILED, None, "The test slip did not finish",
     "Check the printer; if it repeats, call support"),
    (PrintState.FAILED, "printer_on_fire", "The test slip did not finish",
     "Check the printer; if it repeats, call support"),
    (PrintState.CANCELLED, None, "The test slip was cancelled", "Run the printer test again"),
])
def test_printer_stopped_fails_with_the_problem_and_what_to_do(state, problem, reason, next_step):
    result = printer_result(state, problem, "en")
    assert (result.passed, result.reason, result.next_step) == (False, reason, next_step)
    assert result.lines[0] == f"Test slip: {state.value.lower()}"
    # in Chinese the job's state is in words too (it read "测试任务: DONE")
    assert printer_result(state, problem, "zh_CN").lines[0] == \
        {"FAILED": "测试页: 打印失败", "CANCELLED": "测试页: 已取消", "PAUSED": "测试页: 已暂停"}[state.value]


def test_printer_unknown_problem_key_is_shown_not_guessed():
    result = printer_result(PrintState.FAILED, "printer_on_fire", "en")
    assert "Printer reports: printer_on_fire" in result.lines
    assert "Transaction failed" not in " ".join(result.lines)


def test_printer_paper_out_in_chinese():
    result = printer_result(PrintState.PAUSED, "printer_paper_out", "zh_CN")
    assert result.reason == "打印机缺纸 - 请装纸后按确认" and result.next_step == "请装纸后重新测试"


# ---------------------------------------------------------------------------- card reader


def test_reader_that_answers_passes_with_its_counters():
    result = reader_result("posreader-sim 1.0", False, LinkStats().as_dict(), "en")
    assert result.passed and result.reason == "Card reader answers: posreader-sim 1.0"
    assert result.lines[:3] == ("Version: posreader-sim 1.0", "Chip slot: empty", "Link counters:")
    assert "Bad checksum: 0" in result.lines and "Reconnects: 0" in result.lines
    assert len(result.lines) == 3 + len(LinkStats().as_dict())


def test_reader_with_damaged_frames_passes_but_points_at_the_cable():
    stats = LinkStats(bad_checksum=3, truncated=1, retries=2).as_dict()
    result = reader_result("posreader-sim 1.0", True, stats, "en")
    assert result.passed and result.reason == "Card reader answers, but the link had 4 bad frames"
    assert result.next_step == "Check the reader cable and its plug"
    assert "Chip slot: card present" in result.lines


def test_silent_reader_fails():
    result = reader_result(None, None, {}, "zh_CN")
    assert not result.passed and result.reason == "读卡器无应答"
    assert result.lines == ("IC卡槽: 未知",)


# ---------------------------------------------------------------------------- network


ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""


@pytest.fixture
def net_files(tmp_path):
    route = tmp_path / "route"
    route.write_text(ROUTE)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# generated\nsearch example\nnameserver 192.168.0.53\nnameserver 8.8.8.8\n")
    return route, resolv


def test_network_info_reaches_a_listening_host(net_files):
    route, resolv = net_files
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = network_info("127.0.0.1", port, "en", route_path=route, resolv_path=resolv)
    assert result.passed and result.name == "network"
    assert result.reason.startswith("Host reached in ") and result.reason.endswith(" ms")
    assert "lo: 127.0.0.1" in result.lines
    assert "Gateway 192.168.0.1 (eth0)" in result.lines
    assert tuple(x for x in result.lines if x.startswith("DNS")) == ("DNS 192.168.0.53", "DNS 8.8.8.8")
    assert f"Host 127.0.0.1:{port}" in result.lines
    assert result.lines[-1].startswith("Connect: ")


def test_network_info_fails_on_a_closed_port(net_files, tmp_path):
    route, resolv = net_files
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]  # closed again before the test connects
    result = network_info("127.0.0.1", port, "en", route_path=route, resolv_path=resolv)
    assert not result.passed
    assert result.reason == "Cannot reach the host: refused (nothing listens there)"
    assert result.next_step == "Check the network cable / host address in Settings > Comms"
    assert result.lines[-1] == "Connect: failed"
    zh = network_info("127.0.0.1", port, "zh_CN", route_path=tmp_path / "none", resolv_path=tmp_path / "none")
    assert zh.reason == "无法连接主机: 被拒绝 (端口未监听)"
    assert "无默认网关" in zh.lines and "无DNS服务器" in zh.lines


@pytest.mark.parametrize("host, port", [("", 5000), ("127.0.0.1", 0), ("127.0.0.1", 70000),
                                        ("127.0.0.1", "5000")])
def test_network_info_refuses_a_bad_address_in_words(host, port, net_files):
    result = network_info(host, port, "en", route_path=net_files[0], resolv_path=net_files[1])
    assert not result.passed and result.reason.startswith("Host address not valid")
    assert result.next_step == "Correct the host address in Settings > Comms"


@pytest.mark.parametrize("lang, words", [("en", "connection failed (ECONNRESET)"),
                                         ("zh_CN", "连接失败 (ECONNRESET)")])
def test_an_unforeseen_network_error_shows_its_code_not_the_system_sentence(lang, words, caplog):
    """Issue 13 A5: the operating system's English sentence goes to the log, never to a Chinese
    screen; the screen names the error by its code."""
    exc = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert netinfo._why(exc, 2.0, lang) == words
    assert "Connection reset by peer" in caplog.text


def test_network_info_unknown_host_name(net_files):
    result = network_info("no-such-host.invalid", 5000, "en", route_path=net_files[0],
                          resolv_path=net_files[1], connect_timeout=1.0)
    assert not result.passed and result.reason == "Cannot reach the host: host name not found"


def test_garbage_route_and_resolv_files_are_skipped(tmp_path):
    route = tmp_path / "route"
    route.write_bytes(b"Iface\tDestination\n\xff\xfe garbage\neth0 00000000 zzzz 0003\nshort\n")
    resolv = tmp_path / "resolv"
    resolv.write_bytes(b"nameserver\n\x00\x01nameserver\n")
    assert default_gateway(route) is None
    assert dns_servers(resolv) == []


# ---------------------------------------------------------------------------- log viewer


def _log_line(hms: str, level: str, name: str, message: str) -> str:
    return f"2025-03-14 {hms},123 {level} {name}: {message}\n"


def test_log_tail_masks_card_data_and_shortens_for_the_lcd(tmp_path):
    log = tmp_path / "terminal.log"
    lines = [_log_line(f"09:{m:02d}:00", "INFO", "posfw.app", f"line {m}") for m in range(50)]
    lines.append(_log_line("09:50:00", "WARNING", "posfw.host", f"bad reply for card {PAN}"))
    lines.append(_log_line("09:51:00", "ERROR", "posfw.reader", f"track {TRACK2} rejected"))
    lines.append("Traceback line with ;" + TRACK2 + "? inside\n")
    log.write_text("".join(lines))
    result = log_tail(log, 5, "en")
    assert result.passed and result.name == "log"
    assert result.reason == "Last 5 log lines, 1 errors"
    text = "\n".join(result.lines)
    assert PAN not in text and TRACK2 not in text and "27121011234567890" not in text
    assert result.lines == (
        "Traceback line with <track2 removed> inside",
        "09:51:00 E track <track2 removed> rejected",
        "09:50:00 W bad reply for card 622588******0001",
        "09:49:00 I line 49",
        "09:48:00 I line 48",
    )


def test_log_tail_reads_only_the_end_of_a_big_file(tmp_path):
    log = tmp_path / "big.log"
    with open(log, "wb") as out:
        out.truncate(1 << 30)  # 1 GiB of sparse nothing: loading it whole would not go unnoticed
        out.seek(1 << 30)
        out.write(b"\n")  # ends the (cut, so never shown) line of zeros
        for i in range(5):
            out.write(_log_line("10:00:00", "DEBUG", "posfw.x", f"filler {i}").encode())
    result = log_tail(log, 3, "en")
    assert result.lines == ("10:00:00 D filler 4", "10:00:00 D filler 3", "10:00:00 D filler 2")
    many = log_tail(log, 50, "en")  # more lines wanted than there are: stops at its byte budget
    assert many.lines[:5] == ("10:00:00 D filler 4", "10:00:00 D filler 3", "10:00:00 D filler 2",
                              "10:00:00 D filler 1", "10:00:00 D filler 0")
    assert len(many.lines) == 5


def test_log_tail_survives_garbage_bytes_and_a_huge_line(tmp_path):
    log = tmp_path / "garbage.log"
    log.write_bytes(b"\x00\xff\xfe\x1b[2Jbinary junk\n" + b"A" * 200_000 + b"\n"
                    + _log_line("11:00:00", "INFO", "posfw", "after").encode())
    result = log_tail(log, 10, "en")
    assert result.passed
    assert result.lines[0] == "11:00:00 I after"
    assert all(len(line) <= 240 for line in result.lines)
    assert all("\x00" not in line and "\x1b" not in line for line in result.lines)


def test_log_tail_missing_empty_and_bad_count(tmp_path):
    missing = log_tail(tmp_path / "nope.log", 20, "en")
    assert not missing.passed and missing.reason == f"No log file at {tmp_path / 'nope.log'}"
    assert "call support" in missing.next_step
    assert log_tail(tmp_path / "nope.log", 20, "zh_CN").reason.startswith("找不到日志文件")
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert log_tail(empty, 20, "en").reason == "The log is empty"
    assert not log_tail(empty, 0, "en").passed
    assert not log_tail(tmp_path, 20, "en").passed  # a directory: unreadable, in words


def test_log_tail_line_without_trailing_newline_and_windows_endings(tmp_path):
    log = tmp_path / "crlf.log"
    log.write_bytes(_log_line("12:00:00", "INFO", "a", "one").replace("\n", "\r\n").encode()
                    + b"2025-03-14 12:00:01,5 CRITICAL a.b: two")
    result = log_tail(log, 5, "en")
    assert result.lines == ("12:00:01 C two", "12:00:00 I one")
    assert result.reason == "Last 2 log lines, 1 errors"


# ---------------------------------------------------------------------------- version


def test_version_info_reports_the_real_build():
    import firmware
    from c_ext import posio

    result = version_info("devboard", "en")
    assert result.passed and result.name == "version"
    assert "Board devboard" in result.lines
    assert "_posio implementation: c" in result.lines
    assert f"_posio compiler: {posio.BUILD_INFO['compiler']}" in result.lines
    assert f"Python {sys.version.split()[0]}" in result.lines
    assert any(line.startswith("SQLite 3.") for line in result.lines)
    assert any(line.startswith("cffi ") for line in result.lines)
    assert any(line.startswith("pyiso8583 ") for line in result.lines)
    firmware_line = result.lines[0]
    assert firmware_line.startswith("Firmware ") and firmware_line != "Firmware unknown"
    assert result.reason == f"{firmware_line}, C extension built"
    assert firmware.__version__ in " ".join(result.lines)


def test_version_info_without_pyproject_or_git_uses_build_info(tmp_path):
    import firmware

    (tmp_path / "BUILD_INFO").write_text("built=2025-03-14\ncommit=0123456789abcdef0123\n")
    result = version_info("qemu", "zh_CN", repo_root=tmp_path)
    assert result.lines[:3] == (f"固件 {firmware.__version__}", "提交 0123456789ab", "主板 qemu")
    (tmp_path / "BUILD_INFO").unlink()
    assert version_info("qemu", "en", repo_root=tmp_path).lines[1] == "Commit unknown"


def test_version_info_fails_in_words_without_the_c_extension(monkeypatch):
    monkeypatch.delitem(sys.modules, "c_ext.posio")
    monkeypatch.setitem(sys.modules, "_posio", None)  # as if the .so were not built
    result = version_info("devboard", "en")
    assert not result.passed
    assert result.reason == "C extension _posio missing - firmware cannot run"
    assert result.next_step == "Reinstall the firmware (make build)"
    assert any("make build" in line for line in result.lines)
