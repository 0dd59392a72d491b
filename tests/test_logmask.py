"""The log mask works on the final formatted text of a record: message, traceback and stack,
PANs written plain or in groups with spaces or dashes, through a real FileHandler."""

import logging
from pathlib import Path

import pytest

from firmware.logmask import install, mask_text

PAN = "6222021234567890"
TRACK2 = ";6222021234567890=30121011234500000?"


@pytest.mark.parametrize("text,leak", [
    ("card 6222021000000000017 approved", "6222021000000000017"),
    ("track ;6222021000000000017=30121200000000000?", "=3012"),
    ("t1 %B4000000000000002^VISA/TEST^3012101000?", "^3012"),
    ("field 35: 6225880000000001D30121010000", "D3012"),
    ("card 6222 0212 3456 7890 typed with spaces", "0212 3456"),
    ("card 6222-0212-3456-7890 typed with dashes", "0212-3456"),
    ("amex 3782 822463 10005", "822463"),
])
def test_mask_text_removes_card_data(text, leak):
    out = mask_text(text)
    assert leak not in out


def test_grouped_pans_keep_first_six_last_four_and_their_separators():
    assert mask_text("6222 0212 3456 7890") == "6222 02** **** 7890"
    assert mask_text("6222-0212-3456-7890.") == "6222-02**-****-7890."
    assert mask_text("at 2024-05-01 12:30:45 batch 000001") == "at 2024-05-01 12:30:45 batch 000001"


def _logger(tmp_path: Path, name: str) -> tuple[logging.Logger, logging.FileHandler, Path]:
    path = tmp_path / "terminal.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install(handler)
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.addHandler(handler)
    return logger, handler, path


def _charge(card_number: str) -> None:
    track = ";6222021234567890=30121011234500000?"  # a local frame's text holds track 2
    raise ValueError(f"declined card {card_number} (6222 0212 3456 7890) track {track}")


def test_a_planted_traceback_and_stack_reach_the_file_masked(tmp_path):
    logger, handler, path = _logger(tmp_path, "posfw.test.traceback")
    try:
        try:
            _charge(PAN)
        except ValueError:
            logger.exception("charging %s failed", "6222-0212-3456-7890")
        logger.warning("where am I", stack_info=True)
    finally:
        logger.removeHandler(handler)
        handler.close()
    written = path.read_text("utf-8")
    assert "Traceback" in written and "raise ValueError" in written and "Stack (most recent" in written
    for leak in (PAN, "0212 3456", "0212-3456", "=3012", TRACK2[1:17]):
        assert leak not in written, leak
    assert "622202******7890" in written and "<track2 removed>" in written


def test_a_formatter_set_after_install_still_masks(tmp_path):
    logger, handler, path = _logger(tmp_path, "posfw.test.reformat")
    handler.setFormatter(logging.Formatter("%(message)s"))  # e.g. a later setup step
    try:
        logger.warning("pan %s amount %d", "4000000000000002", 100)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert path.read_text("utf-8") == "pan 400000******0002 amount 100\n"
