"""The consortium's certificate revocation list (CRL): removed members refused in the TLS handshake.

Membership is the signed manifest; the CRL makes a removal bite at the TLS layer too. The CA
issues `crl.pem` (an X.509 CRL signed with its ECDSA key, PEM) every time it writes a manifest
version (`consortium init`, `admit`, `remove`): its CRL number is the manifest's version and it
lists the serial numbers of every certificate taken out of the manifest so far. Every daemon
loads it into its server and client TLS contexts with `VERIFY_CRL_CHECK_LEAF`, so a revoked
certificate fails the handshake (both when it connects in and when the daemon would connect out
to it) before any HTTP is read.

Two facts of OpenSSL shape this module (both tested in tests/peers/identity/test_revocation.py):

* with CRL checking on, a certificate whose issuer has no CRL in the store fails every
  handshake ("unable to get certificate CRL"), so a context gets CRL checking only together
  with a CRL, and every consortium has one from `init` on;
* a CRL added to a live context's store counts for the next handshakes, but among CRLs of the
  same issuer OpenSSL picks the one whose lastUpdate is latest, and of two with the same second,
  the first loaded. So each CRL's lastUpdate is strictly later (by whole seconds) than the
  previous one's; it is backdated by `BACKDATE` so a daemon whose clock lags the CA's does not
  find it "not yet valid", and `issue` waits (at most a second) in the rare case that the
  previous CRL leaves no earlier second free.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsilo.peers.errors import IdentityError

CRL = "crl.pem"
BACKDATE = dt.timedelta(minutes=5)
LIFETIME = dt.timedelta(days=3650)  # nextUpdate: the CA reissues with every manifest version, not on a schedule


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    number: int,
    revoked: list[int],
    previous: x509.CertificateRevocationList | None = None,
) -> x509.CertificateRevocationList:
    """A CRL numbered `number` revoking the certificate serial numbers `revoked`, later than `previous`."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = now - BACKDATE
    if previous is not None:
        stamp = max(stamp, previous.last_update_utc + dt.timedelta(seconds=1))
        if stamp > now:
            time.sleep((stamp - dt.datetime.now(dt.UTC)).total_seconds() + 0.01)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(stamp)
        .next_update(now + LIFETIME)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in sorted(set(revoked)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(stamp).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def to_pem(crl: x509.CertificateRevocationList) -> str:
    return crl.public_bytes(serialization.Encoding.PEM).decode()


def parse(pem: str | bytes, ca_cert: x509.Certificate, where: str) -> x509.CertificateRevocationList:
    """The CRL in `pem` if the CA signed it; IdentityError naming `where` otherwise."""
    try:
        crl = x509.load_pem_x509_crl(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError):
        raise IdentityError(f"{where} is not a PEM certificate revocation list") from None
    try:
        valid = crl.issuer == ca_cert.subject and crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError, InvalidSignature):
        valid = False
    if not valid:
        raise IdentityError(f"{where} is not signed by the consortium's CA: it is refused")
    return crl


def load(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The CA-signed CRL at `path`, or None if there is none; IdentityError if it is not the CA's."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse(data, ca_cert, f"the revocation list {path}")


def number(crl: x509.CertificateRevocationList) -> int:
    """The CRL's number (the manifest version it was issued with)."""
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        raise IdentityError("the revocation list has no CRL number: it was not issued by fedsilo's CA") from None


def serials(crl: x509.CertificateRevocationList) -> list[int]:
    return [entry.serial_number for entry in crl]


def write(path: Path, crl: x509.CertificateRevocationList) -> None:
    """Write `crl` to `path` atomically (a temporary file renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_pem(crl))
    tmp.replace(path)
