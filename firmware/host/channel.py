"""TCP link to the acquirer host: HostChannel (connection + MUX) and HostLink (session).

Theory of operation: one background reader task per connection turns frames into
Decoded messages and hands each to the one outstanding request if its `accept`
says it matches (jPOS MUX idea); anything else is a stray, logged and dropped.
A frame that cannot be decoded means framing can no longer be trusted: the
waiter gets NoReply(MALFORMED) and the connection is closed. HostLink adds the
working keys (installed in the terminal's key store, firmware/ports.py HostKeys: the link
never holds a key), the MAC (comms.mac_algorithm), track encryption (comms.track_encryption),
the CUP matching rule (MTI + 10, fields 11/41/42, amount) and the "sign on again" signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Final

from firmware.ports import HostKeys, KeyCheckFailed, KeyStoreError

from .codec import Decoded, decode, encode_async, verify_mac_async
from .errors import (
    KeyStoreFailed,
    LocalProtocolError,
    NoReply,
    RemoteProtocolError,
    TlsRefused,
)
from .framing import MAX_FRAME, read_frame
from .keys import DEFAULT_MAK_CHECK, MAK_CHECK_CONVENTIONS, key_check_error, signon_entries
from .mac import DEFAULT_MAC_ALGORITHM, MAC_ALGORITHMS, store_mac
from .messages import Message, Terminal, reply_needs_mac, signon_request, with_tracks_encrypted
from .spec import TRACK_FIELDS

__all__ = ["SIGN_ON_CODES", "HostChannel", "HostLink"]

log = logging.getLogger("posfw.host")

# Response codes after which the host expects a fresh sign-on (section 7).
SIGN_ON_CODES: Final = frozenset({"22", "77", "99", "A0"})

_Waiter = tuple[Callable[[Decoded], bool], asyncio.Future[Decoded]]


# OpenSSL's verification codes a refused host certificate meets most, in words for support.
_CERT_WORDS: Final[dict[int, str]] = {
    18: "it is self-signed, not from the acquirer's pinned CA",
    19: "it is not from the acquirer's pinned CA",
    20: "it is not from the acquirer's pinned CA",
    21: "it is not from the acquirer's pinned CA",
    9: "it is not valid yet",
    10: "it has expired",
    62: "it names another host",
    64: "it names another host (IP address)",
}


class HostChannel:
    """One TCP connection to the host, opened on demand, one request at a time."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 10.0,
                 max_frame: int = MAX_FRAME, connect_attempts: int = 1,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        self.host = host
        self.port = port
        # TLS to the acquirer (firmware/host/tls.py): the context pins its CA; server_name is
        # the name its certificate must carry (default: host).
        self.tls = tls
        self.server_name = server_name or host
        self.connect_timeout = connect_timeout
        self.connect_attempts = max(1, connect_attempts)  # settings: comms.retries + 1
        self.max_frame = max_frame
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiter: _Waiter | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """True while a connection is open and its reader is running (no I/O)."""
        return (self._writer is not None and not self._writer.is_closing()
                and self._reader_task is not None and not self._reader_task.done())

    async def exchange(self, frame: bytes, accept: Callable[[Decoded], bool],
                       timeout: float) -> Decoded:
        """Send `frame` and wait up to `timeout` s for a reply that `accept` takes.

        Connects first if needed (bounded by connect_timeout, not by `timeout`).
        Raises NoReply(LINK) if the connection cannot be made or drops before the
        reply, NoReply(TIMEOUT), or NoReply(MALFORMED). If the calling task is
        cancelled the reader carries on; a late reply is discarded as a stray.
        """
        async with self._lock:
            await self._ensure_connected()
            writer = self._writer
            assert writer is not None  # _ensure_connected either connects or raises
            future: asyncio.Future[Decoded] = asyncio.get_running_loop().create_future()
            # Register before writing: a fast host may answer before drain() returns.
            self._waiter = (accept, future)
            try:
                async with asyncio.timeout(timeout):
                    try:
                        writer.write(frame)
                        await writer.drain()
                    except (ConnectionError, OSError) as exc:
                        await self._drop_connection()
                        raise NoReply(NoReply.LINK, f"send failed: {exc}") from None
                    return await future
            except TimeoutError:
                raise NoReply(NoReply.TIMEOUT, f"no reply within {timeout:g} s") from None
            finally:
                self._waiter = None
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # mark retrieved: no "never retrieved" noise

    async def connect(self) -> None:
        """Open the connection now if it is not open (the terminal dials before it
        writes a PENDING record, so a dead link costs no needless reversal)."""
        async with self._lock:
            await self._ensure_connected()

    async def close(self) -> None:
        """Close the connection; a request still waiting gets NoReply(CANCELLED)."""
        self._fail_waiter(NoReply(NoReply.CANCELLED, "channel closed locally"))
        await self._drop_connection()

    # -- internals

    async def _ensure_connected(self) -> None:
        if self.connected:
            return
        await self._drop_connection()  # clear what is left of a dead connection
        for attempt in range(1, self.connect_attempts + 1):
            try:
                async with asyncio.timeout(self.connect_timeout):
                    if self.tls is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    else:
                        # The handshake gets half the connect time, so that a host that does
                        # not speak TLS is told apart from one that does not answer at all.
                        reader, writer = await asyncio.open_connection(
                            self.host, self.port, ssl=self.tls, server_hostname=self.server_name,
                            ssl_handshake_timeout=max(0.5, self.connect_timeout / 2))
                break
            except ssl.SSLCertVerificationError as exc:
                plain = _CERT_WORDS.get(exc.verify_code, "it did not verify")
                why = f"the host's TLS certificate was refused: {plain} ({exc.verify_message})"
                log.error("connect to host %s:%s: %s", self.host, self.port, why)
                raise TlsRefused(f"connect to {self.host}:{self.port}: {why}") from None
            except ssl.SSLError as exc:
                why = f"the TLS handshake failed: {exc.reason or exc}"
                log.error("connect to host %s:%s: %s", self.host, self.port, why)
                raise TlsRefused(f"connect to {self.host}:{self.port}: {why}") from None
            except (ConnectionAbortedError, ConnectionResetError) as exc:
                if self.tls is None:
                    why = f"failed: {exc.strerror or exc}"
                else:  # the TCP connection was made: the handshake is what failed
                    why = (f"the TLS handshake failed (does the host speak TLS?): "
                           f"{exc.strerror or exc}")
                    log.error("connect to host %s:%s: %s", self.host, self.port, why)
                    raise TlsRefused(f"connect to {self.host}:{self.port}: {why}") from None
            except TimeoutError:
                why = f"timed out after {self.connect_timeout:g} s"
            except OSError as exc:
                why = f"failed: {exc.strerror or exc}"
            log.warning("connect to host %s:%s %s (attempt %d of %d)", self.host, self.port, why,
                        attempt, self.connect_attempts)
        else:
            raise NoReply(NoReply.LINK, f"connect to {self.host}:{self.port} {why}"
                                        + (f" ({self.connect_attempts} attempts)"
                                           if self.connect_attempts > 1 else ""))
        self._reader, self._writer = reader, writer
        self._reader_task = asyncio.create_task(self._read_loop(reader),
                                                name=f"host-reader {self.host}:{self.port}")
        log.info("connected to host %s:%s", self.host, self.port)

    async def _drop_connection(self) -> None:
        task, writer = self._reader_task, self._writer
        self._reader_task = self._reader = self._writer = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _fail_waiter(self, exc: NoReply) -> None:
        if self._waiter is not None:
            future = self._waiter[1]
            if not future.done():
                future.set_exception(exc)

    def _deliver(self, decoded: Decoded) -> None:
        fields = decoded.message.fields
        if self._waiter is not None:
            accept, future = self._waiter
            if not future.done():
                try:
                    taken = accept(decoded)
                except Exception as exc:  # a faulty predicate must not kill the reader
                    future.set_exception(exc)
                    return
                if taken:
                    future.set_result(decoded)
                    return
        # Only MTI and STAN: nothing that could identify a card.
        log.warning("discarded stray response MTI %s STAN %s",
                    decoded.message.mti, fields.get("11", "-"))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        """Reader task: runs until the connection ends; never raises."""
        reason = "connection closed by host before the reply"
        if self.tls is not None:
            # TLS 1.3 ends the handshake before the host has checked the terminal's certificate:
            # a host that wants one (and got none or a wrong one) closes the connection here.
            reason += (" (over TLS, before any reply: a host that asks for a client certificate"
                       " does this; check comms.tls_client_cert)")
        try:
            while True:
                payload = await read_frame(reader, self.max_frame)
                reason = "connection closed by host before the reply"
                try:
                    decoded = decode(payload)
                except RemoteProtocolError as exc:
                    # A body we cannot parse may mean we lost the frame boundary:
                    # nothing further on this connection can be trusted.
                    log.warning("malformed frame from host, closing connection: %s", exc)
                    self._fail_waiter(NoReply(NoReply.MALFORMED, str(exc)))
                    reason = "connection closed after a malformed frame"
                    return
                self._deliver(decoded)
        except RemoteProtocolError as exc:  # bad length prefix
            log.warning("malformed frame from host, closing connection: %s", exc)
            self._fail_waiter(NoReply(NoReply.MALFORMED, str(exc)))
        except asyncio.IncompleteReadError:
            log.info("host closed the connection")
            self._fail_waiter(NoReply(NoReply.LINK, reason))
        except (ConnectionError, OSError) as exc:
            log.info("connection to host lost: %s", exc)
            hint = reason.partition(" (")[2]  # the TLS hint while no reply has come (above)
            self._fail_waiter(NoReply(NoReply.LINK, f"connection lost: {exc}"
                                      + (f" ({hint}" if hint else "")))
        finally:
            # Close here so `connected` turns False and the next exchange reconnects.
            writer = self._writer
            if writer is not None and self._reader is reader:
                writer.close()


class HostLink:
    """A session with the host over a channel: working keys, MAC and reply matching.

    `keys` is the terminal's key store (its host half): sign-on installs the working keys in
    it, and every MAC, and every encrypted track block, is computed by it. None: a link that
    never signs on or MACs (the deregistration's management messages).
    """

    def __init__(self, channel: HostChannel, term: Terminal, keys: HostKeys | None,
                 mak_check: str = DEFAULT_MAK_CHECK, *,
                 mac_algorithm: str = DEFAULT_MAC_ALGORITHM,
                 track_encryption: bool = False) -> None:
        if mak_check not in MAK_CHECK_CONVENTIONS:
            raise LocalProtocolError(f"MAK check convention must be one of "
                                     f"{', '.join(MAK_CHECK_CONVENTIONS)}, got {mak_check!r}")
        if mac_algorithm not in MAC_ALGORITHMS:
            raise LocalProtocolError(f"MAC algorithm must be one of {', '.join(MAC_ALGORITHMS)}"
                                     f", got {mac_algorithm!r}")
        self.channel = channel
        self.term = term
        self.keys_store = keys
        self._mak_check = mak_check  # the acquirer's MAK check value convention (keys.py)
        self.mac_algorithm = mac_algorithm  # comms.mac_algorithm: cup_ecb | x9_19 (mac.py)
        # comms.track_encryption: sign on for a TDK (60.3 004) and send 35/36 encrypted.
        self.track_encryption = track_encryption
        self.sign_on_required = True

    @property
    def has_keys(self) -> bool:
        """The store holds the working keys of a sign-on (what "signed on" means to the app)."""
        return self.keys_store is not None and self.keys_store.has_working_key("MAK")

    def forget_keys(self) -> None:
        """The working keys leave the store (sign-off, deregistration); sign on again."""
        if self.keys_store is not None:
            self.keys_store.forget_working_keys()
        self.sign_on_required = True

    def __repr__(self) -> str:
        # No key at all is held here; the store's roles say what is installed.
        return (f"HostLink(host={self.channel.host}:{self.channel.port}, "
                f"tid={self.term.tid}, has_keys={self.has_keys}, mac={self.mac_algorithm}, "
                f"track_encryption={self.track_encryption}, "
                f"sign_on_required={self.sign_on_required})")

    async def _frame(self, msg: Message, mac: bool) -> bytes:
        """The request's frame: MACed by the store, its tracks encrypted by it when the
        setting is on. Nothing is sent when the store cannot do its part."""
        keys = self.keys_store
        mac_fn = None
        if mac:
            if keys is None or not keys.has_working_key("MAK"):
                raise LocalProtocolError("no working keys: sign on before sending MACed "
                                         "messages")
            mac_fn = store_mac(keys, self.mac_algorithm)
        tracks = None
        if self.track_encryption and TRACK_FIELDS & msg.fields.keys():
            if keys is None or not keys.has_working_key("TDK"):
                self.sign_on_required = True  # the next sign-on asks for one (60.3 004)
                raise LocalProtocolError("track encryption is on (comms.track_encryption) but "
                                         "the store has no track data key: sign on again")
            msg, tracks = with_tracks_encrypted(msg), keys.encrypt_track_block
        try:
            return await encode_async(msg, mac_fn, tracks=tracks)
        except KeyStoreError as exc:
            raise KeyStoreFailed(f"the key store cannot prepare the {msg.mti}: {exc}") from None

    async def _reply_mac_ok(self, decoded: Decoded, auth: str | None) -> bool:
        assert self.keys_store is not None
        try:
            return await verify_mac_async(decoded, store_mac(self.keys_store, self.mac_algorithm))
        except KeyStoreError as exc:
            # The reply came but cannot be checked: its outcome is unknown, like a bad MAC.
            raise NoReply(NoReply.BAD_MAC, f"the reply MAC could not be checked: {exc}",
                          auth) from None

    async def request(self, msg: Message, *, mac: bool, timeout: float) -> Message:
        """Send `msg`, return the matching reply.

        NoReply(MALFORMED) if the reply's amount differs from the request's,
        NoReply(BAD_MAC) if a reply that must carry a MAC (messages.reply_needs_mac: approvals,
        every 0230 and 0410) has none or a wrong one. With track encryption on, fields 35/36
        go encrypted under the TDK and field 53 says so.
        """
        frame = await self._frame(msg, mac)
        req = msg.fields
        reply_mti = f"{int(msg.mti) + 10:04d}"

        def accept(d: Decoded) -> bool:
            """The reply to this request: its MTI, its trace (when the request has one), our
            terminal and merchant."""
            got = d.message.fields
            return (d.message.mti == reply_mti
                    and ("11" not in req or got.get("11") == req["11"])
                    and got.get("41") == req.get("41") and got.get("42") == req.get("42"))

        log.info("send MTI %s STAN %s", msg.mti, req.get("11", "-"))
        decoded = await self.channel.exchange(frame, accept, timeout)
        reply = decoded.message
        code = reply.fields.get("39")
        log.info("reply MTI %s STAN %s code %s", reply.mti, reply.fields.get("11", "-"), code)
        # Erring towards a needless sign-on is harmless, so heed these before any check.
        if reply.header.processing == "3" or code in SIGN_ON_CODES:
            self.sign_on_required = True
        if "4" in req and "4" in reply.fields and reply.fields["4"] != req["4"]:
            raise NoReply(NoReply.MALFORMED, "amount differs: reply field 4 is "
                          f"{reply.fields['4']}, request was {req['4']}")
        if mac and reply_needs_mac(reply.mti, code):
            auth = (reply.fields.get("38") or "").strip() or None
            if "64" not in reply.fields:
                raise NoReply(NoReply.BAD_MAC, "reply carries no MAC (field 64)", auth)
            if not await self._reply_mac_ok(decoded, auth):
                raise NoReply(NoReply.BAD_MAC, "reply MAC (field 64) does not verify", auth)
        return reply

    async def sign_on(self, stan: str, batch: str, operator: str, with_tdk: bool = False,
                      timeout: float = 30.0, ic: bool = False) -> Message:
        """Send the 0800; on 00 install the working keys from field 62 in the key store.

        The 0800 asks for a track data key too (60.3 004) when `with_tdk` or the link's
        track_encryption setting says so. ic: the terminal reads chip cards (header application
        type 61): the host may ask it to load the chip parameters. Returns the reply (the
        caller adopts 60.2 as its batch number). Raises KeyCheckError on a check value mismatch,
        RemoteProtocolError if 62 is missing, the wrong size, or lacks the TDK that was asked
        for, KeyStoreFailed if the store cannot take the keys; the previous keys are then left
        untouched (the store installs all or none) and sign_on_required stays True.
        """
        if self.keys_store is None:
            raise LocalProtocolError("this link has no key store: it cannot sign on")
        ask_tdk = with_tdk or self.track_encryption
        msg = signon_request(stan, self.term, batch, operator, ask_tdk, ic=ic)
        reply = await self.request(msg, mac=False, timeout=timeout)
        if reply.fields.get("39") != "00":
            log.warning("sign-on declined with code %s", reply.fields.get("39"))
            return reply
        if "62" not in reply.fields:
            raise RemoteProtocolError("approved sign-on reply has no working keys", field="62")
        entries = signon_entries(reply.fields["62"], self._mak_check)
        if ask_tdk and not any(k.role == "TDK" for k in entries):
            exc = RemoteProtocolError(
                "the sign-on asked for a track data key (60.3 = 004, setting "
                "comms.track_encryption) but the host sent only the PIN and MAC keys: the "
                "acquirer does not encrypt tracks for this terminal, or it needs the setting off",
                field="62")
            log.error("sign-on failed: %s", exc)
            raise exc
        try:
            await self.keys_store.install_working_keys(entries)
        except KeyCheckFailed as failed:
            exc = key_check_error(failed, self._mak_check)
            log.error("sign-on failed: %s", exc)
            raise exc from None
        except KeyStoreError as failed:
            exc2 = KeyStoreFailed(f"the key store cannot install the working keys: {failed}")
            log.error("sign-on failed: %s", exc2)
            raise exc2 from None
        self.sign_on_required = False
        log.info("signed on: working keys %s installed",
                 ", ".join(k.role for k in entries))
        return reply
