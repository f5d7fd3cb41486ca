"""Certificates for OPC-UA trust tests: a plant CA and the certificates it issues, shaped as each test needs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.clock import utcnow

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


def make_ca(name: str = "Plant CA") -> tuple[x509.Certificate, RSAPrivateKey]:
    """A self-signed CA certificate (CA:TRUE, keyCertSign) and its key."""
    key = cert_gen.generate_private_key()
    certificate = cert_gen.generate_self_signed_app_certificate(
        key, name, {"organizationName": "Plant"}, [x509.UniformResourceIdentifier("urn:plant:ca")], extended=[]
    )
    return certificate, key


def issue(
    ca: x509.Certificate,
    ca_key: RSAPrivateKey,
    *,
    application_uri: str,
    usages: list[x509.ObjectIdentifier],
    is_ca: bool = False,
    common_name: str = "PLC",
) -> tuple[x509.Certificate, RSAPrivateKey]:
    """A certificate signed by `ca` naming `application_uri`, with these extended key usages; and its key."""
    key = cert_gen.generate_private_key()
    now = utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(application_uri)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256()), key


def der(certificate: x509.Certificate) -> bytes:
    """The certificate's DER bytes."""
    return certificate.public_bytes(serialization.Encoding.DER)


def write_server_identity(folder: Path, certificate: x509.Certificate, key: RSAPrivateKey) -> None:
    """`cert.der` and `key.pem` in `folder`, where the simulator takes its certificate from."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.der").write_bytes(der(certificate))
    (folder / "key.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
