"""The key store of a board with an encrypting PIN pad (key_store "pinpad"): the acquirer's DES
keys (TMK, PIK, MAK, TDK) in the PIN pad on the reader link, the card-vault key in the token.

One firmware.ports.KeyStore over two halves the board's drivers give (firmware/app/devices.py
picks them): `host`, the PIN pad (HostKeys and PinPad: drivers/keystore/pinpad.py), and `vault`,
the token (VaultKeys: drivers/keystore/pkcs11.py). What the pad holds is learnt over its link,
which is asynchronous, so refresh() asks it (the terminal calls it before its start-up check) and
destroy_pad() erases it (deregistration); status() and destroy_all() are the synchronous rest.
Nothing here holds a key.
"""

from __future__ import annotations

from typing import Any, Protocol

from firmware.ports import KeyStatus, KeyStore, PinPad, PinResult, WrappedKey


class PadHalf(Protocol):
    """The PIN pad half: HostKeys + PinPad, and the status it last learnt."""

    async def install_working_keys(self, keys: list[WrappedKey]) -> None: ...

    def forget_working_keys(self) -> None: ...

    def has_working_key(self, role: str) -> bool: ...

    async def mac_cipher(self, data: bytes, *, double: bool, chain: bool) -> bytes: ...

    async def encrypt_pin(self, pin: str, pan: str) -> bytes: ...

    async def encrypt_track_block(self, block: bytes) -> bytes: ...

    async def enter_pin(self, pan: str, prompt: str, *, timeout: float,
                        allow_empty: bool) -> PinResult: ...

    async def cancel_pin(self) -> None: ...

    async def load_tmk_tr31(self, block: str) -> str: ...

    async def pad_status(self) -> Any: ...

    async def destroy_keys(self) -> list[str]: ...

    def key_status(self) -> KeyStatus: ...

    async def close(self) -> None: ...


class SplitKeyStore:
    """firmware.ports.KeyStore (and PinPad) of a PIN pad board (see the module docstring)."""

    def __init__(self, host: PadHalf, vault: KeyStore) -> None:
        self.host, self.vault = host, vault

    def __repr__(self) -> str:
        return f"SplitKeyStore(host={self.host!r}, vault={self.vault!r})"

    @property
    def pinpad(self) -> PinPad:
        return self.host  # type: ignore[return-value]

    async def refresh(self) -> None:
        """What the pad holds, asked over its link (KeyStoreUnavailable when it does not answer)."""
        await self.host.pad_status()

    # ---- HostKeys: the PIN pad ----

    async def install_working_keys(self, keys: list[WrappedKey]) -> None:
        await self.host.install_working_keys(keys)

    def forget_working_keys(self) -> None:
        self.host.forget_working_keys()

    def has_working_key(self, role: str) -> bool:
        return self.host.has_working_key(role)

    async def mac_cipher(self, data: bytes, *, double: bool, chain: bool) -> bytes:
        return await self.host.mac_cipher(data, double=double, chain=chain)

    async def encrypt_pin(self, pin: str, pan: str) -> bytes:
        return await self.host.encrypt_pin(pin, pan)  # refused: a PIN pad takes no clear PIN

    async def encrypt_track_block(self, block: bytes) -> bytes:
        return await self.host.encrypt_track_block(block)

    # ---- VaultKeys: the token ----

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        return self.vault.seal(plain, aad)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        return self.vault.unseal(blob, aad)

    # ---- the rest ----

    def status(self) -> KeyStatus:
        pad, token = self.host.key_status(), self.vault.status()
        notes = [n for n in pad.notes if "card-vault key" not in n]
        # The token's notes on working keys are not this board's: they live in the pad.
        notes += [f"card-vault key: {n}" for n in token.notes if "working key" not in n]
        return KeyStatus(kind="split", where=f"{pad.where}; card-vault key in {token.where}",
                         tmk_check=pad.tmk_check, vault_key=token.vault_key,
                         working_keys=pad.working_keys, notes=tuple(notes))

    def destroy_all(self) -> list[str]:
        """The token's objects (the card-vault key); the pad's keys go by destroy_pad()."""
        return self.vault.destroy_all()

    async def destroy_pad(self) -> list[str]:
        return await self.host.destroy_keys()

    async def load_tmk_tr31(self, block: str) -> str:
        return await self.host.load_tmk_tr31(block)

    def close(self) -> None:
        self.vault.close()

    async def aclose(self) -> None:
        await self.host.close()
        self.close()
