"""The logging filter masks anything PAN- or track-shaped, whatever produced it."""

import logging

import pytest

from firmware.logmask import CardDataFilter, mask_text


@pytest.mark.parametrize("text,leak", [
    ("card 6222021000000000017 approved", "6222021000000000017"),
    ("track ;6222021000000000017=30121200000000000?", "=3012"),
    ("t1 %B4000000000000002^VISA/TEST^3012101000?", "^3012"),
    ("field 35: 6225880000000001D30121010000", "D3012"),
])
def test_mask_text_removes_card_data(text, leak):
    out = mask_text(text)
    assert leak not in out


def test_filter_rewrites_records_with_args(caplog):
    logger = logging.getLogger("posfw.test")
    handler = logging.Handler()
    seen = []
    handler.emit = lambda record: seen.append(record.getMessage())
    handler.addFilter(CardDataFilter())
    logger.addHandler(handler)
    try:
        logger.warning("pan %s amount %d", "4000000000000002", 100)
    finally:
        logger.removeHandler(handler)
    assert seen == ["pan 400000******0002 amount 100"]
