"""Network info for the diagnostics screen: interfaces and their IPv4 addresses, the default
gateway, DNS servers, the configured host and a timed TCP connect to it (PASS/FAIL).
Reads the kernel's view (ioctl, /proc/net/route, /etc/resolv.conf); never changes anything.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from firmware.ui.core import Catalog, DiagResult, say

log = logging.getLogger(__name__)

NAME = "network"
SIOCGIFADDR = 0x8915  # linux/sockios.h: get an interface's IPv4 address
RTF_GATEWAY = 0x2

CATALOG: Catalog = {
    "connect_ok": ("Host reached in {ms} ms", "主机连接成功 {ms} 毫秒"),
    "connect_failed": ("Cannot reach the host: {why}", "无法连接主机: {why}"),
    "nothing_to_do": ("Nothing to do", "无需操作"),
    "next": ("Check the network cable / host address in Settings > Comms",
             "请检查网线 / 设置 > 通讯中的主机地址"),
    "bad_address": ("Host address not valid: {host}:{port}", "主机地址无效: {host}:{port}"),
    "bad_address_next": ("Correct the host address in Settings > Comms", "请在设置 > 通讯中改正主机地址"),
    "why_refused": ("refused (nothing listens there)", "被拒绝 (端口未监听)"),
    "why_timeout": ("no answer in {s} s", "{s}秒内无应答"),
    "why_no_route": ("no route to the host", "没有到主机的路由"),
    "why_no_name": ("host name not found", "主机名无法解析"),
    "why_other": ("connection failed ({code})", "连接失败 ({code})"),
    "line_interface": ("{name}: {address}", "{name}: {address}"),
    "line_no_address": ("{name}: no IPv4 address", "{name}: 无IPv4地址"),
    "line_no_interfaces": ("No network interfaces", "无网络接口"),
    "line_gateway": ("Gateway {gateway} ({name})", "网关 {gateway} ({name})"),
    "line_no_gateway": ("No default gateway", "无默认网关"),
    "line_dns": ("DNS {server}", "DNS {server}"),
    "line_no_dns": ("No DNS server", "无DNS服务器"),
    "line_host": ("Host {host}:{port}", "主机 {host}:{port}"),
    "line_connect_ok": ("Connect: {ms} ms", "连接: {ms} 毫秒"),
    "line_connect_failed": ("Connect: failed", "连接: 失败"),
}


def interface_addresses() -> list[tuple[str, str | None]]:
    """(interface name, its IPv4 address or None) for every interface the kernel lists."""
    found: list[tuple[str, str | None]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:  # EADDRNOTAVAIL: the interface has no IPv4 address
                found.append((name, None))
                continue
            found.append((name, socket.inet_ntoa(reply[20:24])))
    return found


def default_gateway(route_path: Path) -> tuple[str, str] | None:
    """(gateway address, interface) of the default route in /proc/net/route, or None."""
    try:
        lines = route_path.read_text(errors="replace").splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        name, destination, gateway, flags = fields[:4]
        try:
            if int(destination, 16) == 0 and int(flags, 16) & RTF_GATEWAY:
                return socket.inet_ntoa(struct.pack("<L", int(gateway, 16))), name
        except (ValueError, struct.error):
            continue  # a line we cannot read is skipped, not guessed at
    return None


def dns_servers(resolv_path: Path) -> list[str]:
    try:
        lines = resolv_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [fields[1] for fields in (line.split() for line in lines)
            if len(fields) >= 2 and fields[0] == "nameserver"]


def _why(exc: OSError, connect_timeout: float, lang: str) -> str:
    if isinstance(exc, socket.gaierror):
        return say(CATALOG, "why_no_name", lang)
    if isinstance(exc, TimeoutError):
        return say(CATALOG, "why_timeout", lang, s=f"{connect_timeout:g}")
    if isinstance(exc, ConnectionRefusedError):
        return say(CATALOG, "why_refused", lang)
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return say(CATALOG, "why_no_route", lang)
    # The operating system's sentence is English: the log keeps it, the screen shows its code.
    log.warning("network check: %s", exc)
    code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    return say(CATALOG, "why_other", lang, code=code or type(exc).__name__)


def network_info(host: str, port: int, lang: str, connect_timeout: float = 2.0, *,
                 route_path: Path = Path("/proc/net/route"),
                 resolv_path: Path = Path("/etc/resolv.conf"),
                 clock: Callable[[], float] = time.monotonic) -> DiagResult:
    """The network as the terminal sees it, and whether the configured host accepts a connection."""
    lines: list[str] = []
    try:
        interfaces = interface_addresses()
    except OSError:
        interfaces = []
    for name, address in interfaces:
        if address is None:
            lines.append(say(CATALOG, "line_no_address", lang, name=name))
        else:
            lines.append(say(CATALOG, "line_interface", lang, name=name, address=address))
    if not interfaces:
        lines.append(say(CATALOG, "line_no_interfaces", lang))
    gateway = default_gateway(route_path)
    if gateway is None:
        lines.append(say(CATALOG, "line_no_gateway", lang))
    else:
        lines.append(say(CATALOG, "line_gateway", lang, gateway=gateway[0], name=gateway[1]))
    servers = dns_servers(resolv_path)
    lines += [say(CATALOG, "line_dns", lang, server=s) for s in servers]
    if not servers:
        lines.append(say(CATALOG, "line_no_dns", lang))
    lines.append(say(CATALOG, "line_host", lang, host=host, port=port))

    if not host or not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return DiagResult(NAME, False, say(CATALOG, "bad_address", lang, host=host, port=port),
                          say(CATALOG, "bad_address_next", lang), tuple(lines))
    started = clock()
    try:
        with socket.create_connection((host, port), timeout=connect_timeout):
            pass
    except (OSError, UnicodeError) as exc:
        lines.append(say(CATALOG, "line_connect_failed", lang))
        why = _why(exc, connect_timeout, lang) if isinstance(exc, OSError) else say(
            CATALOG, "why_no_name", lang)
        return DiagResult(NAME, False, say(CATALOG, "connect_failed", lang, why=why),
                          say(CATALOG, "next", lang), tuple(lines))
    ms = max(0, round((clock() - started) * 1000))
    lines.append(say(CATALOG, "line_connect_ok", lang, ms=ms))
    return DiagResult(NAME, True, say(CATALOG, "connect_ok", lang, ms=ms),
                      say(CATALOG, "nothing_to_do", lang), tuple(lines))
