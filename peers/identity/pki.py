"""Keys and X.509 certificates of a consortium (ECDSA P-256, SHA-256).

Contracts:
- a private key file is created with mode 0600 and never overwritten; loading one that
  group or others can read is refused (as ssh does), so a key cannot be used after it
  leaked through permissions; key material is never put in an exception or a log;
- the consortium's root CA signs each member's certificate; a member certificate is
  valid for TLS server and client use, carries the member's name as its common name
  and, when the member has an address, that host as its subject alternative name;
- a certificate's fingerprint is "sha256:" + hex SHA-256 of its DER encoding.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsilo.peers.errors import IdentityError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CA_DAYS = 3650
MEMBER_DAYS = 825


def check_name(name: str, what: str = "name") -> str:
    """A member or consortium name: lower-case letters, digits and '-', 1–63 characters."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise IdentityError(
            f"{what} {name!r} is not valid: use 1–63 lower-case letters, digits and '-', "
            "starting with a letter or digit (e.g. bank-a)"
        )
    return name


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write `key` as PEM to a new file with mode 0600; IdentityError if the file exists."""
    write_secret(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to a new file with mode 0600; IdentityError if the file exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(
            f"{path} already exists: a key is never overwritten; choose another directory or remove it yourself"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read a PEM private key written by `write_private_key`; refuses group/other-readable files."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise IdentityError(
            f"private key {path} does not exist: run `fedsilo peer init` (or `fedsilo consortium init`) first"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"private key {path} is readable by group or others (mode {stat.S_IMODE(mode):o}): run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise IdentityError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path} is not an EC private key")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise IdentityError(f"certificate {path} does not exist") from None
    except ValueError:
        raise IdentityError(f"{path} is not a PEM certificate") from None


def certificate_from_pem(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, AttributeError):
        raise IdentityError("the certificate sent is not a PEM certificate") from None


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def certificate_fingerprint(cert: x509.Certificate | bytes) -> str:
    """'sha256:' + hex SHA-256 of the DER certificate (a Certificate or its DER bytes)."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return "sha256:" + digest.finalize().hex()


def certificate_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise IdentityError("the certificate has no common name")
    return str(names[0].value)


def _subject(name: str, consortium: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if consortium:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium))
    return x509.Name(parts)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(consortium: str, key: ec.EllipticCurvePrivateKey, days: int = CA_DAYS) -> x509.Certificate:
    """A self-signed root CA certificate for `consortium`, valid `days` (may sign end-entity certificates only)."""
    name = _subject(f"{consortium} root CA", consortium)
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def create_request(name: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """A certificate signing request for member `name`, signed by its own key."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(check_name(name, "peer name")))
        .sign(key, hashes.SHA256())
    )


def load_request(path: Path) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(Path(path).read_bytes())
    except FileNotFoundError:
        raise IdentityError(f"certificate request {path} does not exist") from None
    except ValueError:
        raise IdentityError(f"{path} is not a PEM certificate request (made by `fedsilo peer init`)") from None
    if not csr.is_signature_valid:
        raise IdentityError(f"the certificate request {path} is not signed by its own key: it was altered")
    return csr


def request_name(csr: x509.CertificateSigningRequest) -> str:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise IdentityError("the certificate request has no common name")
    return check_name(str(names[0].value), "peer name")


def address_host(address: str) -> str:
    """The host of an https://HOST:PORT address; IdentityError if it is not one."""
    parts = urlsplit(address)
    if parts.scheme != "https" or not parts.hostname or parts.port is None:
        raise IdentityError(f"address {address!r} is not https://HOST:PORT (e.g. https://127.0.0.1:17001)")
    return parts.hostname


def issue_certificate(
    csr: x509.CertificateSigningRequest,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    consortium: str,
    address: str | None,
) -> x509.Certificate:
    """Sign a member certificate for the request's name (TLS server and client use)."""
    name = request_name(csr)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(name, consortium))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=MEMBER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if address:
        host = address_host(address)
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        builder = builder.add_extension(x509.SubjectAlternativeName([alt]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def check_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """IdentityError unless `cert` is signed by `ca_cert` and valid now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise IdentityError(
            f"the certificate of {certificate_name(cert)!r} is not signed by the consortium CA"
        ) from None
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IdentityError(
            f"the certificate of {certificate_name(cert)!r} is not valid now "
            f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
        )
