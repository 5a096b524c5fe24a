"""The crypto-suite interface: the operations protocol code may ask for, never an algorithm's name.

A consortium chooses one suite (``standard`` or ``gm``) when it is created; every
signature, key agreement, derived key, sealed payload and fingerprint of that consortium
then comes from it. Keys and signatures cross this interface as bytes so that the caller
stores and ships them without knowing the algorithm:

- signing keys: PKCS#8 DER private key; public key: the uncompressed X9.62 point
  (``04 || x || y``, 65 bytes for both suites' curves); signature: DER ``SEQUENCE {r, s}``;
- agreement keys: the private key as 32 big-endian bytes (an X25519 private key, an SM2
  scalar: an integer below 2**256, so protocols can secret-share it), the public key as
  exchanged on the wire (32 bytes for X25519, the uncompressed point for SM2);
- sealed payloads: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, the nonce from
  the OS CSPRNG.

Every refusal (a key of the other suite, a malformed key, a signature that does not
verify, a tampered ciphertext) raises ``CryptoSuiteError`` naming the suite and what to do.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Protocol

from fedsilo.errors import CryptoSuiteError

NONCE_BYTES = 12
KEY_BYTES = 32


class Hasher(Protocol):
    """An incremental digest: feed it with `update`, read it once with `finalize`."""

    def update(self, data: bytes) -> None: ...

    def finalize(self) -> bytes: ...


class CryptoSuite(ABC):
    """One consortium-wide choice of algorithms. Subclasses fill the algorithm names and primitives."""

    name: str
    signature_algorithm: str
    agreement_algorithm: str
    kdf_algorithm: str
    aead_algorithm: str
    hash_algorithm: str
    keystream_algorithm: str
    hash_label: str  # the lower-case name a stored digest carries ("sha256", "sm3")

    # -- signatures -------------------------------------------------------------------
    @abstractmethod
    def generate_signing_key(self) -> bytes:
        """A fresh signing key (PKCS#8 DER) from the OS CSPRNG."""

    @abstractmethod
    def signing_public_key(self, private_key: bytes) -> bytes:
        """The public key (uncompressed point) of a signing key; CryptoSuiteError if not this suite's."""

    @abstractmethod
    def check_public_key(self, public_key: bytes) -> None:
        """CryptoSuiteError unless `public_key` is an uncompressed point of this suite's signature curve."""

    @abstractmethod
    def sign(self, private_key: bytes, message: bytes) -> bytes:
        """DER signature of `message`."""

    @abstractmethod
    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        """Return if `signature` is `public_key`'s signature of `message`; CryptoSuiteError otherwise."""

    # -- key agreement ----------------------------------------------------------------
    @abstractmethod
    def agreement_keypair(self) -> tuple[bytes, bytes]:
        """A fresh (private, public) agreement key pair."""

    @abstractmethod
    def agreement_public_key(self, private_key: bytes) -> bytes:
        """The public key of an agreement private key; CryptoSuiteError if it is not one of this suite."""

    @abstractmethod
    def agree(self, private_key: bytes, peer_public_key: bytes) -> bytes:
        """The raw shared secret with `peer_public_key` (feed it to `kdf`, never use it as a key).

        CryptoSuiteError naming the suite if either key is not one of this suite's (a key of
        the other suite, a point off the curve, a small-order point).
        """

    # -- derivation, hashing ----------------------------------------------------------
    @abstractmethod
    def kdf(self, secret: bytes, info: bytes, length: int = KEY_BYTES, salt: bytes = b"") -> bytes:
        """`length` bytes derived from `secret`, bound to the context `info`.

        `salt` is a fixed, public domain value of the calling protocol (HKDF's salt; the
        gm KDF, which has none, reads it before `info`). An empty salt is each KDF's plain form.
        """

    @abstractmethod
    def keystream(self, seed: bytes, context: bytes) -> Any:
        """A keystream generator for one (`seed`, `context`) pair: an encryptor whose
        ``update(zeros)`` / ``update_into(zeros, buffer)`` yields the stream.

        The cipher key is a MAC of `context` under the 32-byte `seed`, so every pair gets
        its own key, used for this one stream from a zero counter (the nonce never varies).
        A pseudorandom generator (SecAgg+ masks), not encryption of data.
        """

    @abstractmethod
    def hash(self, data: bytes) -> bytes:
        """The suite's 32-byte digest of `data` (fingerprints, hash chains, artefact hashes)."""

    @abstractmethod
    def hasher(self) -> Hasher:
        """A fresh incremental context of `hash` (``update(bytes)``, then ``finalize() -> bytes``), for files."""

    # -- authenticated encryption -----------------------------------------------------
    @abstractmethod
    def _aead_encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes: ...

    @abstractmethod
    def _aead_decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes: ...

    def seal(self, key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """``nonce || ciphertext || tag`` of `plaintext` under the 16- or 32-byte `key`, bound to `aad`."""
        self._check_aead_key(key)
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead_encrypt(key, nonce, plaintext, aad)

    def open(self, key: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of a `seal` output; CryptoSuiteError if it was altered, or sealed with another key or aad."""
        self._check_aead_key(key)
        if len(sealed) < NONCE_BYTES + 16:
            raise CryptoSuiteError(f"{self.name} suite: a sealed payload of {len(sealed)} bytes is too short")
        return self._aead_decrypt(key, sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)

    def _check_aead_key(self, key: bytes) -> None:
        if len(key) not in self.aead_key_sizes:
            sizes = " or ".join(str(n) for n in self.aead_key_sizes)
            raise CryptoSuiteError(f"{self.name} suite: {self.aead_algorithm} takes a {sizes}-byte key, not {len(key)}")

    aead_key_sizes: tuple[int, ...] = (KEY_BYTES,)

    def describe(self) -> dict[str, str]:
        """The algorithm of each operation, as recorded in documents and shown to users."""
        return {
            "suite": self.name,
            "signature": self.signature_algorithm,
            "key_agreement": self.agreement_algorithm,
            "kdf": self.kdf_algorithm,
            "aead": self.aead_algorithm,
            "hash": self.hash_algorithm,
            "keystream": self.keystream_algorithm,
        }


def keystream_seed(seed: object) -> bytes:
    """`seed` if it is a 32-byte keystream seed; ValueError otherwise (what `keystream` takes)."""
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != KEY_BYTES:
        raise ValueError(f"a keystream seed is {KEY_BYTES} bytes")
    return bytes(seed)
