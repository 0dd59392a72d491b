"""TR-31 key blocks at provisioning: the terminal master key arrives wrapped under a key-block
protection key (KBPK) and is unwrapped here, in the ceremony process, with psec.

What a block must be to count as a terminal master key, and the words when it is not. No token
(SoftHSM 2.6.1, tpm2-pkcs11) unwraps TR-31 itself, so the clear TMK exists in the ceremony
process between psec.tr31.unwrap and the token's C_CreateObject: psec hands it back as immutable
bytes (and builds intermediates the same way), which this module copies into a bytearray the
caller wipes; the bytes objects go with the short-lived ceremony process. docs/provisioning.md
says so.
"""

from __future__ import annotations

from firmware.ports import KeyStoreError

# ANSI X9.143 / TR-31 key usage "K0": key encryption or wrapping, what a TMK does to the working
# keys of field 62. Algorithm "T": triple DES. Modes that allow decrypting/unwrapping.
TMK_USAGE = "K0"
TMK_ALGORITHM = "T"
TMK_MODES = ("B", "D", "N")
TMK_BYTES = 16


def unwrap_tmk(block: str, kbpk: bytes | bytearray) -> bytearray:
    """The clear TMK of a TR-31 block (a bytearray for the caller to wipe). KeyStoreError in
    words for a block that does not verify under `kbpk`, is malformed, or holds another kind of
    key; never key bytes in the message."""
    from psec import tr31  # psec loads cryptography: the ceremony's only, not at idle

    if len(kbpk) not in (16, 24, 32):
        raise KeyStoreError(f"a key-block protection key is 16, 24 or 32 bytes, not {len(kbpk)}")
    try:
        header, key = tr31.unwrap(bytes(kbpk), block.strip())
    except tr31.HeaderError as exc:
        # Header errors quote header characters only (usage, algorithm, lengths): not secret.
        raise KeyStoreError(f"the TR-31 block's header is malformed: {exc}") from None
    except tr31.KeyBlockError as exc:
        text = str(exc)
        if "MAC doesn't match" in text:
            raise KeyStoreError("the TR-31 block does not verify under this key-block protection "
                                "key: a wrong KBPK, or the block was altered") from None
        if text.startswith("Decrypted key"):
            raise KeyStoreError("the TR-31 block decrypts to no valid key: a wrong KBPK, or the "
                                "block was altered") from None
        if text.startswith("KBPK length"):
            raise KeyStoreError("the key-block protection key has the wrong length for this "
                                "TR-31 block version") from None
        # The other messages quote the encrypted key data or the MAC: fixed words instead.
        raise KeyStoreError("the TR-31 block is malformed (length, hex digits or version)") \
            from None
    clear = bytearray(key)
    del key
    if header.key_usage != TMK_USAGE:
        clear[:] = bytes(len(clear))
        raise KeyStoreError(f"the TR-31 block holds a key for usage {header.key_usage}, not "
                            f"{TMK_USAGE} (key encryption): it is not a terminal master key")
    if header.algorithm != TMK_ALGORITHM or len(clear) != TMK_BYTES:
        n = len(clear)
        clear[:] = bytes(n)
        raise KeyStoreError(f"the TR-31 block holds a {n}-byte key of algorithm "
                            f"{header.algorithm}; a terminal master key is a 16-byte triple-DES "
                            f"key (algorithm {TMK_ALGORITHM})")
    if header.mode_of_use not in TMK_MODES:
        clear[:] = bytes(TMK_BYTES)
        raise KeyStoreError(f"the TR-31 block's mode of use {header.mode_of_use} does not allow "
                            f"decrypting working keys (expected one of {', '.join(TMK_MODES)})")
    return clear


def wrap_tmk(tmk: bytes | bytearray, kbpk: bytes | bytearray, *, version: str = "B") -> str:
    """A TR-31 block carrying `tmk` as a terminal master key (the key-injection side: tests and
    the development ceremony)."""
    from psec import tr31  # see unwrap_tmk

    header = f"{version}0000{TMK_USAGE}{TMK_ALGORITHM}B00E0000"
    return tr31.wrap(bytes(kbpk), header, bytes(tmk))
