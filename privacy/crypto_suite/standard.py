"""The standard suite: what fedsilo uses without a national-cryptography requirement.

ECDSA P-256 with SHA-256 (the consortium's signed documents, ``peers/identity/signing.py``),
X25519 agreement and HKDF-SHA256 (SecAgg+ pairwise secrets, ``privacy/secagg/keys.py``),
AES-256-GCM (SecAgg+ shares), SHA-256, and ChaCha20 keyed by HMAC-SHA256 as the keystream
(SecAgg+ masks, ``privacy/secagg/prg.py``). All primitives are ``cryptography``'s (OpenSSL).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite.base import CryptoSuite
from fedsilo.privacy.crypto_suite.base import keystream_seed as _seed


class StandardSuite(CryptoSuite):
    name = "standard"
    signature_algorithm = "ECDSA P-256 / SHA-256"
    agreement_algorithm = "X25519"
    kdf_algorithm = "HKDF-SHA256"
    aead_algorithm = "AES-256-GCM"
    hash_algorithm = "SHA-256"
    keystream_algorithm = "ChaCha20 (key HMAC-SHA256)"
    hash_label = "sha256"

    def generate_signing_key(self) -> bytes:
        return _pkcs8(ec.generate_private_key(ec.SECP256R1()))

    def signing_public_key(self, private_key: bytes) -> bytes:
        return _point(self._private(private_key).public_key())

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        return self._private(private_key).sign(message, ec.ECDSA(hashes.SHA256()))

    def check_public_key(self, public_key: bytes) -> None:
        self._public(public_key)

    def _public(self, public_key: bytes) -> ec.EllipticCurvePublicKey:
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
        except (ValueError, TypeError):
            raise CryptoSuiteError(
                "standard suite: the public key is not a P-256 point (a key of another suite, or malformed)"
            ) from None

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        key = self._public(public_key)
        try:
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, TypeError):
            raise CryptoSuiteError(
                "standard suite: the ECDSA signature does not verify: the message was altered or signed by another key"
            ) from None

    def agreement_keypair(self) -> tuple[bytes, bytes]:
        key = X25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return private, key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)

    def agreement_public_key(self, private_key: bytes) -> bytes:
        try:
            return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()
        except (ValueError, TypeError):
            raise CryptoSuiteError("standard suite: an X25519 private key is 32 bytes") from None

    def agree(self, private_key: bytes, peer_public_key: bytes) -> bytes:
        try:
            mine = X25519PrivateKey.from_private_bytes(private_key)
            peer = X25519PublicKey.from_public_bytes(peer_public_key)
            return mine.exchange(peer)
        except (ValueError, TypeError) as exc:
            # cryptography refuses wrong lengths and the all-zero output of a small-order point.
            hint = (
                " (an SM2 point of the gm suite?)"
                if isinstance(peer_public_key, bytes) and len(peer_public_key) == 65
                else ""
            )
            raise CryptoSuiteError(f"standard suite: X25519 agreement refused ({exc}){hint}") from None

    def kdf(self, secret: bytes, info: bytes, length: int = 32, salt: bytes = b"") -> bytes:
        # HKDF's empty salt is its default (a zero block): salt=b"" and salt=None derive the same bytes.
        return HKDF(hashes.SHA256(), length, salt=salt or None, info=info).derive(secret)

    def keystream(self, seed: bytes, context: bytes) -> Any:
        key = hmac.new(_seed(seed), context, hashlib.sha256).digest()
        return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def hash(self, data: bytes) -> bytes:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(data)
        return digest.finalize()

    def hasher(self) -> hashes.Hash:
        return hashes.Hash(hashes.SHA256())

    aead_key_sizes = (32,)

    def _aead_encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return AESGCM(key).encrypt(nonce, plaintext, aad)

    def _aead_decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise CryptoSuiteError(
                "standard suite: the sealed payload does not authenticate: altered, or sealed with another key"
            ) from None

    def _private(self, private_key: bytes) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_der_private_key(private_key, password=None)
        except UnsupportedAlgorithm:
            raise CryptoSuiteError(
                "standard suite: the signing key is not a P-256 key (a key of another suite?)"
            ) from None
        except (ValueError, TypeError):
            raise CryptoSuiteError("standard suite: the signing key is not a PKCS#8 DER private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise CryptoSuiteError("standard suite: the signing key is not a P-256 key (a key of another suite?)")
        return key


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
