"""Working keys from sign-on field 62, check values, PIN blocks (firmware.host.keys)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.host.errors import HostError, KeyCheckError, LocalProtocolError, RemoteProtocolError
from firmware.host.keys import (
    WorkingKeys,
    build_signon_keys,
    check_value,
    decrypt_pin,
    encrypt_pin_block,
    expand_key,
    generate_working_keys,
    key_check_error,
    parse_signon_keys,
    signon_entries,
)
from firmware.ports import KeyCheckFailed

TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PIK = bytes.fromhex("1A2A3D4C5E0B1A2C4C5E6B7A8C9D0E1A")
MAK = bytes.fromhex("2C2C2C2C2C2C2C2C4A4A4A4A4A4A4A4A")
TDK = bytes.fromhex("10101010101010101F1F1F1F1F1F1F1F")


def _tdes(key: bytes, block: bytes) -> bytes:
    return Cipher(TripleDES(key), modes.ECB()).encryptor().update(block)


def _field62(*keys: bytes, mak_check: str = "first8") -> str:
    # Built with cryptography directly, not with build_signon_keys, so the parser is
    # checked against an independent encoder. The MAK (second key) has its check value over
    # its first 8 bytes (single DES: K1 = K2 = K3) under "first8", over all 16 under "full16".
    out = b""
    for i, k in enumerate(keys):
        cv_key = k[:8] * 3 if i == 1 and mak_check == "first8" else k
        out += _tdes(TMK, k) + _tdes(cv_key, bytes(8))[:4]
    return out.hex().upper()


def test_check_value_known_vector() -> None:
    # psec documents KCV 08D7 for this key; ours is the same computation, 4 bytes long.
    assert check_value(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")).hex().upper()[:4] \
        == "08D7"
    assert len(check_value(PIK)) == 4


def test_parse_40_bytes() -> None:
    keys = parse_signon_keys(_field62(PIK, MAK), TMK)
    assert keys == WorkingKeys(pik=PIK, mak=MAK)
    assert keys.tdk is None


def test_parse_60_bytes_with_tdk() -> None:
    keys = parse_signon_keys(_field62(PIK, MAK, TDK), TMK)
    assert (keys.pik, keys.mak, keys.tdk) == (PIK, MAK, TDK)


def test_lowercase_hex_accepted() -> None:
    assert parse_signon_keys(_field62(PIK, MAK).lower(), TMK).mak == MAK


@pytest.mark.parametrize(("index", "name"), [(0, "PIN key"), (1, "MAC key"),
                                             (2, "track data key")])
def test_bad_check_value_names_the_key(index: int, name: str) -> None:
    raw = bytearray(bytes.fromhex(_field62(PIK, MAK, TDK)))
    raw[index * 20 + 16] ^= 0x01  # corrupt the first check value byte of that key
    with pytest.raises(KeyCheckError, match=f"^{name} check value mismatch"):
        parse_signon_keys(raw.hex(), TMK)


@pytest.mark.parametrize("convention", ["first8", "full16"])
def test_mak_check_value_convention_is_a_setting(convention: str) -> None:
    """B20: field 62 built under either convention parses when the terminal says the same."""
    field62 = _field62(PIK, MAK, TDK, mak_check=convention)
    assert parse_signon_keys(field62, TMK, convention) == WorkingKeys(pik=PIK, mak=MAK, tdk=TDK)
    assert build_signon_keys(WorkingKeys(pik=PIK, mak=MAK, tdk=TDK), TMK, convention) == field62


def test_the_default_is_the_open_implementations_convention() -> None:
    """B20: by default the MAK check value covers the 8 bytes the MAC uses."""
    assert parse_signon_keys(_field62(PIK, MAK, mak_check="first8"), TMK).mak == MAK
    with pytest.raises(KeyCheckError):
        parse_signon_keys(_field62(PIK, MAK, mak_check="full16"), TMK)


@pytest.mark.parametrize(("host", "terminal"), [("first8", "full16"), ("full16", "first8")])
def test_mismatched_mak_convention_fails_in_words(host: str, terminal: str) -> None:
    with pytest.raises(KeyCheckError, match=r"^MAC key check value mismatch.*comms\.mak_check "
                                            f"= {terminal}"):
        parse_signon_keys(_field62(PIK, MAK, mak_check=host), TMK, terminal)


def test_unknown_mak_convention_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="first8, full16"):
        parse_signon_keys(_field62(PIK, MAK), TMK, "half")


def test_wrong_master_key_fails_on_first_key() -> None:
    with pytest.raises(KeyCheckError, match="PIN key"):
        parse_signon_keys(_field62(PIK, MAK), bytes(16))


@pytest.mark.parametrize("length", [0, 20, 39, 41, 59, 61, 80])
def test_wrong_length(length: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_signon_keys("00" * length, TMK)
    assert info.value.field == "62"


def test_not_hex() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_signon_keys("ZZ" * 40, TMK)


def test_build_is_inverse_of_parse() -> None:
    for with_tdk in (False, True):
        keys = generate_working_keys(with_tdk)
        hex62 = build_signon_keys(keys, TMK)
        assert len(hex62) == (120 if with_tdk else 80)
        assert parse_signon_keys(hex62, TMK) == keys
    assert build_signon_keys(WorkingKeys(PIK, MAK), TMK) == _field62(PIK, MAK)


def test_generated_keys_have_odd_parity_and_differ() -> None:
    a, b = generate_working_keys(True), generate_working_keys(True)
    for key in (a.pik, a.mak, a.tdk):
        assert key is not None and len(key) == 16
        assert all(bin(byte).count("1") % 2 == 1 for byte in key)
    assert a.pik != b.pik and a.pik != a.mak


def test_repr_shows_check_values_only() -> None:
    keys = WorkingKeys(pik=PIK, mak=MAK, tdk=TDK)
    text = repr(keys) + str(keys)
    for key in (PIK, MAK, TDK):
        assert key.hex() not in text.lower()
        assert key.hex().upper() not in text
        assert repr(key) not in text
    assert check_value(MAK).hex().upper() in text


def test_working_keys_reject_bad_lengths() -> None:
    with pytest.raises(LocalProtocolError):
        WorkingKeys(pik=bytes(5), mak=MAK)


def test_master_key_must_be_double_length() -> None:
    with pytest.raises(LocalProtocolError):
        parse_signon_keys(_field62(PIK, MAK), TMK[:8])


def test_pin_block_known_vector() -> None:
    # psec's documented ISO 0 clear block for PIN 1234, PAN 5544332211009966.
    block = encrypt_pin_block("1234", "5544332211009966", PIK)
    clear = Cipher(TripleDES(PIK), modes.ECB()).decryptor().update(block)
    assert clear.hex().upper() == "041277CDDEEFF669"


@settings(max_examples=50, deadline=None)
@given(st.text("0123456789", min_size=4, max_size=12),
       st.text("0123456789", min_size=13, max_size=19))
def test_pin_round_trip(pin: str, pan: str) -> None:
    block = encrypt_pin_block(pin, pan, PIK)
    assert len(block) == 8
    assert decrypt_pin(block, pan, PIK) == pin


def test_decrypt_with_wrong_key_or_pan_is_a_host_error_without_digits() -> None:
    block = encrypt_pin_block("987654", "6225881234567890", PIK)
    with pytest.raises(HostError) as info:
        decrypt_pin(block, "6225881234567890", MAK)
    assert "987654" not in str(info.value)
    with pytest.raises(HostError):
        decrypt_pin(block[:7], "6225881234567890", PIK)


@pytest.mark.parametrize(("pin", "pan"), [("123", "6225881234567890"),
                                          ("1234567890123", "6225881234567890"),
                                          ("12a4", "6225881234567890"),
                                          ("1234", "622588123456")])
def test_encrypt_rejects_bad_pin_or_pan(pin: str, pan: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encrypt_pin_block(pin, pan, PIK)
    assert pin not in str(info.value)


def test_expand_key_same_cipher() -> None:
    block = bytes.fromhex("0123456789ABCDEF")
    for key in (PIK[:8], PIK):
        assert _tdes(expand_key(key), block) == _tdes(key, block)
    assert len(expand_key(PIK)) == 24
    with pytest.raises(LocalProtocolError):
        expand_key(bytes(12))


# ---- field 62 for the key store (signon_entries, key_check_error) ----------------------------

@pytest.mark.parametrize("convention", ["first8", "full16"])
def test_signon_entries_keep_the_layout_and_say_the_mak_convention(convention: str) -> None:
    """Field 62 goes to the store still encrypted under the TMK, entry by entry, in wire order,
    with the check value and over what the MAK's is computed."""
    raw = bytes.fromhex(_field62(PIK, MAK, TDK, mak_check=convention))
    entries = signon_entries(raw.hex(), convention)
    assert [e.role for e in entries] == ["PIK", "MAK", "TDK"]
    assert [e.wrapped for e in entries] == [raw[0:16], raw[20:36], raw[40:56]]
    assert [e.check_value for e in entries] == [raw[16:20], raw[36:40], raw[56:60]]
    assert [e.check_first8 for e in entries] == [False, convention == "first8", False]
    assert [e.role for e in signon_entries(_field62(PIK, MAK))] == ["PIK", "MAK"]


@pytest.mark.parametrize("length", [0, 20, 39, 41, 80])
def test_signon_entries_refuse_a_wrong_length_naming_field_62(length: int) -> None:
    with pytest.raises(RemoteProtocolError, match="expected 40 or 60") as info:
        signon_entries("00" * length)
    assert info.value.field == "62"


@pytest.mark.parametrize(("role", "convention", "words"), [
    ("PIK", "first8", "PIN key check value mismatch"),
    ("MAK", "first8", "MAC key check value mismatch"),
    ("MAK", "full16", "MAC key check value mismatch"),
    ("TDK", "first8", "track data key check value mismatch"),
])
def test_a_store_refusal_reads_as_the_parsers_words(role: str, convention: str,
                                                    words: str) -> None:
    """The key store's KeyCheckFailed becomes the KeyCheckError the terminal has always
    raised: the same sentence, hint included, as the clear-key parser gives."""
    keys = {"PIK": PIK, "MAK": MAK, "TDK": TDK}
    index = list(keys).index(role)
    raw = bytearray(bytes.fromhex(_field62(PIK, MAK, TDK, mak_check=convention)))
    raw[index * 20 + 19] ^= 0x01  # the last byte of that key's check value
    with pytest.raises(KeyCheckError) as parsed:
        parse_signon_keys(raw.hex(), TMK, convention)
    entry = signon_entries(raw.hex(), convention)[index]
    got = bytes(a ^ b for a, b in zip(entry.check_value, b"\x00\x00\x00\x01", strict=True))
    mapped = key_check_error(KeyCheckFailed(role, entry.check_value, got), convention)
    assert str(mapped) == str(parsed.value)
    assert str(mapped).startswith(words)
    assert (f"comms.mak_check = {convention}" in str(mapped)) is (role == "MAK")
