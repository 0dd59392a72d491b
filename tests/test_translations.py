"""Every catalog speaks both languages, and a Chinese screen shows no English words.

The catalogs are found, not listed: every module-level dict of firmware/ whose values are
(English, 简体中文) pairs (with Chinese in at least one), plus the host response codes, so a
catalog added later is covered without touching this file.

What a zh_CN screen may show in ASCII letters (ALLOWED, kept short on purpose):
- codes: anything with a digit in it (F1-F4 keys, 58mm, an order no. such as T12, usb0), the
  currency codes CNY/RMB, the keypad's own key legends (ENTER, CANCEL... shown by the keypad
  test, printed on the keys), IC (IC卡 is the Chinese term), network and protocol codes an
  engineer reads (DNS, IPv4, TPDU, MAC, _posio) and the ECR link's op and report names (a
  till integrator sends them as written); a directory path is data;
- brand and product names: UnionPay, CUP, JCB, Python, SQLite;
- the names of the languages in the language menu (English, and "Language" next to 语言, so
  someone who cannot read the current language still finds the switch).
Receipts are not screens: their bilingual labels (凭证号(VOUCHER NO.)) are by design.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import firmware
from firmware.ecr.protocol import OPS as ECR_OPS
from firmware.engine.codes import CODES
from firmware.ports import Key

CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")
WORD = re.compile(r"[A-Za-z0-9_]*[A-Za-z][A-Za-z0-9_]*")
PATH = re.compile(r"\S*/\S*(?:\n\S+)?")  # a directory (wrapped or not) is data, in any language
SNAPSHOTS = Path(__file__).parent / "snapshots" / "ui"

ALLOWED = frozenset({
    "CNY", "RMB", "IC", "DNS", "IPv4", "TPDU", "MAC", "_posio",
    "v",  # the "more below" mark at the end of a title row
    "UnionPay", "CUP", "JCB", "Python", "SQLite",
    "English", "Language",
    *(key.name for key in Key), *ECR_OPS, "x", "z", "list",
})

# What the snapshot tests feed in as data, not catalog words: merchant and shop names, notes and
# text typed on the keypad, the journal's export directory, a board's name, and the lines that a
# few screen tests hand to the screen as English fixtures (reports, the review, deregistration).
FIXTURE_DATA = (
    "DEMO MERCHANT", "DEMO ME", "Demo Shop", "Thank you", "table 12", "tab", "abc2ABC", "tuv8TUV",
    "devboard",
    "edited on the keypad",  # a settings version's stored reason, shown as written (like a log line)
)
FIXTURE_LINES = {
    # snapshot name prefix -> English lines its test feeds to the screen as the app's output
    "dereg_": ("DEREGISTRATION", "DEREGISTERED", "TID", "Backup", "txns", "Keys wiped",
               "Host: unbound", "backup verify", "failed", "txn count", "host unreachable",
               "connection refused"),
    "review_": ("Batch", "COUNT"),
    "scroll_report": ("Sale", "Void", "Refund"),
    "scroll_about": ("Firmware", "posio C ext", "Board"),
    "txn_confirm_settle": ("Sales",),
    "settings_history": ("edited on the keypad",),
    "settings_problems": ("Port: whole number", "got"),
    "update_files": ("posfw",),  # the update files' names on the USB stick, shown as they are
    "update_diag_firmware": ("分区A", "分区B"),  # the slots' names, as the boot loader has them
}


def catalogs() -> Iterator[tuple[str, dict[str, tuple[str, str]]]]:
    seen: set[int] = set()
    for info in pkgutil.walk_packages(firmware.__path__, "firmware."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # `python -m` entry points run the firmware when imported
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if id(value) in seen or not _is_catalog(value):
                continue
            seen.add(id(value))
            yield f"{info.name}.{name}", value
    yield "firmware.engine.codes.CODES", {c.code: (c.en, c.zh) for c in CODES.values()}


def _is_catalog(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, tuple) and len(v) == 2
        and all(isinstance(x, str) for x in v) for k, v in value.items()
    ) and any(CJK.search(v[1]) for v in value.values())


CATALOGS = dict(catalogs())
FOUND = {id(catalog) for catalog in CATALOGS.values()}


class _Sample(dict):
    """Fills any {placeholder} with a number, as amounts, counts and codes come in."""

    def __missing__(self, key: str) -> int:
        return 12


def rendered(sentence: str) -> str:
    return string.Formatter().vformat(sentence, (), _Sample())


def stray_words(text: str) -> list[str]:
    return [w for w in WORD.findall(text) if w not in ALLOWED and not any(c.isdigit() for c in w)]


def test_the_catalogs_are_found() -> None:
    from firmware import i18n
    from firmware.printing import texts as slip_texts
    from firmware.ui import held_screens
    from firmware.ui import texts as screen_texts

    for catalog in (i18n.CATALOG, screen_texts.CATALOG, slip_texts.CATALOG, held_screens.CATALOG):
        assert id(catalog) in FOUND
    assert "firmware.engine.codes.CODES" in CATALOGS


@pytest.mark.parametrize("name", sorted(CATALOGS))
def test_every_key_has_english_and_chinese(name: str) -> None:
    for key, (en, zh) in CATALOGS[name].items():
        assert en.strip() and zh.strip(), f"{name}[{key!r}] lacks a language: {(en, zh)}"
        assert set(re.findall(r"\{(\w*)", en)) == set(re.findall(r"\{(\w*)", zh)), \
            f"{name}[{key!r}]: the two languages fill different blanks"


@pytest.mark.parametrize("name", sorted(n for n in CATALOGS if not n.startswith("firmware.printing.")))
def test_chinese_sentences_show_no_english_words(name: str) -> None:
    found = {key: stray_words(rendered(zh)) for key, (_, zh) in CATALOGS[name].items()}
    assert not {k: w for k, w in found.items() if w}, f"{name}: English words in zh_CN"


def test_the_words_of_the_issue_are_gone() -> None:
    """Issue 13 A13: "测试任务: DONE", "确认=好 清除=删", "密码错"."""
    every = [zh for catalog in CATALOGS.values() for _, zh in catalog.values()]
    assert "测试任务: {state}" not in every and "确认=好 清除=删" not in every and "密码错" not in every


def _screen_text(path: Path) -> str:
    """A snapshot's LCD rows, paths taken out, then read as one line (a sentence wrapped over
    two rows reads whole again)."""
    rows = [line[1:-1] for line in path.read_text().splitlines() if line[:1] in ("|", ">")]
    return " ".join(PATH.sub(" ", "\n".join(rows)).split())


@pytest.mark.parametrize("path", sorted(SNAPSHOTS.glob("*zh_CN*.txt")), ids=lambda p: p.stem)
def test_chinese_screens_show_no_english_words(path: Path) -> None:
    text = _screen_text(path)
    for data in FIXTURE_DATA:
        text = text.replace(data, " ")
    for prefix, lines in FIXTURE_LINES.items():
        if path.stem.startswith(prefix):
            for line in lines:
                text = text.replace(line, " ")
    assert not stray_words(text), f"{path.name}: {stray_words(text)}"
