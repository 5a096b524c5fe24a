"""Consortium identity: the root CA, peers' keys and certificates, the signed manifest.

All cryptography of the peer network lives here (`cryptography`, ECDSA P-256 with
SHA-256): `pki` makes and checks keys and certificates, `signing` signs and verifies
canonical JSON documents, `manifest` is the CA-signed list of members.
"""

from fedsilo.peers.identity.manifest import ROLES, Manifest, Member
from fedsilo.peers.identity.pki import (
    certificate_fingerprint,
    certificate_name,
    load_certificate,
    load_private_key,
    write_private_key,
)
from fedsilo.peers.identity.signing import canonical_json, sign_document, verify_document

__all__ = [
    "Manifest",
    "Member",
    "ROLES",
    "canonical_json",
    "certificate_fingerprint",
    "certificate_name",
    "load_certificate",
    "load_private_key",
    "sign_document",
    "verify_document",
    "write_private_key",
]
