"""The CBC vault format (drivers/keystore/vault_cbc.py) against the reference: RFC 4493's CMAC test
vectors, `cryptography`'s AES-CMAC and AES-CBC, and the failures a vault must refuse in words.

The token's operations are played by `cryptography` over known keys here (the reference); the
same format against a TPM is tests/test_tpm_swtpm.py, in the QEMU guest tests/qemu/test_qemu_tpm.py.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drivers.keystore import vault_cbc
from drivers.keystore.vault_cbc import CbcCmacVault, aes_cmac, cmac_subkeys
from firmware.ports import KeyStoreError

# RFC 4493 section 4: the AES-128 key, its subkeys and the four examples.
RFC_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC_K1 = bytes.fromhex("fbeed618357133667c85e08f7236a8de")
RFC_K2 = bytes.fromhex("f7ddac306ae266ccf90bc11ee46d513b")
RFC_MESSAGE = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
RFC_EXAMPLES = [  # (message length, tag)
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
]

ENC_KEY = bytes(range(32))
MAC_KEY = bytes(range(32, 64))
AAD = b"posfw/pan/v1"
PAN = b"6225880000000001"


class RefToken:
    """The reference "token": AES over known keys with `cryptography`, counting the calls."""

    def __init__(self, enc_key: bytes = ENC_KEY, mac_key: bytes = MAC_KEY) -> None:
        self.enc_key, self.mac_key = enc_key, mac_key
        self.calls: list[str] = []

    def ecb_encrypt(self, data: bytes) -> bytes:
        self.calls.append("ecb")
        return ecb(self.mac_key, data)

    def cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        self.calls.append("cbc")
        enc = Cipher(algorithms.AES(self.enc_key), modes.CBC(iv)).encryptor()
        return enc.update(data) + enc.finalize()

    def cbc_decrypt(self, iv: bytes, data: bytes) -> bytes:
        self.calls.append("cbc-decrypt")
        dec = Cipher(algorithms.AES(self.enc_key), modes.CBC(iv)).decryptor()
        return dec.update(data) + dec.finalize()

    def mac_cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        self.calls.append("mac-cbc")
        enc = Cipher(algorithms.AES(self.mac_key), modes.CBC(iv)).encryptor()
        return enc.update(data) + enc.finalize()

    def vault(self, one_call_mac: bool = False) -> CbcCmacVault:
        return CbcCmacVault(cbc_encrypt=self.cbc_encrypt, cbc_decrypt=self.cbc_decrypt,
                            ecb_encrypt=self.ecb_encrypt,
                            mac_cbc_encrypt=self.mac_cbc_encrypt if one_call_mac else None)


def ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def reference_cmac(key: bytes, message: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(message)
    return c.finalize()


def mac_cbc(key: bytes):
    def encrypt(iv: bytes, data: bytes) -> bytes:
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return enc.update(data) + enc.finalize()
    return encrypt


def test_rfc4493_subkeys() -> None:
    assert cmac_subkeys(lambda block: ecb(RFC_KEY, block)) == (RFC_K1, RFC_K2)


@pytest.mark.parametrize(("length", "tag"), RFC_EXAMPLES)
@pytest.mark.parametrize("one_call", [False, True], ids=["block-by-block", "one-cbc-call"])
def test_rfc4493_examples(length: int, tag: str, one_call: bool) -> None:
    message = RFC_MESSAGE[:length]
    got = aes_cmac(lambda block: ecb(RFC_KEY, block), message,
                   mac_cbc_encrypt=mac_cbc(RFC_KEY) if one_call else None)
    assert got.hex() == tag


def test_cmac_agrees_with_cryptography_at_every_length() -> None:
    # Block boundaries (15, 16, 17, 31, 32, 33 ...) are where a CMAC goes wrong: all of 0-100.
    subkeys = cmac_subkeys(lambda b: ecb(MAC_KEY, b))
    for length in range(101):
        message = os.urandom(length)
        want = reference_cmac(MAC_KEY, message)
        assert aes_cmac(lambda b: ecb(MAC_KEY, b), message, subkeys) == want, length
        assert aes_cmac(lambda b: ecb(MAC_KEY, b), message, subkeys, mac_cbc(MAC_KEY)) == want


@pytest.mark.parametrize("one_call", [False, True], ids=["block-by-block", "one-cbc-call"])
def test_seal_is_cbc_then_cmac_as_documented(one_call: bool) -> None:
    token = RefToken()
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    blob = vault_cbc.seal(PAN, AAD, cbc_encrypt=token.cbc_encrypt, ecb_encrypt=token.ecb_encrypt,
                          mac_cbc_encrypt=token.mac_cbc_encrypt if one_call else None, iv=iv)
    # Built again from the module docstring with `cryptography` alone.
    padded = PAN + bytes([16]) * 16  # 16 digits: a whole block of padding
    ct = Cipher(algorithms.AES(ENC_KEY), modes.CBC(iv)).encryptor().update(padded)
    mac_input = b"\x01" + len(AAD).to_bytes(8, "big") + AAD + iv + ct
    assert blob == b"\x01" + iv + ct + reference_cmac(MAC_KEY, mac_input)
    assert vault_cbc.unseal(blob, AAD, cbc_decrypt=token.cbc_decrypt,
                            ecb_encrypt=token.ecb_encrypt) == PAN


@pytest.mark.parametrize("plain", [b"", b"1", PAN, b"6225880000000000001", bytes(range(256)) * 3])
def test_round_trip_and_fresh_iv(plain: bytes) -> None:
    vault = RefToken().vault()
    first, second = vault.seal(plain, AAD), vault.seal(plain, AAD)
    assert first != second  # a fresh IV each time: equal PANs do not give equal blobs
    assert vault.unseal(first, AAD) == plain and vault.unseal(second, AAD) == plain
    assert len(first) == 1 + 16 + (len(plain) // 16 + 1) * 16 + 16
    if len(plain) >= 8:  # a shorter one turns up in 49 random bytes by chance (b"1": 1 in 5)
        assert plain not in first


def test_token_calls_per_seal_and_unseal() -> None:
    token = RefToken()
    vault = token.vault()
    blob = vault.seal(PAN, AAD)
    # the subkeys once (1 ECB), the encryption (1 CBC), the CMAC over 69 bytes (5 ECB)
    assert token.calls == ["ecb", "cbc"] + ["ecb"] * 5
    token.calls.clear()
    assert vault.unseal(blob, AAD) == PAN
    assert token.calls == ["ecb"] * 5 + ["cbc-decrypt"]  # MAC first, then decrypt

    fast_token = RefToken()
    fast = fast_token.vault(one_call_mac=True)
    blob = fast.seal(PAN, AAD)
    assert fast_token.calls == ["ecb", "cbc", "mac-cbc"]
    fast_token.calls.clear()
    assert fast.unseal(blob, AAD) == PAN
    assert fast_token.calls == ["mac-cbc", "cbc-decrypt"]
    assert vault.unseal(blob, AAD) == PAN  # both MAC paths make the same blobs


def test_every_damaged_byte_is_refused_before_decrypting() -> None:
    token = RefToken()
    vault = token.vault()
    blob = vault.seal(PAN, AAD)
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            damaged = bytearray(blob)
            damaged[i] ^= bit
            token.calls.clear()
            with pytest.raises(KeyStoreError) as refused:
                vault.unseal(bytes(damaged), AAD)
            assert "cbc-decrypt" not in token.calls, f"byte {i}: decrypted before the MAC check"
            assert PAN.decode() not in str(refused.value)


def test_other_aad_other_key_other_format_and_bad_lengths_are_refused() -> None:
    vault = RefToken().vault()
    blob = vault.seal(PAN, AAD)
    with pytest.raises(KeyStoreError, match="integrity"):
        vault.unseal(blob, b"posfw/pan/v2")
    with pytest.raises(KeyStoreError, match="integrity"):
        RefToken(mac_key=os.urandom(32)).vault().unseal(blob, AAD)
    with pytest.raises(KeyStoreError, match="format 0x02"):
        vault.unseal(b"\x02" + blob[1:], AAD)
    for cut in (0, 1, 32, 48, len(blob) - 1, len(blob) + 1):
        with pytest.raises(KeyStoreError, match="wrong length"):
            vault.unseal((blob + b"\x00")[:cut], AAD)
    # An AES-GCM blob of the memory store (nonce 12 || ct || tag 16) is not mistaken for one.
    gcm_like = os.urandom(12 + len(PAN) + 16)
    with pytest.raises(KeyStoreError):
        vault.unseal(gcm_like, AAD)


def test_a_wrong_encryption_key_under_the_right_mac_key_is_caught() -> None:
    # The MAC holds (same MAC key) but the CBC key differs: the padding check names it, or at
    # worst (1 in 256) garbage comes back; never the PAN.
    blob = RefToken().vault().seal(PAN, AAD)
    other = RefToken(enc_key=bytes(32)).vault()
    try:
        got = other.unseal(blob, AAD)
    except KeyStoreError as error:
        assert "encryption key" in str(error)
    else:
        assert got != PAN


def test_the_vault_never_shows_its_subkeys() -> None:
    vault = RefToken().vault()
    vault.seal(PAN, AAD)
    assert "token keys" in repr(vault)
    k1, k2 = cmac_subkeys(lambda b: ecb(MAC_KEY, b))
    assert k1.hex() not in repr(vault) and k2.hex() not in repr(vault)
    vault.forget()
    assert vault._subkeys is None
