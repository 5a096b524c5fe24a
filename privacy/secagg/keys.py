"""Key agreement, key derivation, share encryption and the optional signing hook.

Per round every peer makes two fresh X25519 key pairs: ``c`` (share encryption) and
``s`` (mask agreement). From an X25519 shared secret HKDF-SHA256 derives

* the pairwise mask seed ``s_uv`` (info ``fedsilo/secagg/v1/mask-seed``), symmetric in
  u and v; and
* a directional AES-256-GCM key for the shares sent from ``src`` to ``dst`` (info
  ``fedsilo/secagg/v1/share-key``),

each ``info`` binding the session id (the job), the round id and the node ids, so a
key is never reused across rounds, jobs, pairs or directions. The AES-GCM associated
data binds (session, round, src, dst) again, so a ciphertext relayed to the wrong
peer or replayed in another round fails authentication.

Transcripts. A peer signs (``auth.Signer``) its advertised keys, seed commitment and
credential, bound to the session (job), round and its node id
(:func:`advertise_transcript`), and, before any unmasking, the survivor and dropout
lists the server gave it, bound the same way (:func:`survivors_transcript`). Receivers
check them with an ``auth.Verifier`` holding the admitted identities, so the relaying
server can neither substitute keys nor tell peers different dropout stories.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsilo.errors import ProtocolError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "generate_key",
    "public_bytes",
    "private_bytes",
    "load_private",
    "check_public_key",
    "shared_secret",
    "mask_seed",
    "share_key",
    "share_aad",
    "encrypt",
    "decrypt",
    "seed_commitment",
    "advertise_transcript",
    "survivors_transcript",
]

KEY_BYTES = 32
NONCE_BYTES = 12
_SALT = b"fedsilo/secagg/v1"


def _u64(value: int, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ProtocolError(f"{what} must be an integer in [0, 2**64), got {value!r}")
    return value.to_bytes(8, "big")


def _context(label: bytes, session: bytes, round_id: int, *node_ids: int) -> bytes:
    if len(session) > 0xFFFF:
        raise ProtocolError("session id longer than 65535 bytes")
    parts = [b"fedsilo/secagg/v1/", label, b"|", len(session).to_bytes(2, "big"), session, _u64(round_id, "round id")]
    parts.extend(_u64(n, "node id") for n in node_ids)
    return b"".join(parts)


# --------------------------------------------------------------------------- X25519
def generate_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def load_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


_PROBE = X25519PrivateKey.generate()  # only used to detect low-order points


def check_public_key(raw: object, *, probe: bool = True) -> bytes:
    """Return ``raw`` if it is a usable X25519 public key, else raise ValueError.

    Rejects wrong types and lengths and, with ``probe``, low-order points (whose
    agreement is all zero; OpenSSL refuses them).
    """
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 public key must be {KEY_BYTES} bytes")
    pub = X25519PublicKey.from_public_bytes(raw)
    if probe:
        _PROBE.exchange(pub)  # raises ValueError on a low-order point
    return raw


def shared_secret(own: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 agreement; ValueError if ``peer_public`` is malformed or low-order."""
    return own.exchange(X25519PublicKey.from_public_bytes(peer_public))


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(secret)


def mask_seed(secret: bytes, *, session: bytes, round_id: int, u: int, v: int) -> bytes:
    """Pairwise mask seed ``s_uv`` from the mask-key agreement (symmetric in u, v)."""
    lo, hi = sorted((u, v))
    return _hkdf(secret, _context(b"mask-seed", session, round_id, lo, hi))


def share_key(secret: bytes, *, session: bytes, round_id: int, src: int, dst: int) -> bytes:
    """AES-256-GCM key for the shares sent from ``src`` to ``dst`` in this round."""
    return _hkdf(secret, _context(b"share-key", session, round_id, src, dst))


def share_aad(*, session: bytes, round_id: int, src: int, dst: int) -> bytes:
    return _context(b"share-aad", session, round_id, src, dst)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """AES-GCM with a fresh random 96-bit nonce; returns ``(nonce, ciphertext || tag)``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-GCM decryption; ValueError when authentication fails."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise ValueError("AES-GCM authentication failed") from exc


# --------------------------------------------------------------------------- commitments
def seed_commitment(seed: bytes, *, session: bytes, round_id: int, node_id: int) -> bytes:
    """SHA-256 commitment to the self-mask seed ``b_u`` (a 256-bit random value).

    Lets the server check the seed it reconstructs from shares; it reveals nothing
    usable about a uniformly random 32-byte seed.
    """
    return hashlib.sha256(_context(b"seed-commitment", session, round_id, node_id) + seed).digest()


# --------------------------------------------------------------------------- identities
def advertise_transcript(
    *,
    session: bytes,
    round_id: int,
    node_id: int,
    enc_public_key: bytes,
    mask_public_key: bytes,
    seed_commitment: bytes,
    credential: bytes,
) -> bytes:
    """The bytes a peer signs when it advertises its round keys (under its credential)."""
    return b"".join(
        [
            _context(b"advertise", session, round_id, node_id),
            enc_public_key,
            mask_public_key,
            seed_commitment,
            len(credential).to_bytes(4, "big"),
            credential,
        ]
    )


def survivors_transcript(
    *,
    session: bytes,
    round_id: int,
    node_id: int,
    survivors: Sequence[int],
    dropped: Sequence[int],
) -> bytes:
    """The bytes a survivor signs in the consistency check: the round's two lists, sorted."""
    parts = [_context(b"survivors", session, round_id, node_id)]
    for ids in (sorted(survivors), sorted(dropped)):
        parts.append(_u64(len(ids), "list length"))
        parts.extend(_u64(v, "node id") for v in ids)
    return b"".join(parts)
