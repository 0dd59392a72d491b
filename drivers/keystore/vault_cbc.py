"""The card-vault blob format for tokens without AES-GCM: AES-256-CBC, then AES-CMAC over it.

A TPM through tpm2-pkcs11 offers AES only as CKM_AES_ECB / CKM_AES_CBC (no GCM, no CMAC, no
C_GenerateKey), so the vault there is encrypt-then-MAC under two non-extractable token keys,
`posfw-vault-enc` (CBC) and `posfw-vault-mac` (the CMAC's block cipher). The format runs on any
token with plain AES (SoftHSM2 too), so it can be tested against the reference here and against
both tokens.

    blob = FORMAT (1 byte) || IV (16) || CBC ciphertext of the PKCS#7-padded plaintext || CMAC (16)
    CMAC = AES-CMAC_mac(FORMAT || len(aad) (8 bytes, big-endian) || aad || IV || ciphertext)

The CMAC is RFC 4493's, built here from raw block encryptions under the MAC key: its chaining
values are not key material. Its subkeys K1/K2 come from L = AES_mac(0^128), computed once per
vault in this process: a holder of L could turn one genuine tag into a tag for a related message,
but only someone who can already read this process's memory (and so use the token as it does)
gets it. The module takes the token's operations as callables and imports no PKCS#11 binding;
drivers/keystore/pkcs11.py passes its key objects' encrypt/decrypt.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from firmware.ports import KeyStoreError

FORMAT_CBC_CMAC = 0x01
BLOCK = 16
TAG_BYTES = 16
ENC_KEY_LABEL = "posfw-vault-enc"
MAC_KEY_LABEL = "posfw-vault-mac"
_RB = 0x87  # RFC 4493 section 2.3: the constant for a 128-bit block
_OVERHEAD = 1 + BLOCK + TAG_BYTES

# (iv, data) -> data, a multiple of 16 bytes, AES-CBC under the vault's encryption key
CbcCipher = Callable[[bytes, bytes], bytes]
# one or more whole blocks -> AES-ECB under the vault's MAC key
EcbEncrypt = Callable[[bytes], bytes]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _double(block: bytes) -> bytes:
    """Multiplication by x in GF(2^128) (RFC 4493 section 2.3, the subkey step)."""
    shifted = (int.from_bytes(block, "big") << 1) & ((1 << 128) - 1)
    if block[0] & 0x80:
        shifted ^= _RB
    return shifted.to_bytes(BLOCK, "big")


def cmac_subkeys(ecb_encrypt: EcbEncrypt) -> tuple[bytes, bytes]:
    """K1, K2 of RFC 4493 from L = AES(0^128) under the MAC key."""
    l_block = ecb_encrypt(bytes(BLOCK))
    if len(l_block) != BLOCK:
        raise KeyStoreError(f"the token's AES-ECB gave {len(l_block)} bytes for one block")
    k1 = _double(l_block)
    return k1, _double(k1)


def aes_cmac(ecb_encrypt: EcbEncrypt, message: bytes,
             subkeys: tuple[bytes, bytes] | None = None,
             mac_cbc_encrypt: CbcCipher | None = None) -> bytes:
    """AES-CMAC (RFC 4493) of `message` under the key behind `ecb_encrypt`: one block cipher
    call per block (plus one for the subkeys unless they are given), or, with `mac_cbc_encrypt`
    (AES-CBC under the same MAC key), one call for the whole chain: CMAC is the last block of
    CBC from a zero IV over the message with its last block masked."""
    k1, k2 = subkeys if subkeys is not None else cmac_subkeys(ecb_encrypt)
    blocks = max(1, -(-len(message) // BLOCK))
    complete = len(message) > 0 and len(message) % BLOCK == 0
    tail = message[(blocks - 1) * BLOCK:]
    # A whole last block is masked with K1; a short (or empty) one is padded 10..0 and takes K2.
    padded = tail if complete else tail + b"\x80" + bytes(BLOCK - 1 - len(tail))
    last = _xor(padded, k1 if complete else k2)
    if mac_cbc_encrypt is not None:
        chained = mac_cbc_encrypt(bytes(BLOCK), message[:(blocks - 1) * BLOCK] + last)
        if len(chained) != blocks * BLOCK:
            raise KeyStoreError("the token's AES-CBC returned a MAC chain of the wrong length")
        return chained[-BLOCK:]
    x = bytes(BLOCK)
    for i in range(blocks - 1):
        x = ecb_encrypt(_xor(x, message[i * BLOCK:(i + 1) * BLOCK]))
    return ecb_encrypt(_xor(x, last))


def _mac_input(iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    # The AAD's length first: no AAD/ciphertext boundary can be moved without changing the MAC.
    return bytes([FORMAT_CBC_CMAC]) + len(aad).to_bytes(8, "big") + aad + iv + ciphertext


def seal(plain: bytes, aad: bytes, *, cbc_encrypt: CbcCipher, ecb_encrypt: EcbEncrypt,
         subkeys: tuple[bytes, bytes] | None = None, mac_cbc_encrypt: CbcCipher | None = None,
         iv: bytes | None = None) -> bytes:
    """The blob for `plain` bound to `aad` (see the module docstring). `iv` is for tests only
    (known-answer checks); a fresh random IV otherwise."""
    iv = os.urandom(BLOCK) if iv is None else iv
    if len(iv) != BLOCK:
        raise KeyStoreError("the vault's IV is 16 bytes")
    pad = BLOCK - len(plain) % BLOCK
    ciphertext = cbc_encrypt(iv, plain + bytes([pad]) * pad)
    if len(ciphertext) != len(plain) + pad:
        raise KeyStoreError("the token's AES-CBC returned a ciphertext of the wrong length")
    tag = aes_cmac(ecb_encrypt, _mac_input(iv, ciphertext, aad), subkeys, mac_cbc_encrypt)
    return bytes([FORMAT_CBC_CMAC]) + iv + ciphertext + tag


def unseal(blob: bytes, aad: bytes, *, cbc_decrypt: CbcCipher, ecb_encrypt: EcbEncrypt,
           subkeys: tuple[bytes, bytes] | None = None,
           mac_cbc_encrypt: CbcCipher | None = None) -> bytes:
    """The plaintext of a blob from seal(); KeyStoreError in words when the blob is not this
    format, is damaged, belongs to another AAD or another key. The MAC is checked before any
    decryption (no padding oracle)."""
    if len(blob) < _OVERHEAD + BLOCK or (len(blob) - _OVERHEAD) % BLOCK:
        raise KeyStoreError("an encrypted card number has the wrong length for the CBC vault")
    if blob[0] != FORMAT_CBC_CMAC:
        raise KeyStoreError(f"an encrypted card number is in format {blob[0]:#04x}, not the CBC "
                            f"vault's {FORMAT_CBC_CMAC:#04x} (a blob from another key store?)")
    iv, ciphertext, tag = blob[1:1 + BLOCK], blob[1 + BLOCK:-TAG_BYTES], blob[-TAG_BYTES:]
    expected = aes_cmac(ecb_encrypt, _mac_input(iv, ciphertext, aad), subkeys, mac_cbc_encrypt)
    if not hmac.compare_digest(expected, tag):
        raise KeyStoreError("an encrypted card number failed its integrity check")
    padded = cbc_decrypt(iv, ciphertext)
    pad = padded[-1] if padded else 0
    if not 1 <= pad <= BLOCK or padded[-pad:] != bytes([pad]) * pad:
        # The MAC held, so only a wrong encryption key (or a token fault) gets here.
        raise KeyStoreError("an encrypted card number decrypted to bad padding: the vault's "
                            "encryption key is not the one that sealed it")
    return padded[:-pad]


class CbcCmacVault:
    """seal/unseal (firmware.ports.VaultKeys) over a token's two AES keys, with the CMAC subkeys
    computed on first use and kept (one ECB call saved per operation). With `mac_cbc_encrypt`
    (CBC under the MAC key) a seal or unseal is two token calls whatever the length; without,
    one CBC call plus one ECB call per MAC block (six calls in all for a card number)."""

    def __init__(self, *, cbc_encrypt: CbcCipher, cbc_decrypt: CbcCipher,
                 ecb_encrypt: EcbEncrypt, mac_cbc_encrypt: CbcCipher | None = None) -> None:
        self._cbc_encrypt, self._cbc_decrypt = cbc_encrypt, cbc_decrypt
        self._ecb_encrypt, self._mac_cbc = ecb_encrypt, mac_cbc_encrypt
        self._subkeys: tuple[bytes, bytes] | None = None

    def __repr__(self) -> str:
        return "CbcCmacVault(<token keys>)"

    def _keys(self) -> tuple[bytes, bytes]:
        if self._subkeys is None:
            self._subkeys = cmac_subkeys(self._ecb_encrypt)
        return self._subkeys

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        return seal(plain, aad, cbc_encrypt=self._cbc_encrypt, ecb_encrypt=self._ecb_encrypt,
                    subkeys=self._keys(), mac_cbc_encrypt=self._mac_cbc)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        return unseal(blob, aad, cbc_decrypt=self._cbc_decrypt, ecb_encrypt=self._ecb_encrypt,
                      subkeys=self._keys(), mac_cbc_encrypt=self._mac_cbc)

    def forget(self) -> None:
        """Drops the cached subkeys (the store closes, or its keys were destroyed)."""
        self._subkeys = None
