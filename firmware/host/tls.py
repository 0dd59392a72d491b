"""TLS to the acquirer's host: the client context the channel connects with.

The acquirer's CA is pinned: only the CA file named in the settings is trusted (not the
system's store), the certificate must name the host (check_hostname), TLS 1.2 is the least
accepted. A client certificate is optional (an acquirer that asks for one): a PEM file and its
0600 key under the data directory. Python's ssl loads keys from files only, and Debian 12 ships
no OpenSSL 3 PKCS#11 provider, so the key cannot stay in the token (docs/security.md).
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsSetupError(Exception):
    """The TLS settings cannot make a context (a CA file missing or unreadable); in words."""


def client_context(ca_file: Path, cert_file: Path | None = None,
                   key_file: Path | None = None) -> ssl.SSLContext:
    """A client context trusting ca_file alone, TLS 1.2 at least, the host name checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"the acquirer's CA file {ca_file} cannot be read: {exc}") from None
    if cert_file is not None:
        private = key_file or cert_file
        try:
            if private.stat().st_mode & 0o077:
                raise TlsSetupError(f"the terminal's TLS key {private} is readable by others; "
                                    f"run chmod 600 {private}")
        except OSError as exc:
            raise TlsSetupError(f"the terminal's TLS key {private} cannot be read: {exc}") from None
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"the terminal's TLS certificate {cert_file} cannot be read: "
                                f"{exc}") from None
    return context
