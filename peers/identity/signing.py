"""Signing and verifying JSON documents (jobs, manifests, model cards).

A document is signed over its canonical JSON encoding: UTF-8, keys sorted, no
whitespace, no NaN or infinity. Any change to any value, including the order of a
list, changes the bytes and breaks the signature. Signatures are ECDSA P-256 with
SHA-256 (DER), carried as base64 text.

`sign_with_suite` / `verify_with_suite` sign the same canonical bytes with a member's
crypto-suite signing key (SM2 in a gm consortium) and check them against the public key
the manifest binds to the member.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import Certificate

from fedsilo.errors import CryptoSuiteError
from fedsilo.peers.errors import SignatureError
from fedsilo.privacy.crypto_suite import get_suite


def canonical_json(document: Any) -> bytes:
    """The exact bytes a signature covers."""
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"the document cannot be encoded canonically: {exc}") from None


def sign_document(key: ec.EllipticCurvePrivateKey, document: Any) -> str:
    """Base64 ECDSA-SHA256 signature of `document`'s canonical JSON."""
    return base64.b64encode(key.sign(canonical_json(document), ec.ECDSA(hashes.SHA256()))).decode()


def verify_document(certificate: Certificate, document: Any, signature: str, what: str) -> None:
    """SignatureError naming `what` unless `signature` is the certificate key's signature of `document`."""
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SignatureError(f"{what}: the signer's certificate does not hold an EC key")
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, canonical_json(document), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        raise SignatureError(
            f"{what}: the signature does not verify, the document was altered or signed by another key"
        ) from None


def sign_with_suite(suite: str, private_key: bytes, document: Any) -> str:
    """Base64 signature of `document`'s canonical JSON with `suite`'s signer (SM2 for gm)."""
    return base64.b64encode(get_suite(suite).sign(private_key, canonical_json(document))).decode()


def verify_with_suite(suite: str, public_key: str, document: Any, signature: Any, what: str) -> None:
    """SignatureError naming `what` and the suite unless `signature` is `public_key`'s (hex) `suite` signature."""
    try:
        raw = base64.b64decode(signature, validate=True)
        get_suite(suite).verify(bytes.fromhex(public_key), canonical_json(document), raw)
    except (CryptoSuiteError, binascii.Error, ValueError, TypeError) as exc:
        raise SignatureError(f"{what}: its {suite}-suite signature does not verify ({exc})") from None
