"""TLS contexts for mutual TLS between members (Python's ssl, TLS 1.2 or newer).

The server requires a client certificate signed by the consortium CA
(`ssl.CERT_REQUIRED`): a client without one, self-signed, or from another CA fails
the handshake before any HTTP is read. The client checks the server's certificate
against the same CA and its host name against the certificate's subject alternative
name (the address the member was admitted with).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context
