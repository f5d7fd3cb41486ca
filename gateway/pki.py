"""The gateway's OPC-UA certificate folder: its own certificate, the servers it trusts, the ones it refused.

Layout (the one OPC-UA stacks use, so tools and habits carry over):

    pki_dir/own/cert.der        the gateway's application certificate (made on first start)
    pki_dir/own/key.pem         its private key (mode 0600)
    pki_dir/trusted/            the exact server certificates the gateway connects to (pinned, see below)
    pki_dir/rejected/           server certificates that were refused, named `<subject>_<thumbprint>.der`
    pki_dir/issuers/            reserved for intermediate CA certificates (not read)

A thumbprint is the SHA-1 of the certificate's DER bytes, in hex: what OPC-UA servers and their admin tools show.

Trust is pinning: a server is trusted when the certificate it presents is byte for byte one of the files in trusted/
(`.der`, `.pem`, `.crt` or `.cer`, the files `list-certs` shows; anything else there, such as `plc.der.disabled`, is
not read). A CA certificate in trusted/ trusts no other certificate, only a server presenting that very certificate.
Used by the OPC-UA source (refusing and recording servers) and by `shopfloor gateway trust` / `list-certs`.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.clock import utcnow

FOLDERS = ("own", "trusted", "rejected", "issuers")
# Long enough that a PLC admin does not have to accept a new gateway certificate every year.
VALIDITY_DAYS = 5 * 365
CERTIFICATE_SUFFIXES = frozenset({".der", ".pem", ".crt", ".cer"})
_THUMBPRINT = re.compile(r"^[0-9a-f]{40}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Several devices connect at once at start: only one of them may make the certificate.
_OWN_LOCK = threading.Lock()


class PkiError(Exception):
    """A certificate file or argument cannot be used; the message says which and why (one line)."""


@dataclass(frozen=True)
class CertificateInfo:
    """What `list-certs` shows of one certificate file."""

    folder: str
    path: Path
    subject: str
    thumbprint: str
    not_before: datetime
    not_after: datetime
    certificate: x509.Certificate = field(compare=False, repr=False)

    @property
    def expired(self) -> bool:
        """Whether the certificate is outside its validity period now."""
        now = utcnow()
        return not (self.not_before <= now <= self.not_after)


def load_certificate_bytes(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes; ValueError when it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def load_private_key_bytes(data: bytes) -> PrivateKeyTypes:
    """An unencrypted private key from PEM or DER bytes; ValueError when it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return serialization.load_pem_private_key(data, password=None)
    return serialization.load_der_private_key(data, password=None)


@dataclass(frozen=True)
class Skipped:
    """A file in a certificate folder that could not be read as a certificate (left out, with the reason)."""

    path: Path
    reason: str


def is_self_signed(certificate: x509.Certificate) -> bool:
    """Whether the certificate names itself as issuer and its own key verifies its signature."""
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def server_certificate_problem(certificate: x509.Certificate) -> str | None:
    """Why a certificate must not identify an OPC-UA server even when pinned, or None.

    Refused: a certificate whose extended key usage leaves out serverAuth (a client's certificate), and a CA
    certificate (CA:TRUE) unless it is a self-signed application certificate naming serverAuth: OPC-UA 1.04 stacks
    (asyncua among them) make their self-signed application certificates with CA:TRUE, and pinning one trusts only
    itself. A CA issued by another CA, or a CA without serverAuth, is an issuer, not a server.
    """
    try:
        usages: x509.ExtendedKeyUsage | None = certificate.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        return "its extended key usage does not include serverAuth (it is not a server certificate)"
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca and (usages is None or not is_self_signed(certificate)):
        return "it is a CA certificate (CA:TRUE), not a server's application certificate"
    return None


def key_matches(certificate: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether `key` is the private key of `certificate`."""
    der, info = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return key.public_key().public_bytes(der, info) == certificate.public_key().public_bytes(der, info)
    except (TypeError, ValueError):
        return False


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` in one rename: a crash leaves the old file or the new one, never half of one."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def file_format(path: Path) -> str:
    """`pem` or `der`, by the file's content (what asyncua's loaders take as `extension`)."""
    with path.open("rb") as file:
        return "pem" if file.read(64).lstrip().startswith(b"-----BEGIN") else "der"


def thumbprint(certificate: x509.Certificate) -> str:
    """SHA-1 of the DER bytes in lower-case hex (the OPC-UA thumbprint)."""
    return hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest()


def subject_name(certificate: x509.Certificate) -> str:
    """The subject as RFC 4514 text, e.g. `CN=press-1,O=Vendor`."""
    return certificate.subject.rfc4514_string()


def application_uris(certificate: x509.Certificate) -> list[str]:
    """The URIs of the certificate's subjectAltName (an OPC-UA application's ApplicationURI is one of them)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def file_name(certificate: x509.Certificate) -> str:
    """`<common name>_<thumbprint>.der`, safe on every file system."""
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common = str(names[0].value) if names else "certificate"
    return f"{_UNSAFE.sub('-', common).strip('-')[:60] or 'certificate'}_{thumbprint(certificate)}.der"


class Pki:
    """The certificate folder of one gateway (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def own_certificate(self) -> Path:
        """The gateway's application certificate (DER)."""
        return self.root / "own" / "cert.der"

    @property
    def own_key(self) -> Path:
        """The gateway's private key (PEM, PKCS#8)."""
        return self.root / "own" / "key.pem"

    @property
    def trusted(self) -> Path:
        """Server certificates and CAs that are trusted."""
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        """Server certificates that were refused."""
        return self.root / "rejected"

    def create_folders(self) -> None:
        """Make the four folders, owner-only (they hold the private key), tightening ones that exist already."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        for folder in FOLDERS:
            path = self.root / folder
            path.mkdir(exist_ok=True, mode=0o700)
            path.chmod(0o700)

    def ensure_own_certificate(self, application_uri: str) -> tuple[x509.Certificate, str | None]:
        """The gateway's certificate, made (with a new key) when missing, unreadable, expired, naming another URI,
        or not matching the key beside it.

        Returns the certificate and why it was made now (None: it was there already); a new certificate must be
        trusted again by servers.
        """
        self.create_folders()
        reason = self._own_certificate_problem(application_uri)
        if reason is None:
            self.own_key.chmod(0o600)
            return load_certificate_bytes(self.own_certificate.read_bytes()), None
        return self._make_own_certificate(application_uri), reason

    def _own_certificate_problem(self, application_uri: str) -> str | None:
        """Why the gateway's certificate must be made again (`missing`, `unreadable`, ...), or None."""
        if not (self.own_certificate.exists() and self.own_key.exists()):
            return "missing"
        try:
            current = load_certificate_bytes(self.own_certificate.read_bytes())
            key = load_private_key_bytes(self.own_key.read_bytes())
        except (OSError, ValueError, TypeError):
            return "unreadable"
        if application_uris(current) != [application_uri]:
            return "application_uri_changed"
        if current.not_valid_after_utc <= utcnow():
            return "expired"
        if not key_matches(current, key):
            return "key_mismatch"
        return None

    def _make_own_certificate(self, application_uri: str) -> x509.Certificate:
        # asyncua is heavy to import; only a secured connection needs its certificate generator.
        from asyncua.crypto import cert_gen
        from cryptography.x509.oid import ExtendedKeyUsageOID

        key = cert_gen.generate_private_key()
        host = socket.gethostname()
        certificate = cert_gen.generate_self_signed_app_certificate(
            key,
            f"Shopfloor gateway@{host}",
            {"organizationName": "Shopfloor"},
            [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)],
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
            days=VALIDITY_DAYS,
        )
        # Key first, certificate last: a crash between the two leaves a certificate that does not match the key,
        # which the next start detects (key_mismatch) and repairs.
        _write_atomically(self.own_key, cert_gen.dump_private_key_as_pem(key), 0o600)
        _write_atomically(self.own_certificate, certificate.public_bytes(serialization.Encoding.DER), 0o644)
        return certificate

    def reject(self, certificate: x509.Certificate) -> Path:
        """Keep a refused server certificate in rejected/ (once per thumbprint); its path."""
        self.create_folders()
        path = self.rejected / file_name(certificate)
        if not path.exists():
            path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
        return path

    def trust(self, what: str) -> tuple[Path, x509.Certificate]:
        """Copy a certificate into trusted/: a file (PEM or DER) or the thumbprint of one in rejected/.

        The rejected copy is removed. PkiError when the file cannot be read or the thumbprint is unknown.
        """
        self.create_folders()
        source = Path(what)
        if source.is_file():
            try:
                certificate = load_certificate_bytes(source.read_bytes())
            except OSError as error:
                raise PkiError(f"{what}: cannot read: {error.strerror}") from None
            except ValueError:
                raise PkiError(f"{what}: not a PEM or DER certificate") from None
        else:
            wanted = what.replace(":", "").lower()
            if not _THUMBPRINT.match(wanted):
                raise PkiError(f"{what}: neither a certificate file nor a 40-digit thumbprint")
            found = [info for info in self.certificates("rejected") if info.thumbprint == wanted]
            if not found:
                raise PkiError(f"{what}: no certificate with this thumbprint in {self.rejected}")
            source = found[0].path
            certificate = load_certificate_bytes(source.read_bytes())
        target = self.trusted / file_name(certificate)
        target.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
        stale = {self.rejected / file_name(certificate)}
        if source.resolve().parent == self.rejected.resolve():
            stale.add(source)
        for path in stale:
            path.unlink(missing_ok=True)
        return target, certificate

    def certificates(self, folder: str) -> list[CertificateInfo]:
        """The certificates in one folder (own: the gateway's), sorted by file name; unreadable files left out."""
        return self.scan(folder)[0]

    def scan(self, folder: str) -> tuple[list[CertificateInfo], list[Skipped]]:
        """The certificates in one folder, and the certificate files in it that could not be read (and why).

        Only files named `*.der`, `*.pem`, `*.crt` or `*.cer` are read; for trusted/ this is exactly the set of
        pinned certificates.
        """
        directory = self.root / folder
        if not directory.is_dir():
            return [], []
        infos, skipped = [], []
        for path in sorted(directory.iterdir()):
            if not path.is_file() or path.suffix.lower() not in CERTIFICATE_SUFFIXES:
                continue
            try:
                certificate = load_certificate_bytes(path.read_bytes())
            except OSError as error:
                skipped.append(Skipped(path, f"cannot read: {error.strerror}"))
                continue
            except ValueError:
                skipped.append(Skipped(path, "not a PEM or DER certificate"))
                continue
            infos.append(
                CertificateInfo(
                    folder=folder,
                    path=path,
                    subject=subject_name(certificate),
                    thumbprint=thumbprint(certificate),
                    not_before=certificate.not_valid_before_utc,
                    not_after=certificate.not_valid_after_utc,
                    certificate=certificate,
                )
            )
        return infos, skipped


@dataclass(frozen=True)
class ClientApplication:
    """The gateway as an OPC-UA client application: what it announces and where its certificates live."""

    application_uri: str
    pki: Pki
    # The gateway's config file, so the hint to trust a server names the exact command; None: unknown.
    config_file: Path | None = None

    def trust_command(self, what: str) -> str:
        """The command an operator runs to trust a refused server certificate."""
        config = str(self.config_file) if self.config_file is not None else "GATEWAY.yaml"
        return f"shopfloor gateway trust --config {config} {what}"

    def ensure_certificate(self) -> tuple[x509.Certificate, str | None]:
        """The gateway's certificate, made on first use (one maker at a time); why it was made now, or None."""
        with _OWN_LOCK:
            return self.pki.ensure_own_certificate(self.application_uri)


def default_application_uri(site: str | None = None, gateway_id: str | None = None) -> str:
    """The ApplicationURI the gateway announces when none is configured.

    `urn:<gateway_id>.<site>:shopfloor:gateway` when both are known: it stays the same when the gateway moves to
    another host or container (the host name of a container changes with every re-creation, and with it the
    certificate servers must trust). `urn:<hostname>:shopfloor:gateway` otherwise.
    """
    if site and gateway_id:
        return f"urn:{gateway_id}.{site}:shopfloor:gateway"
    return f"urn:{socket.gethostname()}:shopfloor:gateway"


def default_client_application() -> ClientApplication:
    """The defaults of an OPC-UA section left out of the config: the host's URI, `data/opcua-pki`."""
    return ClientApplication(default_application_uri(), Pki(Path("data/opcua-pki")))
