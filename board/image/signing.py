"""The keys that sign update bundles: a development CA and signing certificate made once into
var/image/keys/ (never committed), or a vendor's key, certificate and keyring named by RAUC_KEY,
RAUC_CERT and RAUC_KEYRING (the key may be a PKCS#11 URI). Says which keyring the image carries.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO_ROOT / "var" / "image"
KEY_DIR = IMAGE_DIR / "keys"
KEYRING_IN_IMAGE = "/etc/rauc/keyring.pem"  # board/image/rauc/system.conf [keyring] path

# The files of the development key set, in KEY_DIR.
CA_CERT = "dev-ca.cert.pem"
CA_KEY = "dev-ca.key.pem"
SIGNING_CERT = "dev-signing.cert.pem"
SIGNING_KEY = "dev-signing.key.pem"
KEYRING = "keyring.pem"
DEV_FILES = (CA_CERT, CA_KEY, SIGNING_CERT, SIGNING_KEY, KEYRING)

# A terminal may boot with its clock far off (no RTC battery, first boot before NTP): rauc checks
# a certificate's validity period against the terminal's clock, so the development certificates are
# valid from 2000 and never expire (RFC 5280's 99991231235959Z). A vendor decides its own periods.
NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)

ENV_KEY, ENV_CERT, ENV_KEYRING = "RAUC_KEY", "RAUC_CERT", "RAUC_KEYRING"
ENV_INTERMEDIATE = "RAUC_INTERMEDIATE"


class SigningError(Exception):
    """A key set that cannot be used, in words for the person running the build."""


@dataclass(frozen=True)
class SigningKeys:
    """What `rauc bundle` signs with and what the image trusts.

    cert and key are file paths or PKCS#11 URIs ("pkcs11:..."), passed to rauc as they are;
    keyring is the PEM file of CA certificates the image carries at KEYRING_IN_IMAGE."""

    cert: str
    key: str
    keyring: Path
    intermediate: Path | None
    source: str  # "development" or "vendor"


def is_pkcs11(name: str) -> bool:
    return name.startswith("pkcs11:")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "posfw development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (0600 from the first byte, not chmod after)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _certificate(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 signer: ec.EllipticCurvePrivateKey, *, ca: bool,
                 issuer_key: ec.EllipticCurvePublicKey) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False))
    # The signing certificate only signs (no extended key usage: rauc's default purpose check,
    # S/MIME signing, accepts a certificate without one); the CA only issues certificates.
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
                          False)
    usage.update({"key_cert_sign": True, "crl_sign": True} if ca else {"digital_signature": True})
    builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    return builder.sign(signer, hashes.SHA256())


def make_ca(key_dir: Path, common_name: str = "posfw development CA") -> tuple[Path, Path]:
    """A new CA (certificate, key) in key_dir as CA_CERT and CA_KEY: a development CA, or a second
    one for tests and keyring rotation drills."""
    key_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = _certificate(name, name, key.public_key(), key, ca=True, issuer_key=key.public_key())
    _write_private(key_dir / CA_KEY, key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    _write_public(key_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return key_dir / CA_CERT, key_dir / CA_KEY


def issue_signing_cert(key_dir: Path,
                       common_name: str = "posfw development bundle signing") -> tuple[Path, Path]:
    """A new signing key and certificate issued by the CA in key_dir (SIGNING_CERT, SIGNING_KEY)."""
    ca_key = serialization.load_pem_private_key((key_dir / CA_KEY).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((key_dir / CA_CERT).read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SigningError(f"{key_dir / CA_KEY}: not an EC key (the development CA is EC P-256)")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(_name(common_name), ca_cert.subject, key.public_key(), ca_key, ca=False,
                        issuer_key=ca_key.public_key())
    _write_private(key_dir / SIGNING_KEY, key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    _write_public(key_dir / SIGNING_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return key_dir / SIGNING_CERT, key_dir / SIGNING_KEY


def development_keys(key_dir: Path = KEY_DIR) -> SigningKeys:
    """The development key set in key_dir, made there the first time and reused after.

    A folder holding only some of the files, or files that do not belong together, is refused
    rather than filled in: a new CA would make every image built with the old keyring refuse the
    bundles signed from now on. Two builds starting at once (make -j) make one set: a lock."""
    key_dir.mkdir(parents=True, exist_ok=True)
    with open(key_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        present = [name for name in DEV_FILES if (key_dir / name).exists()]
        if not present:
            make_ca(key_dir)
            issue_signing_cert(key_dir)
            _write_public(key_dir / KEYRING, (key_dir / CA_CERT).read_bytes())
    if present and len(present) != len(DEV_FILES):
        missing = ", ".join(name for name in DEV_FILES if name not in present)
        raise SigningError(f"{key_dir} holds part of a development key set ({missing} missing). Images built "
                           f"with its keyring trust only that CA: restore the missing files, or delete the "
                           f"folder to start a new key set (and rebuild the images).")
    for name in (CA_KEY, SIGNING_KEY):
        mode = (key_dir / name).stat().st_mode & 0o777
        if mode & 0o077:
            raise SigningError(f"{key_dir / name} is readable by others (mode {mode:o}): chmod 600 it")
    _check_development_set(key_dir)
    return SigningKeys(cert=str(key_dir / SIGNING_CERT), key=str(key_dir / SIGNING_KEY),
                       keyring=key_dir / KEYRING, intermediate=None, source="development")


def _check_development_set(key_dir: Path) -> None:
    """The files belong together: the keyring is the CA's certificate, the CA issued the signing
    certificate, and the signing key is that certificate's."""
    try:
        ca = x509.load_pem_x509_certificate((key_dir / CA_CERT).read_bytes())
        cert = x509.load_pem_x509_certificate((key_dir / SIGNING_CERT).read_bytes())
        key = serialization.load_pem_private_key((key_dir / SIGNING_KEY).read_bytes(), password=None)
        keyring = x509.load_pem_x509_certificates((key_dir / KEYRING).read_bytes())
    except PermissionError as exc:
        raise SigningError(f"cannot read {exc.filename}: the key set belongs to another user (made by a "
                           f"build run with sudo?); make it with python -m board.image.signing first, "
                           f"as the user who builds bundles") from exc
    except ValueError as exc:
        raise SigningError(f"{key_dir}: a file of the development key set is damaged ({exc})") from exc
    if ca not in keyring:
        raise SigningError(f"{key_dir / KEYRING} does not hold {CA_CERT}: images would refuse its bundles")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise SigningError(f"{key_dir / SIGNING_CERT} was not issued by {key_dir / CA_CERT}") from exc
    if key.public_key() != cert.public_key():
        raise SigningError(f"{key_dir / SIGNING_KEY} is not the key of {key_dir / SIGNING_CERT}")


def vendor_keys(environ: Mapping[str, str]) -> SigningKeys | None:
    """The vendor's key set named by RAUC_KEY, RAUC_CERT and RAUC_KEYRING (RAUC_INTERMEDIATE
    optional), or None when none of them is set."""
    named = {var: environ.get(var, "") for var in (ENV_KEY, ENV_CERT, ENV_KEYRING)}
    if not any(named.values()):
        return None
    missing = [var for var, value in named.items() if not value]
    if missing:
        raise SigningError(f"a vendor key needs RAUC_KEY, RAUC_CERT and RAUC_KEYRING together; "
                           f"{', '.join(missing)} not set")
    for var in (ENV_KEY, ENV_CERT):
        if not is_pkcs11(named[var]) and not Path(named[var]).is_file():
            raise SigningError(f"{var}={named[var]}: no such file (a file or a pkcs11: URI)")
    keyring = Path(named[ENV_KEYRING])
    if not keyring.is_file():
        raise SigningError(f"RAUC_KEYRING={keyring}: no such file (a PEM file of CA certificates)")
    intermediate = Path(environ[ENV_INTERMEDIATE]) if environ.get(ENV_INTERMEDIATE) else None
    if intermediate is not None and not intermediate.is_file():
        raise SigningError(f"RAUC_INTERMEDIATE={intermediate}: no such file")
    return SigningKeys(cert=named[ENV_CERT], key=named[ENV_KEY], keyring=keyring,
                       intermediate=intermediate, source="vendor")


def signing_keys(key_dir: Path = KEY_DIR, environ: Mapping[str, str] | None = None) -> SigningKeys:
    """The vendor's key set if the environment names one, else the development set in key_dir."""
    vendor = vendor_keys(os.environ if environ is None else environ)
    return vendor if vendor is not None else development_keys(key_dir)


def keyring_path(key_dir: Path = KEY_DIR, environ: Mapping[str, str] | None = None) -> Path:
    """The keyring file the image must carry at KEYRING_IN_IMAGE (made if it is the development one)."""
    return signing_keys(key_dir, environ).keyring


def combine_keyrings(out: Path, keyrings: list[Path]) -> Path:
    """One keyring holding every CA certificate of the given ones, each once: the keyring of a
    root that moves a fleet from one CA to another (docs/image.md, "Changing the keyring").
    A certificate that is not a CA's is refused: rauc would never trust a signer through it."""
    found: list[x509.Certificate] = []
    for path in keyrings:
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SigningError(f"{path}: not a PEM file of certificates ({exc})") from exc
        for cert in certs:
            try:
                is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                raise SigningError(f"{path}: {cert.subject.rfc4514_string()} is not a CA certificate "
                                   f"(a keyring holds the CAs that issue signing certificates)")
            if cert not in found:
                found.append(cert)
    _write_public(out, b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in found))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make or show the keys that sign update bundles.")
    parser.add_argument("--key-dir", type=Path, default=KEY_DIR, help="development keys (var/image/keys)")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="KEYRING",
                        help="write one keyring of these keyrings' CAs to --out (and nothing else)")
    parser.add_argument("--out", type=Path, help="the combined keyring (with --combine)")
    parser.add_argument("--print-keyring", action="store_true",
                        help="print only the keyring's path (for the image build: --keyring)")
    args = parser.parse_args(argv)
    if args.combine:
        if args.out is None:
            parser.error("--combine needs --out")
        try:
            combine_keyrings(args.out, args.combine)
        except SigningError as exc:
            print(f"signing: {exc}", file=sys.stderr)
            return 1
        print(f"keyring: {args.out}")
        return 0
    try:
        keys = signing_keys(args.key_dir)
    except SigningError as exc:
        print(f"signing: {exc}", file=sys.stderr)
        return 1
    if args.print_keyring:
        print(keys.keyring.resolve())
        return 0
    print(f"source:   {keys.source}")
    print(f"cert:     {keys.cert}")
    print(f"key:      {keys.key}")
    print(f"keyring:  {keys.keyring}  (carried in the image at {KEYRING_IN_IMAGE})")
    if keys.intermediate:
        print(f"intermediate: {keys.intermediate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
