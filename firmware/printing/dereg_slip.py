"""The deregistration report (注销报告): which terminal, when, the verified backup, each step, the
keys destroyed (each key store object, one line each, or why the store could not be reached) and
what was wiped, and the host's verdict, as a device-independent Document in English or Chinese.
Pure: no I/O; the app passes the facts in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from firmware.ports import Align, Cut, Document, Feed, TextLine, text_cells
from firmware.printing.layout import wrap

TEXTS: dict[str, tuple[str, str]] = {
    "title": ("TERMINAL DEREGISTERED", "终端已注销"),
    "terminal": ("Terminal", "终端号"),
    "merchant": ("Merchant", "商户号"),
    "at": ("Deregistered", "注销时间"),
    "backup": ("Backup", "备份"),
    "backup_txns": ("Transactions saved", "已备份交易"),
    "steps": ("STEPS", "步骤"),
    "wiped": ("WIPED", "已清除"),
    "keys_destroyed": ("KEYS DESTROYED", "已销毁密钥"),
    "no_keys": ("none found", "未发现密钥"),
    "card_key": ("Keys", "密钥"),
    "keys": ("Other key files", "其他密钥文件"),
    "card_data": ("Card numbers", "卡号"),
    "settings": ("Settings files", "设置文件"),
    "log": ("Log files", "日志文件"),
    "key_first": ("The card-data key was destroyed first: card numbers stored on this terminal "
                  "cannot be read back, even from copies left in free disk blocks.",
                  "卡数据密钥已最先销毁：本终端存储过的卡号无法再解密，即使残留在磁盘空闲块中。"),
    "host": ("Host", "主机"),
    "unbound": ("terminal unbound", "终端已解绑"),
    "unverified": ("not yet confirmed", "尚未确认"),
    "end": ("Provision again to reuse", "重新装机后方可使用"),
}


def _t(key: str, lang: str) -> str:
    pair = TEXTS.get(key)
    return key if pair is None else pair[1 if lang == "zh_CN" else 0]


def _fit(text: str, cols: int) -> list[str]:
    rows, line = [], ""
    for ch in text:
        if text_cells(line + ch) > cols:
            rows.append(line)
            line = ""
        line += ch
    rows.append(line)
    return rows


def _key_line(line: str, lang: str) -> str:
    """A key store's line ("terminal master key (token object posfw-tmk) destroyed"): the object
    names are the store's own; the verdict is worded in the report's language."""
    if lang == "zh_CN" and line.endswith(" destroyed"):
        return f"{line[:-len(' destroyed')]} 已销毁"
    return line


def dereg_report(*, lang: str, columns: int, tid: str, mid: str, at: float, backup_dir: str,
                 backup_txns: int, steps: Sequence[str], wiped: Mapping[str, int],
                 host_unbound: bool, keys: Sequence[str] = ()) -> Document:
    """Every line fits `columns` cells; no card data is ever among the facts. `keys`: the key
    store's lines, as the deregistration's wipe got them."""
    blocks: list[TextLine | Feed | Cut] = []

    def add(text: str, align: Align = Align.LEFT, bold: bool = False) -> None:
        blocks.extend(TextLine(row, align, bold) for row in _fit(text, columns))

    def pair(label: str, value: str) -> None:
        gap = columns - text_cells(label) - text_cells(value)
        if gap >= 1:
            add(label + " " * gap + value)
        else:
            add(label)
            add(value, Align.RIGHT)

    add(_t("title", lang), Align.CENTER, bold=True)
    add("-" * columns)
    pair(_t("terminal", lang), tid)
    pair(_t("merchant", lang), mid)
    pair(_t("at", lang), datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M"))
    add(_t("backup", lang) + ":")
    add(backup_dir)
    pair(_t("backup_txns", lang), str(backup_txns))
    add("-" * columns)
    add(_t("steps", lang), bold=True)
    for step in steps:
        add(" " + step)
    add(_t("keys_destroyed", lang), bold=True)
    for line in keys or [_t("no_keys", lang)]:
        blocks.extend(TextLine(" " + row) for row in wrap(_key_line(line, lang), columns - 1))
    add(_t("wiped", lang), bold=True)
    for part in ("card_key", "keys", "card_data", "settings", "log"):
        pair(" " + _t(part, lang), str(wiped.get(part, 0)))
    blocks.extend(TextLine(row) for row in wrap(_t("key_first", lang), columns))  # words whole
    pair(_t("host", lang), _t("unbound" if host_unbound else "unverified", lang))
    add("-" * columns)
    add(_t("end", lang), Align.CENTER)
    blocks.extend((Feed(3), Cut()))
    return Document(tuple(blocks), title=f"deregistration {tid}")


def as_text(doc: Document) -> list[str]:
    """The report's lines (for the screen, the ECR reply and the journal)."""
    return [b.text for b in doc.blocks if isinstance(b, TextLine)]
