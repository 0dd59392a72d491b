"""The PKCS#11 key store: every key of the terminal is an object in a token, used only through
token operations (python-pkcs11).

Objects, by label: `posfw-tmk` (terminal master key, DES2, token object) and `posfw-vault`
(card-vault key, AES-256, token object), both private, sensitive, non-extractable, not
modifiable; the working keys of the last sign-on as session objects `posfw-pik`, `posfw-mak`,
`posfw-mak-k1` (the MAK's first half as a DES2 key K1||K1, which is single DES: SoftHSM on
OpenSSL 3 has no single-DES mechanism) and `posfw-tdk`. They die with the session.

A token without CKM_AES_GCM (a TPM through tpm2-pkcs11) holds the card vault as two AES-256 keys
instead, `posfw-vault-enc` and `posfw-vault-mac`, and seals in drivers/keystore/vault_cbc.py's
format (AES-CBC, then AES-CMAC from the token's AES; a one-byte format tag): the store uses it
when the token has no AES-GCM and holds that pair (docs/qemu.md "The TPM").

Installing working keys (field 62: each key TDES-ECB under the TMK). A token whose
CKM_DES3_ECB can C_UnwrapKey gets the wrapped bytes and never shows them in clear. SoftHSM 2.6.1
cannot (it unwraps under AES keys only), so the fallback is C_Decrypt under the TMK followed by
C_CreateObject: the clear working key crosses this process for those two calls. They are made
through ctypes on python-pkcs11's own function list with one ctypes buffer that is zeroed at
once, because python-pkcs11 copies a C_Decrypt result and a template's values into buffers it
frees without wiping. docs/security.md says exactly this and no more.

Threads: one session per store and a lock around every token call (a PKCS#11 session runs one
operation at a time, and installing keys is several calls). Processes: python-pkcs11 0.10.1 does
nothing about fork. Tried here: in a forked child p11-kit's client refuses the inherited handles
(CKR_CRYPTOKI_NOT_INITIALIZED), while SoftHSM 2.6.1 goes on working on its copy of the parent's
state (two processes then write one token's files unknown to each other) and refuses a second
login (CKR_USER_ALREADY_LOGGED_IN). So a child must neither use a store it inherited nor open one
while that is open; the firmware does not fork while holding a store.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    PinIncorrect,
    PinLenRange,
    PinLocked,
    PKCS11Error,
)

from firmware.ports import (
    WORKING_KEY_ROLES,
    KeyCheckFailed,
    KeyMissing,
    KeyStatus,
    KeyStoreError,
    KeyStoreUnavailable,
    WrappedKey,
)

from .tr31 import unwrap_tmk
from .vault_cbc import ENC_KEY_LABEL, MAC_KEY_LABEL, CbcCmacVault

TMK_LABEL = "posfw-tmk"
VAULT_LABEL = "posfw-vault"
MAK_K1_LABEL = "posfw-mak-k1"
LABEL_PREFIX = "posfw-"
# Role -> session object label; "MAK1" is the single-DES form of the MAK (K1||K1).
WORKING_LABELS = {"PIK": "posfw-pik", "MAK": "posfw-mak", "MAK1": MAK_K1_LABEL, "TDK": "posfw-tdk"}
WORDS = {
    TMK_LABEL: "terminal master key",
    VAULT_LABEL: "card-data key",
    "posfw-pik": "PIN key",
    "posfw-mak": "MAC key",
    MAK_K1_LABEL: "MAC key, single-DES form",
    "posfw-tdk": "track data key",
    ENC_KEY_LABEL: "card-data encryption key",
    MAC_KEY_LABEL: "card-data MAC key",
}
NONCE_BYTES = 12
TAG_BITS = 128
ZERO_BLOCK = b"\x00" * 8

# What each job needs from the token, in words for status() and the errors.
_NEEDS = {
    Mechanism.DES3_ECB: (MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                         "CKM_DES3_ECB (triple-DES ECB): the master key and the working keys "
                         "cannot live in this token"),
    Mechanism.AES_GCM: (MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                        "CKM_AES_GCM: the card vault cannot use this token"),
}
_OPTIONAL = {
    Mechanism.DES3_CBC: "CKM_DES3_CBC: chained MACs run as one CKM_DES3_ECB call per block "
                        "(the chaining values are not key bytes)",
    Mechanism.AES_KEY_GEN: "CKM_AES_KEY_GEN: a card-vault key can only be imported, not "
                           "generated in the token",
}

# glibc settings under which freed heap memory is overwritten at once (perturb) and no freed
# chunk waits unwritten in a per-thread cache (tcache_count=0). With the C_Decrypt fallback
# through p11-kit's client (a token in another process), p11-kit 0.24 frees the RPC buffers that
# carried a clear working key without zeroing them; without these settings copies stay in the
# heap until reused (tests/test_keystore_memory_scan.py found them). glibc reads
# GLIBC_TUNABLES when the process starts, so the firmware's launcher sets it.
HEAP_TUNABLES = "glibc.malloc.perturb=165:glibc.malloc.tcache_count=0"


def heap_hardened(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process started with HEAP_TUNABLES' two settings (any perturb byte)."""
    tunables = dict(item.split("=", 1) for item in environ.get("GLIBC_TUNABLES", "").split(":")
                    if "=" in item)
    return tunables.get("glibc.malloc.perturb", "0") not in ("", "0") and \
        tunables.get("glibc.malloc.tcache_count") == "0"


# ---- the raw calls of the C_Decrypt fallback -----------------------------------------------

class _Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", ctypes.c_ulong), ("pParameter", ctypes.c_void_p),
                ("ulParameterLen", ctypes.c_ulong)]


class _Attr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_ulong), ("pValue", ctypes.c_void_p),
                ("ulValueLen", ctypes.c_ulong)]


class _SessionInfo(ctypes.Structure):
    _fields_ = [("slotID", ctypes.c_ulong), ("state", ctypes.c_ulong), ("flags", ctypes.c_ulong),
                ("ulDeviceError", ctypes.c_ulong)]


_RV = ctypes.c_ulong
# Positions in CK_FUNCTION_LIST (pkcs11f.h order, after the 2-byte version padded to 8).
_F_GET_SESSION_INFO, _F_CREATE_OBJECT, _F_DECRYPT_INIT, _F_DECRYPT = 15, 20, 33, 34
_CKS_RW_USER_FUNCTIONS = 3
# The layout this reads python-pkcs11's function list from (see _RawCalls.attach).
_LAYOUT_VERSION = "0.10.1"


class _RawCallFailed(PKCS11Error):
    """A raw call's return code (hex in the message: a code, never data)."""


class _RawCalls:
    """C_DecryptInit, C_Decrypt and C_CreateObject called through ctypes on the function list
    python-pkcs11 holds, so the clear bytes stay in one buffer this module owns and zeroes.

    python-pkcs11 keeps the CK_FUNCTION_LIST pointer in a private Cython field (first field after
    the object header of every Session/Token/Slot/lib). It cannot be had again from the module: a
    second C_GetFunctionList of p11-kit-client.so opens a new connection, whose sessions are
    not ours. So the pointer is read at that offset and accepted only if python-pkcs11 is the
    pinned version, the four objects agree, and C_GetSessionInfo on our session through it names
    our slot in a logged-in read/write state. Otherwise `attach` returns None and the store says
    in status() that the fallback goes through python-pkcs11's unwiped buffers.
    """

    def __init__(self, funclist: int) -> None:
        table = (ctypes.c_void_p * (_F_DECRYPT + 2)).from_address(funclist)
        fn = ctypes.CFUNCTYPE
        ul, vp = ctypes.c_ulong, ctypes.c_void_p
        self.get_session_info = fn(_RV, ul, ctypes.POINTER(_SessionInfo))(
            table[1 + _F_GET_SESSION_INFO])
        self.create_object = fn(_RV, ul, ctypes.POINTER(_Attr), ul, ctypes.POINTER(ul))(
            table[1 + _F_CREATE_OBJECT])
        self.decrypt_init = fn(_RV, ul, ctypes.POINTER(_Mechanism), ul)(table[1 + _F_DECRYPT_INIT])
        self.decrypt = fn(_RV, ul, vp, ul, vp, ctypes.POINTER(ul))(table[1 + _F_DECRYPT])

    @staticmethod
    def attach(session: Any, token: Any, slot: Any, lib: Any) -> _RawCalls | None:
        from importlib import metadata  # email, zipfile...: megabytes, at the first sign-on only

        try:
            if metadata.version("python-pkcs11") != _LAYOUT_VERSION:
                return None
        except metadata.PackageNotFoundError:
            return None
        offset = object.__basicsize__  # PyObject_HEAD; the Cython fields follow it
        found = {ctypes.c_void_p.from_address(id(o) + offset).value
                 for o in (session, token, slot, lib)}
        if len(found) != 1 or not (ptr := found.pop()):
            return None
        major = ctypes.c_ubyte.from_address(ptr).value
        if major not in (2, 3):
            return None
        raw = _RawCalls(ptr)
        info = _SessionInfo()
        if raw.get_session_info(session.handle, ctypes.byref(info)) != 0:
            return None
        if info.slotID != slot.slot_id or info.state != _CKS_RW_USER_FUNCTIONS:
            return None
        return raw

    def decrypt_into(self, session: int, key: int, wrapped: bytes, out: ctypes.Array) -> None:
        mech = _Mechanism(int(Mechanism.DES3_ECB), None, 0)
        rv = self.decrypt_init(session, ctypes.byref(mech), key)
        if rv != 0:
            raise _RawCallFailed(f"C_DecryptInit returned 0x{rv:08X}")
        n = ctypes.c_ulong(len(out))
        rv = self.decrypt(session, wrapped, len(wrapped), ctypes.addressof(out), ctypes.byref(n))
        if rv != 0 or n.value != len(wrapped):
            raise _RawCallFailed(f"C_Decrypt returned 0x{rv:08X}")

    def create_secret(self, session: int, template: dict[int, Any], value: ctypes.Array) -> int:
        """C_CreateObject with CKA_VALUE pointing at `value` (no copy on the Python side)."""
        keep: list[Any] = []
        attrs = (_Attr * (len(template) + 1))()
        for i, (kind, v) in enumerate(template.items()):
            if isinstance(v, bool):
                c: Any = ctypes.c_ubyte(1 if v else 0)
            elif isinstance(v, int):
                c = ctypes.c_ulong(v)
            else:
                c = ctypes.create_string_buffer(bytes(v), len(v))
            keep.append(c)
            attrs[i] = _Attr(kind, ctypes.addressof(c), ctypes.sizeof(c))
        attrs[len(template)] = _Attr(int(Attribute.VALUE), ctypes.addressof(value),
                                     ctypes.sizeof(value))
        handle = ctypes.c_ulong(0)
        rv = self.create_object(session, attrs, len(template) + 1, ctypes.byref(handle))
        if rv != 0:
            raise _RawCallFailed(f"C_CreateObject returned 0x{rv:08X}")
        return handle.value


def _cbc_over_ecb(ecb: Any, iv: bytes, data: bytes) -> bytes:
    """CBC encryption as one ECB call per 16-byte block (each block's input depends on the last
    block's output, so one call each)."""
    out, prev = bytearray(), iv
    for i in range(0, len(data), 16):
        prev = ecb(bytes(a ^ b for a, b in zip(data[i:i + 16], prev, strict=True)))
        out += prev
    return bytes(out)


def _xor_chain(decrypted: bytes, iv: bytes, data: bytes) -> bytes:
    """CBC decryption from the ECB decryption of all blocks (one call): block i XOR the
    ciphertext block before it (the IV for the first)."""
    chain = iv + data[:-16]
    return bytes(a ^ b for a, b in zip(decrypted, chain, strict=True))


def _zero(buf: ctypes.Array | bytearray) -> None:
    if isinstance(buf, bytearray):
        n = len(buf)
        if n:
            ctypes.memset((ctypes.c_char * n).from_buffer(buf), 0, n)
    else:
        ctypes.memset(ctypes.addressof(buf), 0, ctypes.sizeof(buf))


# ---- one library per module path ------------------------------------------------------------
#
# SoftHSM reads SOFTHSM2_CONF and p11-kit-client.so P11_KIT_SERVER_ADDRESS when they are loaded
# and initialised; a process (a test run) that opens stores on different tokens one after the
# other must load the module afresh once no store uses it.

_LIBS_LOCK = threading.Lock()
_STORES: dict[str, weakref.WeakSet[Pkcs11KeyStore]] = {}
# What a module reads from the environment when it is loaded: a store opened later in the same
# process must see the same, or it would silently get another configuration's token.
_ENV_READ = ("SOFTHSM2_CONF", "P11_KIT_SERVER_ADDRESS", "TPM2_PKCS11_STORE", "TPM2_PKCS11_TCTI")
_LOADED_WITH: dict[str, tuple[str | None, ...]] = {}


def _load(module: str) -> Any:
    if not Path(module).exists():
        raise KeyStoreUnavailable(f"the PKCS#11 module {module} does not exist: install its "
                                  "package (softhsm2 for SoftHSM2) or fix the board's "
                                  "token_module")
    live = _STORES.setdefault(module, weakref.WeakSet())
    env = tuple(os.environ.get(name) for name in _ENV_READ)
    if any(s.is_open for s in live):
        if _LOADED_WITH.get(module) != env:
            raise KeyStoreUnavailable(f"the PKCS#11 module {module} is in use in this process "
                                      f"with another configuration ({', '.join(_ENV_READ)}): "
                                      "close the other key store first")
    else:
        pkcs11.unload(module)
    try:
        lib = pkcs11.lib(module)
    except PKCS11Error as exc:
        raise KeyStoreUnavailable(f"the PKCS#11 module {module} cannot be loaded or initialised "
                                  f"({type(exc).__name__}: {exc}); for SoftHSM2 check "
                                  "SOFTHSM2_CONF and its token directory, for p11-kit-client.so "
                                  "P11_KIT_SERVER_ADDRESS and the server") from None
    _LOADED_WITH[module] = env
    return lib


# ---- the store --------------------------------------------------------------------------------

class Pkcs11KeyStore:
    """firmware.ports.KeyStore over a PKCS#11 token (see the module docstring)."""

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        self.module, self.token_label = module, token_label
        self._lock = threading.RLock()
        self._session: Any = None
        self._tmk: Any = None
        self._vault: Any = None
        self._cbc: CbcCmacVault | None = None  # the vault on a token without AES-GCM
        self._cbc_token = False  # no AES-GCM, but AES-ECB and AES-CBC: the CBC vault's kind
        self._tmk_cv: str | None = None
        self._working: dict[str, Any] = {}
        self._raw: _RawCalls | None = None
        with _LIBS_LOCK:
            lib = _load(module)
            try:
                token = lib.get_token(token_label=token_label)
            except NoSuchToken:
                seen = self._labels(lib)
                raise KeyStoreUnavailable(
                    f"the key token '{token_label}' is not present in {module} (tokens seen: "
                    f"{', '.join(repr(s) for s in seen) if seen else 'none'}); check the token "
                    "is initialised and its configuration (SOFTHSM2_CONF for SoftHSM2)") from None
            except MultipleTokensReturned:
                raise KeyStoreUnavailable(f"more than one token is labelled '{token_label}' in "
                                          f"{module}: give each its own label") from None
            except PKCS11Error as exc:
                raise KeyStoreUnavailable(f"the PKCS#11 module {module} cannot list its tokens "
                                          f"({type(exc).__name__})") from None
            try:
                self._session = token.open(rw=True, user_pin=pin)
            except (PinIncorrect, PinLenRange):
                raise KeyStoreUnavailable(f"the key token '{token_label}' refused the PIN it was "
                                          "given: check the board's token_pin source") from None
            except PinLocked:
                raise KeyStoreUnavailable(f"the key token '{token_label}' has locked its user "
                                          "PIN after wrong attempts: the security officer must "
                                          "reset it") from None
            except PKCS11Error as exc:
                raise KeyStoreUnavailable(f"the key token '{token_label}' cannot be opened "
                                          f"({type(exc).__name__})") from None
            _STORES[module].add(self)
        self._token, self._slot = token, token.slot
        self._where = (f"{token.manufacturer_id.strip()} {token.model.strip()} token "
                       f"'{token_label}' in slot {self._slot.slot_id} ({module})")
        self._missing: set[Mechanism] = set()
        self._notes: list[str] = []
        self._unwrap = False
        try:
            with self._call("read its mechanisms and keys"):
                self._missing, self._notes = self._probe()
                if lib.manufacturer_id.strip() == "PKCS#11 Kit":
                    self._notes.append("the token is reached through p11-kit's client: p11-kit "
                                       "before 0.25 forwards only mechanisms without parameters")
                self._raw = _RawCalls.attach(self._session, token, self._slot, lib)
                self._unwrap = self._can_unwrap()
                self._tmk = self._find(TMK_LABEL)
                self._vault = self._find(VAULT_LABEL)
                self._cbc = self._cbc_vault()
                if self._tmk is not None:
                    self._tmk_cv = self._cv(self._tmk).hex().upper()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore({self.token_label!r} in {self.module})"

    @staticmethod
    def _labels(lib: Any) -> list[str]:
        try:
            labels = [s.get_token().label for s in lib.get_slots(token_present=True)]
        except PKCS11Error:
            return []
        return [label for label in labels if label]  # SoftHSM's spare slot has a blank one

    @property
    def is_open(self) -> bool:
        return self._session is not None

    # ---- token plumbing ----

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """The lock, and a PKCS#11 error turned into words (its class name: python-pkcs11's
        messages are empty or return codes, never data)."""
        with self._lock:
            if self._session is None:
                raise KeyStoreUnavailable(f"the key store on token '{self.token_label}' is closed")
            try:
                yield
            except PKCS11Error as exc:
                why = str(exc) if isinstance(exc, _RawCallFailed) else type(exc).__name__
                raise KeyStoreUnavailable(f"the key token '{self.token_label}' failed to {what} "
                                          f"({why})") from None

    def _probe(self) -> tuple[set[Mechanism], list[str]]:
        have = self._slot.get_mechanisms()
        missing: set[Mechanism] = set()
        notes: list[str] = []
        for mech, (flags, words) in _NEEDS.items():
            ok = mech in have and (self._slot.get_mechanism_info(mech).flags & flags) == flags
            if not ok:
                missing.add(mech)
                notes.append(f"missing {words}")
        for mech, words in _OPTIONAL.items():
            if mech not in have:
                missing.add(mech)
                notes.append(f"missing {words}")
        return missing, notes

    def _can_unwrap(self) -> bool:
        """Whether C_UnwrapKey(CKM_DES3_ECB) works. The UNWRAP flag alone is not trusted:
        SoftHSM 2.6.1 ORs its DES3 flags into an uninitialised field (so the flag shows at
        random) and returns CKR_MECHANISM_INVALID for the call; a trial under a throwaway
        session key settles it."""
        if Mechanism.DES3_ECB in self._missing:
            return False
        info = self._slot.get_mechanism_info(Mechanism.DES3_ECB)
        if not info.flags & MechanismFlag.UNWRAP or \
                Mechanism.DES2_KEY_GEN not in self._slot.get_mechanisms():
            return False
        try:
            trial = self._session.generate_key(KeyType.DES2, store=False, label="posfw-trial",
                                               template={Attribute.UNWRAP: True,
                                                         Attribute.SENSITIVE: True,
                                                         Attribute.EXTRACTABLE: False})
        except PKCS11Error:
            return False
        try:
            made = trial.unwrap_key(ObjectClass.SECRET_KEY, KeyType.DES2, bytes(16),
                                    label="posfw-trial", store=False,
                                    mechanism=Mechanism.DES3_ECB)
        except PKCS11Error:
            return False
        else:
            made.destroy()
            return True
        finally:
            trial.destroy()

    def _cbc_vault(self) -> CbcCmacVault | None:
        """The CBC + CMAC vault over posfw-vault-enc / posfw-vault-mac, when this token has no
        AES-GCM but AES-ECB (and AES-CBC, or CBC is chained here over ECB calls: p11-kit's
        client before 0.25 forwards no CBC IV) and holds that pair; else None."""
        if Mechanism.AES_GCM not in self._missing:
            return None
        have = self._slot.get_mechanisms()
        if Mechanism.AES_ECB not in have:
            return None
        enc, mac = self._find(ENC_KEY_LABEL), self._find(MAC_KEY_LABEL)
        if Mechanism.AES_CBC not in have and (enc is None or mac is None):
            return None  # an ECB-only route to a GCM token (p11-kit's client): say no AES-GCM
        self._cbc_token = True
        if enc is None or mac is None:
            return None
        self._notes = [n for n in self._notes if "CKM_AES_GCM" not in n]
        self._notes.append(f"the card vault is AES-CBC then AES-CMAC under {ENC_KEY_LABEL} and "
                           f"{MAC_KEY_LABEL} (this token has no AES-GCM; the CMAC's chaining "
                           "values pass through this process, never the keys)")
        if Mechanism.AES_CBC not in have:
            self._notes.append("this token has no AES-CBC: the vault's CBC is chained here over "
                               "one AES-ECB call per block (the chaining values are ciphertext, "
                               "not key bytes)")
            return CbcCmacVault(
                cbc_encrypt=lambda iv, data: _cbc_over_ecb(
                    lambda block: bytes(enc.encrypt(block, mechanism=Mechanism.AES_ECB)),
                    iv, data),
                cbc_decrypt=lambda iv, data: _xor_chain(
                    bytes(enc.decrypt(data, mechanism=Mechanism.AES_ECB)), iv, data),
                ecb_encrypt=lambda block: bytes(mac.encrypt(block, mechanism=Mechanism.AES_ECB)))
        # seal/unseal hold the store's lock around these and turn PKCS#11 errors into words.
        return CbcCmacVault(
            cbc_encrypt=lambda iv, data: bytes(enc.encrypt(data, mechanism=Mechanism.AES_CBC,
                                                           mechanism_param=iv)),
            cbc_decrypt=lambda iv, data: bytes(enc.decrypt(data, mechanism=Mechanism.AES_CBC,
                                                           mechanism_param=iv)),
            ecb_encrypt=lambda block: bytes(mac.encrypt(block, mechanism=Mechanism.AES_ECB)),
            # one token call for the whole CMAC chain (a TPM call takes milliseconds)
            mac_cbc_encrypt=lambda iv, data: bytes(mac.encrypt(data, mechanism=Mechanism.AES_CBC,
                                                               mechanism_param=iv)))

    def _find(self, label: str, id_: bytes | None = None) -> Any:
        try:
            return self._session.get_key(ObjectClass.SECRET_KEY, label=label, id=id_)
        except NoSuchKey:
            return None
        except pkcs11.exceptions.MultipleObjectsReturned:
            raise KeyStoreError(f"the token holds more than one object labelled {label}: "
                                "destroy the extra ones (or all keys) and provision again") \
                from None

    @staticmethod
    def _cv(key: Any) -> bytes:
        return bytes(key.encrypt(ZERO_BLOCK, mechanism=Mechanism.DES3_ECB)[:4])

    def _need(self, mech: Mechanism, job: str) -> None:
        if mech in self._missing:
            raise KeyStoreUnavailable(f"the key token '{self.token_label}' cannot {job}: it has "
                                      f"no {mech.name} mechanism (see the key store status)")

    @staticmethod
    def _template(key_type: int, label: str, id_: bytes, *, token: bool,
                  uses: tuple[Attribute, ...]) -> dict[int, Any]:
        """The attributes of every key object here: private, sensitive, non-extractable, not
        modifiable or copyable, and only the uses named."""
        tpl: dict[int, Any] = {
            int(Attribute.CLASS): int(ObjectClass.SECRET_KEY),
            int(Attribute.KEY_TYPE): int(key_type),
            int(Attribute.TOKEN): token,
            int(Attribute.PRIVATE): True,
            int(Attribute.SENSITIVE): True,
            int(Attribute.EXTRACTABLE): False,
            int(Attribute.MODIFIABLE): False,
            int(Attribute.COPYABLE): False,
            int(Attribute.LABEL): label.encode(),
            int(Attribute.ID): id_,
        }
        for use in (Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.WRAP, Attribute.UNWRAP,
                    Attribute.SIGN, Attribute.VERIFY, Attribute.DERIVE):
            tpl[int(use)] = use in uses
        return tpl

    @staticmethod
    def _pkcs11_template(tpl: dict[int, Any]) -> dict[Attribute, Any]:
        """The template for python-pkcs11's generate/unwrap, which set class, type, label, id
        and token from their own arguments."""
        own = {Attribute.CLASS, Attribute.KEY_TYPE, Attribute.LABEL, Attribute.ID,
               Attribute.TOKEN}
        return {Attribute(k): v for k, v in tpl.items() if Attribute(k) not in own}

    def _create_from(self, tpl: dict[int, Any], value: ctypes.Array) -> Any:
        """A key object holding the bytes of `value` (a ctypes buffer the caller zeroes)."""
        label, id_ = tpl[int(Attribute.LABEL)].decode(), tpl[int(Attribute.ID)]
        if self._raw is not None:
            self._raw.create_secret(self._session.handle, tpl, value)
            key = self._find(label, id_)
            if key is None:
                raise KeyStoreError(f"the token did not keep the new object {label}")
            return key
        # python-pkcs11 copies the value into buffers it frees unwiped; status() says so.
        attrs = {Attribute(k): v for k, v in tpl.items()}
        attrs[Attribute.LABEL] = label
        attrs[Attribute.VALUE] = bytes(value)
        return self._session.create_object(attrs)

    def _decrypt_under_tmk(self, wrapped: bytes, out: ctypes.Array) -> None:
        if self._raw is not None:
            self._raw.decrypt_into(self._session.handle, self._tmk.handle, wrapped, out)
            return
        clear = self._tmk.decrypt(wrapped, mechanism=Mechanism.DES3_ECB, buffer_size=16)
        ctypes.memmove(out, clear, len(clear))
        del clear

    # ---- provisioning (not part of the KeyStore Protocol) ----

    def install_tmk(self, clear: bytearray) -> str:
        """Store `clear` (16 bytes) as the terminal master key, replacing any other; wipes the
        argument; returns the new TMK's check value (hex). The working keys are forgotten (they
        came under the old TMK): sign on again."""
        try:
            if len(clear) != 16:
                raise KeyStoreError(f"a terminal master key is 16 bytes (double-length DES), "
                                    f"not {len(clear)}")
            self._need(Mechanism.DES3_ECB, "hold a terminal master key")
            with self._call("store the terminal master key"):
                value = (ctypes.c_char * 16).from_buffer(clear)
                tpl = self._template(KeyType.DES2, TMK_LABEL, os.urandom(8), token=True,
                                     uses=(Attribute.DECRYPT, Attribute.UNWRAP, Attribute.ENCRYPT))
                new = self._create_from(tpl, value)
                del value
                self._destroy_others(TMK_LABEL, keep=new)
                self._tmk = new
                self._tmk_cv = self._cv(new).hex().upper()
                self._drop_working()
                return self._tmk_cv
        finally:
            _zero(clear)

    def import_tmk_tr31(self, block: str, kbpk: bytearray) -> str:
        """Unwrap a TR-31 block (usage K0, triple DES) under the key-block protection key with
        psec in this process (drivers/keystore/tr31.py), then install_tmk. Wipes `kbpk`."""
        try:
            clear = unwrap_tmk(block, kbpk)
        finally:
            _zero(kbpk)
        return self.install_tmk(clear)

    def create_vault_key(self, import_key: bytearray | None = None) -> None:
        """Make the card-vault key: generated in the token, or imported from 32 bytes (a
        development journal's keys/card.key, so its sealed PANs stay readable); wipes the
        argument. Refused when the token already holds one: a new key would orphan every
        sealed PAN (destroy_all first, on deregistration)."""
        try:
            if import_key is not None and len(import_key) != 32:
                raise KeyStoreError(f"a card-vault key is 32 bytes (AES-256), not "
                                    f"{len(import_key)}")
            if Mechanism.AES_GCM in self._missing:
                raise KeyStoreError(
                    f"the token '{self.token_label}' has no AES-GCM: its card vault is the pair "
                    f"{ENC_KEY_LABEL} / {MAC_KEY_LABEL} (AES-CBC + AES-CMAC), made when the "
                    "token is initialised (tpm2_ptool addkey on a TPM, docs/qemu.md); a "
                    "development card.key cannot move into it")
            self._need(Mechanism.AES_GCM, "hold the card-vault key")
            with self._call("create the card-vault key"):
                if self._find(VAULT_LABEL) is not None:
                    raise KeyStoreError(f"the token '{self.token_label}' already holds a "
                                        "card-vault key: a second one would make the sealed card "
                                        "numbers unreadable")
                tpl = self._template(KeyType.AES, VAULT_LABEL, os.urandom(8), token=True,
                                     uses=(Attribute.ENCRYPT, Attribute.DECRYPT))
                if import_key is not None:
                    value = (ctypes.c_char * 32).from_buffer(import_key)
                    self._vault = self._create_from(tpl, value)
                    del value
                else:
                    self._need(Mechanism.AES_KEY_GEN, "generate a card-vault key")
                    self._vault = self._session.generate_key(
                        KeyType.AES, 256, store=True, label=VAULT_LABEL,
                        id=tpl[int(Attribute.ID)], template=self._pkcs11_template(tpl))
        finally:
            if import_key is not None:
                _zero(import_key)

    # ---- HostKeys ----

    async def install_working_keys(self, keys: list[WrappedKey]) -> None:
        for k in keys:
            if k.role not in WORKING_KEY_ROLES or len(k.wrapped) != 16:
                raise KeyStoreError(f"a working key must be one of {WORKING_KEY_ROLES} and "
                                    "16 bytes wrapped")
        self._need(Mechanism.DES3_ECB, "install working keys")
        with self._call("install the working keys"):
            if self._tmk is None:
                raise KeyMissing(f"the token '{self.token_label}' holds no terminal master key "
                                 f"({TMK_LABEL}): load one (docs/provisioning.md)")
            id_ = os.urandom(8)  # tells this sign-on's objects from the last one's
            fresh: dict[str, Any] = {}
            try:
                for k in keys:
                    made = self._install_one(k, id_)
                    fresh.update(made)
                    check_key = made["MAK1"] if k.role == "MAK" and k.check_first8 \
                        else made[k.role]
                    got = self._cv(check_key)
                    if got != k.check_value:
                        raise KeyCheckFailed(k.role, k.check_value, got)
            except BaseException:
                for obj in fresh.values():
                    self._quiet_destroy(obj)
                raise
            self._drop_working()
            self._working = fresh

    def _install_one(self, k: WrappedKey, id_: bytes) -> dict[str, Any]:
        """The session object(s) for one wrapped key: for the MAK also its K1||K1 form."""
        tpl = self._template(KeyType.DES2, WORKING_LABELS[k.role], id_, token=False,
                             uses=(Attribute.ENCRYPT,))
        tpl1 = dict(tpl)
        tpl1[int(Attribute.LABEL)] = MAK_K1_LABEL.encode()
        out: dict[str, Any] = {}
        if self._unwrap:
            def unwrap(data: bytes, t: dict[int, Any]) -> Any:
                return self._tmk.unwrap_key(ObjectClass.SECRET_KEY, KeyType.DES2, data,
                                            label=t[int(Attribute.LABEL)].decode(),
                                            id=t[int(Attribute.ID)], store=False,
                                            mechanism=Mechanism.DES3_ECB,
                                            template=self._pkcs11_template(t))
            out[k.role] = unwrap(k.wrapped, tpl)
            if k.role == "MAK":
                # ECB: the first 8 wrapped bytes alone are E_TMK(K1), so c1||c1 unwraps to K1||K1.
                out["MAK1"] = unwrap(k.wrapped[:8] * 2, tpl1)
            return out
        clear = (ctypes.c_char * 16)()
        try:
            self._decrypt_under_tmk(k.wrapped, clear)
            out[k.role] = self._create_from(tpl, clear)
            if k.role == "MAK":
                ctypes.memmove(ctypes.addressof(clear) + 8, clear, 8)  # K1||K2 -> K1||K1
                out["MAK1"] = self._create_from(tpl1, clear)
        except BaseException:
            for obj in out.values():
                self._quiet_destroy(obj)
            raise
        finally:
            _zero(clear)
        return out

    def forget_working_keys(self) -> None:
        with self._lock:
            if self._session is not None:
                self._drop_working()
            self._working = {}

    def _drop_working(self) -> None:
        for obj in self._working.values():
            self._quiet_destroy(obj)
        self._working = {}

    @staticmethod
    def _quiet_destroy(obj: Any) -> None:
        with suppress(PKCS11Error):  # a session object goes with the session anyway
            obj.destroy()

    def has_working_key(self, role: str) -> bool:
        return role in self._working

    def _key(self, role: str) -> Any:
        try:
            return self._working[role]
        except KeyError:
            raise KeyMissing(f"no {role}: sign on first") from None

    async def mac_cipher(self, data: bytes, *, double: bool, chain: bool) -> bytes:
        if len(data) % 8:
            raise KeyStoreError("MAC data must be a multiple of 8 bytes")
        with self._call("compute a MAC"):
            key = self._key("MAK" if double else "MAK1")
            if not chain:
                return bytes(key.encrypt(bytes(data), mechanism=Mechanism.DES3_ECB))
            if Mechanism.DES3_CBC not in self._missing:
                return bytes(key.encrypt(bytes(data), mechanism=Mechanism.DES3_CBC,
                                         mechanism_param=ZERO_BLOCK))
            # CBC by hand over ECB calls (p11-kit 0.24's RPC carries no CBC IV parameter).
            out, prev = bytearray(), 0
            for i in range(0, len(data), 8):
                block = (int.from_bytes(data[i:i + 8], "big") ^ prev).to_bytes(8, "big")
                enc = key.encrypt(block, mechanism=Mechanism.DES3_ECB)
                out += enc
                prev = int.from_bytes(enc, "big")
            return bytes(out)

    async def encrypt_pin(self, pin: str, pan: str) -> bytes:
        try:
            from psec.pinblock import encode_pinblock_iso_0  # psec loads cryptography: not at idle

            block = encode_pinblock_iso_0(pin, pan)
        except ValueError:
            raise KeyStoreError("a PIN must be 4-12 digits and the PAN at least 13 digits") \
                from None
        with self._call("encrypt a PIN block"):
            return bytes(self._key("PIK").encrypt(block, mechanism=Mechanism.DES3_ECB))

    async def encrypt_track_block(self, block: bytes) -> bytes:
        if len(block) != 8:
            raise KeyStoreError("track data is encrypted one 8-byte block at a time")
        with self._call("encrypt track data"):
            return bytes(self._key("TDK").encrypt(bytes(block), mechanism=Mechanism.DES3_ECB))

    # ---- VaultKeys ----

    def _vault_key(self) -> Any:
        self._need(Mechanism.AES_GCM, "seal card numbers")
        if self._vault is None:
            raise KeyMissing(f"the token '{self.token_label}' holds no card-vault key "
                             f"({VAULT_LABEL}): provision the terminal")
        return self._vault

    def _cbc_keys(self) -> CbcCmacVault:
        if self._cbc is None:
            raise KeyMissing(f"the token '{self.token_label}' holds no card-vault keys "
                             f"({ENC_KEY_LABEL}, {MAC_KEY_LABEL}): provision the terminal")
        return self._cbc

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        if self._cbc_token:
            with self._call("seal a card number"):
                return self._cbc_keys().seal(bytes(plain), bytes(aad))
        nonce = os.urandom(NONCE_BYTES)
        with self._call("seal a card number"):
            ct = self._vault_key().encrypt(bytes(plain), mechanism=Mechanism.AES_GCM,
                                           mechanism_param=pkcs11.GCMParams(nonce, bytes(aad),
                                                                            TAG_BITS))
        return nonce + bytes(ct)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        if self._cbc_token:
            with self._call("open a sealed card number"):
                return self._cbc_keys().unseal(bytes(blob), bytes(aad))
        if len(blob) < NONCE_BYTES + TAG_BITS // 8:
            raise KeyStoreError("an encrypted card number is too short to be one")
        with self._call("open a sealed card number"):
            key = self._vault_key()
            try:
                return bytes(key.decrypt(bytes(blob[NONCE_BYTES:]), mechanism=Mechanism.AES_GCM,
                                         mechanism_param=pkcs11.GCMParams(
                                             bytes(blob[:NONCE_BYTES]), bytes(aad), TAG_BITS)))
            except PKCS11Error:
                # SoftHSM reports a wrong tag as CKR_GENERAL_ERROR, others as
                # CKR_ENCRYPTED_DATA_INVALID: either way the blob does not open under this key.
                raise KeyStoreError("an encrypted card number failed its integrity check") \
                    from None

    # ---- the rest ----

    def status(self) -> KeyStatus:
        notes = list(self._notes)
        if not self.is_open:
            return KeyStatus(kind="pkcs11", where=self._where, tmk_check=None, vault_key=False,
                             notes=("closed",))
        if self._unwrap:
            notes.append("working keys are unwrapped inside the token (C_UnwrapKey)")
        elif Mechanism.DES3_ECB not in self._missing:  # else no working key comes here at all
            how = ("through one buffer that is zeroed at once" if self._raw is not None else
                   "through python-pkcs11's buffers, which are freed without being zeroed")
            notes.append("this token cannot unwrap under a DES key: each working key is "
                         "decrypted under the master key and created as a session object, so its "
                         f"clear value crosses this process at sign-on, {how}")
            if not heap_hardened():
                notes.append("freed heap memory is not overwritten in this process (start it "
                             f"with GLIBC_TUNABLES={HEAP_TUNABLES}): copies the PKCS#11 library "
                             "makes of a working key in transit may stay until reused")
        return KeyStatus(kind="pkcs11", where=self._where, tmk_check=self._tmk_cv,
                         vault_key=self._vault is not None or self._cbc is not None,
                         working_keys=tuple(r for r in WORKING_KEY_ROLES if r in self._working),
                         notes=tuple(notes))

    def destroy_all(self) -> list[str]:
        done: list[str] = []
        with self._call("destroy its keys"):
            self._working, self._tmk, self._vault, self._tmk_cv = {}, None, None, None
            self._cbc = None
            for obj in list(self._session.get_objects()):
                try:
                    label = obj[Attribute.LABEL]
                    is_token = bool(obj[Attribute.TOKEN])
                except PKCS11Error:
                    continue
                if not isinstance(label, str) or not label.startswith(LABEL_PREFIX):
                    continue
                obj.destroy()
                kind = "token object" if is_token else "session object"
                done.append(f"{WORDS.get(label, 'key')} ({kind} {label})")
        return done

    def _destroy_others(self, label: str, *, keep: Any) -> None:
        for obj in list(self._session.get_objects({Attribute.LABEL: label})):
            if obj.handle != keep.handle:
                obj.destroy()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            self._working, self._tmk, self._vault = {}, None, None
            self._cbc = None
            self._raw = None
            if session is None:
                return
            # Logs out; the session objects (working keys) go with it. A token that went away
            # has closed it already.
            with suppress(PKCS11Error):
                session.close()
