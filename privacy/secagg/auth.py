"""Who signed a peer's round keys and its survivor list: the identity interface of SecAgg+.

The protocol (``client``, ``server``) authenticates through two small interfaces, so
that it knows nothing of certificates or manifests:

* a :class:`Signer` is one peer's long-term identity: ``credential`` is public (a
  certificate, or just a name when the verifier already holds the keys) and travels
  with the peer's advertised keys; ``sign`` signs a transcript with the private key,
  which never leaves the peer;
* a :class:`Verifier` turns ``(credential, signature, transcript)`` into the name of
  the identity that signed, or raises :class:`ValueError` when the credential is not an
  admitted identity or the signature does not verify.

A deployment implements both over the consortium's certificates and signed manifest
(``fedsilo.peers.identity.round_keys``). :class:`Ed25519Identity` and :class:`Ed25519Directory`
are the plain implementation for tests and tools that have the public keys in memory;
:class:`SuiteIdentity` and :class:`SuiteDirectory` the same with a crypto suite's signatures
(SM2 under the gm suite).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite import CryptoSuite

__all__ = ["Signer", "Verifier", "Ed25519Identity", "Ed25519Directory", "SuiteIdentity", "SuiteDirectory"]


@runtime_checkable
class Signer(Protocol):
    """One peer's identity: a public credential and a signing operation."""

    @property
    def credential(self) -> bytes: ...

    def sign(self, transcript: bytes) -> bytes: ...


@runtime_checkable
class Verifier(Protocol):
    """The admitted identities: ``verify`` returns the signer's name or raises ValueError."""

    def verify(self, credential: bytes, signature: bytes, transcript: bytes) -> str: ...


class Ed25519Identity:
    """A named Ed25519 key; its credential is its UTF-8 name."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        self.name = name
        self._key = key

    @property
    def credential(self) -> bytes:
        return self.name.encode()

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, transcript: bytes) -> bytes:
        return self._key.sign(transcript)


def _admitted(keys: Mapping[str, Any], credential: bytes) -> tuple[str, Any]:
    """The name a credential carries and its admitted key; ValueError if it is not a name or not admitted."""
    try:
        name = credential.decode()
    except (AttributeError, UnicodeDecodeError):
        raise ValueError("the credential is not a name") from None
    key = keys.get(name)
    if key is None:
        raise ValueError(f"{name!r} is not an admitted identity")
    return name, key


class Ed25519Directory:
    """Name -> Ed25519 public key, held by every peer (and the server) before the round."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    def verify(self, credential: bytes, signature: bytes, transcript: bytes) -> str:
        name, key = _admitted(self._keys, credential)
        try:
            key.verify(signature, transcript)
        except (InvalidSignature, TypeError, ValueError):
            raise ValueError(f"the signature is not {name!r}'s") from None
        return name


class SuiteIdentity:
    """A named signing key of a crypto suite (PKCS#8 DER); its credential is its UTF-8 name."""

    def __init__(self, name: str, suite: CryptoSuite, private_key: bytes) -> None:
        self.name = name
        self.suite = suite
        self._key = private_key

    @property
    def credential(self) -> bytes:
        return self.name.encode()

    def public_key(self) -> bytes:
        return self.suite.signing_public_key(self._key)

    def sign(self, transcript: bytes) -> bytes:
        return self.suite.sign(self._key, transcript)


class SuiteDirectory:
    """Name -> public key (uncompressed point) of `suite`, held by every peer and the server."""

    def __init__(self, suite: CryptoSuite, keys: Mapping[str, bytes]) -> None:
        self.suite = suite
        self._keys = dict(keys)

    def verify(self, credential: bytes, signature: bytes, transcript: bytes) -> str:
        name, key = _admitted(self._keys, credential)
        try:
            self.suite.verify(key, transcript, signature)
        except CryptoSuiteError:
            raise ValueError(f"the signature is not the {self.suite.name}-suite signature of {name!r}") from None
        return name
