"""TLS contexts for mutual TLS between members (Python's ssl, TLS 1.2 or newer).

The server requires a client certificate signed by the consortium CA
(`ssl.CERT_REQUIRED`): a client without one, self-signed, or from another CA fails
the handshake before any HTTP is read. The client checks the server's certificate
against the same CA and its host name against the certificate's subject alternative
name (the address the member was admitted with).

Given the consortium's CRL (`crl`, the CA's `crl.pem`), both sides also refuse a certificate
the CA revoked (`VERIFY_CRL_CHECK_LEAF`); `add_crl` loads a newer CRL into a live context and
the next handshakes use it (see `revocation` for why each CRL is later than the last). Without
a CRL a context checks none: OpenSSL would refuse every certificate of a CA that has no CRL.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(ca: Path, cert: Path, key: Path, crl: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    if crl is not None:
        add_crl(context, crl)
    return context


def client_context(ca: Path, cert: Path, key: Path, crl: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if crl is not None:
        add_crl(context, crl)
    return context


def add_crl(context: ssl.SSLContext, crl: Path) -> None:
    """Load the CRL at `crl` into `context` and check every peer certificate against it from now on."""
    context.load_verify_locations(cafile=str(crl))
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
