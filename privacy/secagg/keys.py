"""Key agreement, key derivation, share encryption and the optional signing hook.

Every operation comes from the consortium's crypto suite (``fedsilo.privacy.crypto_suite``,
the ``suite`` keyword, the standard suite by default; ``SecAggConfig.suite`` names it for a
round). Per round every peer makes two fresh agreement key pairs: ``c`` (share encryption)
and ``s`` (mask agreement). From an agreed secret the suite's KDF derives

* the pairwise mask seed ``s_uv`` (info ``fedsilo/secagg/v1/mask-seed``), symmetric in
  u and v; and
* a directional key of the suite's AEAD for the shares sent from ``src`` to ``dst``
  (info ``fedsilo/secagg/v1/share-key``),

each ``info`` binding the session id (the job), the round id and the node ids, so a
key is never reused across rounds, jobs, pairs or directions. The AEAD's associated
data binds (session, round, src, dst) again, so a ciphertext relayed to the wrong
peer or replayed in another round fails authentication.

Suites. The standard suite is X25519, HKDF-SHA256 (salt ``fedsilo/secagg/v1``), AES-256-GCM
and SHA-256 commitments: byte for byte the protocol from before suites existed. The gm suite
is ECDH on the SM2 curve, the SM3 KDF, SM4-GCM and SM3 commitments, and every context it
derives, commits or signs carries ``gm/`` after ``fedsilo/secagg/v1/`` (the wire's version
per suite): a transcript signed under one suite never verifies under the other, and a key
of the other suite is refused, the suite named.

Transcripts. A peer signs (``auth.Signer``) its advertised keys, seed commitment and
credential, bound to the session (job), round and its node id
(:func:`advertise_transcript`), and, before any unmasking, the survivor and dropout
lists the server gave it, bound the same way (:func:`survivors_transcript`). Receivers
check them with an ``auth.Verifier`` holding the admitted identities, so the relaying
server can neither substitute keys nor tell peers different dropout stories.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedsilo.errors import CryptoSuiteError, ProtocolError
from fedsilo.privacy.crypto_suite import CryptoSuite, get_suite

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "generate_key",
    "public_bytes",
    "private_bytes",
    "load_private",
    "check_public_key",
    "shared_secret",
    "STANDARD",
    "agreement_keypair",
    "agreement_public_key",
    "agree",
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
STANDARD = get_suite("standard")


def _u64(value: int, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ProtocolError(f"{what} must be an integer in [0, 2**64), got {value!r}")
    return value.to_bytes(8, "big")


def _context(label: bytes, session: bytes, round_id: int, *node_ids: int, suite: CryptoSuite = STANDARD) -> bytes:
    if len(session) > 0xFFFF:
        raise ProtocolError("session id longer than 65535 bytes")
    # The standard suite's contexts are the protocol's from before suites (no tag); another suite's carry its name.
    tag = b"" if suite.name == STANDARD.name else suite.name.encode() + b"/"
    parts = [
        b"fedsilo/secagg/v1/",
        tag,
        label,
        b"|",
        len(session).to_bytes(2, "big"),
        session,
        _u64(round_id, "round id"),
    ]
    parts.extend(_u64(n, "node id") for n in node_ids)
    return b"".join(parts)


# --------------------------------------------------------------------------- X25519 key objects
# The standard suite's keys as `cryptography` objects, for callers that hold them (tools, tests).
def generate_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def load_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def shared_secret(own: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 agreement; ValueError if ``peer_public`` is malformed or low-order."""
    return own.exchange(X25519PublicKey.from_public_bytes(peer_public))


# --------------------------------------------------------------------------- the suite's agreement
_PROBES: dict[str, tuple[bytes, bytes]] = {}


def _probe(suite: CryptoSuite) -> tuple[bytes, bytes]:
    """A key pair of `suite` only used to check public keys (agreement with it refuses bad points)."""
    if suite.name not in _PROBES:
        _PROBES[suite.name] = suite.agreement_keypair()
    return _PROBES[suite.name]


def agreement_keypair(*, suite: CryptoSuite = STANDARD) -> tuple[bytes, bytes]:
    """A fresh (private, public) agreement key pair of `suite`; the private key is 32 bytes."""
    return suite.agreement_keypair()


def agreement_public_key(private: bytes, *, suite: CryptoSuite = STANDARD) -> bytes:
    """The public key of an agreement private key; ValueError if it is not one of `suite`."""
    try:
        return suite.agreement_public_key(private)
    except CryptoSuiteError as exc:
        raise ValueError(str(exc)) from None


def check_public_key(raw: object, *, probe: bool = True, suite: CryptoSuite = STANDARD) -> bytes:
    """Return ``raw`` if it is a usable public key of `suite`, else raise ValueError naming the suite.

    Rejects wrong types and lengths and, with ``probe``, every key the suite's agreement
    refuses (X25519: low-order points, whose agreement is all zero; SM2: points off the
    curve). Without ``probe`` those are caught at the agreement itself.
    """
    size = len(_probe(suite)[1])
    if not isinstance(raw, bytes) or len(raw) != size:
        got = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
        raise ValueError(
            f"{suite.name} suite: an agreement public key ({suite.agreement_algorithm}) is {size} bytes, not {got}"
        )
    if probe:
        agree(_probe(suite)[0], raw, suite=suite)
    return raw


def agree(private: bytes, peer_public: bytes, *, suite: CryptoSuite = STANDARD) -> bytes:
    """The suite's raw agreed secret; ValueError naming the suite if ``peer_public`` is unusable."""
    try:
        return suite.agree(private, peer_public)
    except CryptoSuiteError as exc:
        raise ValueError(str(exc)) from None


def _kdf(secret: bytes, info: bytes, suite: CryptoSuite, length: int = KEY_BYTES) -> bytes:
    return suite.kdf(secret, info, length, salt=_SALT)


def mask_seed(secret: bytes, *, session: bytes, round_id: int, u: int, v: int, suite: CryptoSuite = STANDARD) -> bytes:
    """Pairwise mask seed ``s_uv`` (32 bytes) from the mask-key agreement (symmetric in u, v)."""
    lo, hi = sorted((u, v))
    return _kdf(secret, _context(b"mask-seed", session, round_id, lo, hi, suite=suite), suite)


def share_key(
    secret: bytes, *, session: bytes, round_id: int, src: int, dst: int, suite: CryptoSuite = STANDARD
) -> bytes:
    """The suite's AEAD key for the shares sent from ``src`` to ``dst`` in this round."""
    info = _context(b"share-key", session, round_id, src, dst, suite=suite)
    return _kdf(secret, info, suite, suite.aead_key_sizes[0])


def share_aad(*, session: bytes, round_id: int, src: int, dst: int, suite: CryptoSuite = STANDARD) -> bytes:
    return _context(b"share-aad", session, round_id, src, dst, suite=suite)


def encrypt(key: bytes, plaintext: bytes, aad: bytes, *, suite: CryptoSuite = STANDARD) -> tuple[bytes, bytes]:
    """The suite's AEAD with a fresh random 96-bit nonce; returns ``(nonce, ciphertext || tag)``."""
    sealed = suite.seal(key, plaintext, aad)
    return sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, *, suite: CryptoSuite = STANDARD) -> bytes:
    """The suite's AEAD decryption; ValueError when authentication fails."""
    try:
        return suite.open(key, nonce + ciphertext, aad)
    except CryptoSuiteError:
        raise ValueError(f"{suite.aead_algorithm} authentication failed") from None


# --------------------------------------------------------------------------- commitments
def seed_commitment(
    seed: bytes, *, session: bytes, round_id: int, node_id: int, suite: CryptoSuite = STANDARD
) -> bytes:
    """The suite's hash (SHA-256, SM3) as commitment to the self-mask seed ``b_u`` (a 256-bit random value).

    Lets the server check the seed it reconstructs from shares; it reveals nothing
    usable about a uniformly random 32-byte seed.
    """
    return suite.hash(_context(b"seed-commitment", session, round_id, node_id, suite=suite) + seed)


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
    suite: CryptoSuite = STANDARD,
) -> bytes:
    """The bytes a peer signs when it advertises its round keys (under its credential)."""
    return b"".join(
        [
            _context(b"advertise", session, round_id, node_id, suite=suite),
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
    suite: CryptoSuite = STANDARD,
) -> bytes:
    """The bytes a survivor signs in the consistency check: the round's two lists, sorted."""
    parts = [_context(b"survivors", session, round_id, node_id, suite=suite)]
    for ids in (sorted(survivors), sorted(dropped)):
        parts.append(_u64(len(ids), "list length"))
        parts.extend(_u64(v, "node id") for v in ids)
    return b"".join(parts)
