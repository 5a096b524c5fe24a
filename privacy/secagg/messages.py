"""Protocol messages: plain dataclasses of ints, bytes, strings and numpy arrays.

``to_dict`` gives a flat mapping whose values are ``int``, ``bytes``, ``str``, lists of
one of those, or a numpy array -- the shapes Flower's ConfigRecord / ArrayRecord hold
-- and ``from_dict`` parses it back, raising ProtocolError on a malformed mapping.
Maps keyed by node id are flattened into parallel lists.

Flow of one round (server -> client requests, client -> server answers)::

    RoundSetup                -> client.advertise_keys  -> AdvertiseKeys
    ShareKeysRequest          -> client.share_keys      -> dict[dst, EncryptedShares]
    MaskInputRequest          -> client.mask_input      -> MaskedInput
    ConsistencyRequest        -> client.sign_survivors  -> SurvivorSignature
    UnmaskRequest             -> client.unmask          -> UnmaskShares
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsilo.errors import ProtocolError

__all__ = [
    "RoundSetup",
    "AdvertiseKeys",
    "ShareKeysRequest",
    "EncryptedShares",
    "MaskInputRequest",
    "MaskedInput",
    "ConsistencyRequest",
    "SurvivorSignature",
    "UnmaskRequest",
    "UnmaskShares",
    "SecAggResult",
    "encrypted_shares_to_dict",
    "encrypted_shares_from_dict",
]


def _get(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    try:
        value = d[key]
    except (KeyError, TypeError):
        raise ProtocolError(f"malformed {what} message: missing field '{key}'") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"malformed {what} message: field '{key}' has type {type(value).__name__}")
    return value


def _list(d: Mapping[str, Any], key: str, kind: type, what: str) -> list:
    value = _get(d, key, (list, tuple), what)
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise ProtocolError(f"malformed {what} message: field '{key}' must hold {kind.__name__}s")
    return list(value)


def _zip(ids: list, values: list, key: str, what: str) -> dict:
    if len(ids) != len(values) or len(set(ids)) != len(ids):
        raise ProtocolError(f"malformed {what} message: '{key}' lists do not line up")
    return dict(zip(ids, values))


@dataclass(frozen=True)
class RoundSetup:
    """Public parameters of a round, sent by the server with the first request."""

    round_id: int
    participants: tuple[int, ...]
    round_seed: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"round_id": self.round_id, "participants": list(self.participants), "round_seed": self.round_seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundSetup:
        w = "round-setup"
        return cls(
            _get(d, "round_id", int, w), tuple(_list(d, "participants", int, w)), _get(d, "round_seed", bytes, w)
        )


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0 answer: a peer's two X25519 public keys and its self-mask seed commitment,
    signed under its long-term identity (``credential``: public, e.g. its certificate)."""

    round_id: int
    node_id: int
    enc_public_key: bytes  # X25519, share encryption ("c" key)
    mask_public_key: bytes  # X25519, pairwise mask agreement ("s" key)
    seed_commitment: bytes  # SHA-256 commitment to b_u
    signature: bytes = b""  # over keys.advertise_transcript (empty when unauthenticated)
    credential: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id,
            "node_id": self.node_id,
            "enc_public_key": self.enc_public_key,
            "mask_public_key": self.mask_public_key,
            "seed_commitment": self.seed_commitment,
            "signature": self.signature,
            "credential": self.credential,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdvertiseKeys:
        w = "advertise-keys"
        return cls(
            _get(d, "round_id", int, w),
            _get(d, "node_id", int, w),
            _get(d, "enc_public_key", bytes, w),
            _get(d, "mask_public_key", bytes, w),
            _get(d, "seed_commitment", bytes, w),
            _get(d, "signature", bytes, w),
            _get(d, "credential", bytes, w),
        )


@dataclass(frozen=True)
class ShareKeysRequest:
    """Stage 1 request: the advertised keys of the peer's live neighbours."""

    round_id: int
    peer_keys: Mapping[int, AdvertiseKeys]

    def to_dict(self) -> dict[str, Any]:
        ids = sorted(self.peer_keys)
        keys = [self.peer_keys[i] for i in ids]
        return {
            "round_id": self.round_id,
            "peer_ids": ids,
            "enc_public_keys": [k.enc_public_key for k in keys],
            "mask_public_keys": [k.mask_public_key for k in keys],
            "seed_commitments": [k.seed_commitment for k in keys],
            "signatures": [k.signature for k in keys],
            "credentials": [k.credential for k in keys],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShareKeysRequest:
        w = "share-keys request"
        round_id = _get(d, "round_id", int, w)
        ids = _list(d, "peer_ids", int, w)
        cols = [
            _list(d, k, bytes, w)
            for k in ("enc_public_keys", "mask_public_keys", "seed_commitments", "signatures", "credentials")
        ]
        if any(len(col) != len(ids) for col in cols) or len(set(ids)) != len(ids):
            raise ProtocolError(f"malformed {w} message: key lists do not line up")
        peers = {i: AdvertiseKeys(round_id, i, e, m, s, g, c) for i, e, m, s, g, c in zip(ids, *cols)}
        return cls(round_id, peers)


@dataclass(frozen=True)
class EncryptedShares:
    """Stage 1 answer, one per destination: AES-GCM(share of b_src || share of s_src)."""

    round_id: int
    src: int
    dst: int
    nonce: bytes
    ciphertext: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id,
            "src": self.src,
            "dst": self.dst,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EncryptedShares:
        w = "encrypted-shares"
        return cls(
            _get(d, "round_id", int, w),
            _get(d, "src", int, w),
            _get(d, "dst", int, w),
            _get(d, "nonce", bytes, w),
            _get(d, "ciphertext", bytes, w),
        )


def encrypted_shares_to_dict(shares: Mapping[int, EncryptedShares], key_by: str = "dst") -> dict[str, Any]:
    """Flatten ``{node: EncryptedShares}`` (keyed by ``dst`` or ``src``) into parallel lists."""
    items = [shares[k] for k in sorted(shares)]
    return {
        "round_id": [s.round_id for s in items],
        "src": [s.src for s in items],
        "dst": [s.dst for s in items],
        "nonce": [s.nonce for s in items],
        "ciphertext": [s.ciphertext for s in items],
        "key_by": key_by,
    }


def encrypted_shares_from_dict(d: Mapping[str, Any]) -> dict[int, EncryptedShares]:
    w = "encrypted-shares"
    key_by = _get(d, "key_by", str, w)
    if key_by not in ("src", "dst"):
        raise ProtocolError(f"malformed {w} message: key_by must be 'src' or 'dst'")
    cols = {k: _list(d, k, int, w) for k in ("round_id", "src", "dst")}
    cols.update({k: _list(d, k, bytes, w) for k in ("nonce", "ciphertext")})
    if len({len(v) for v in cols.values()}) > 1:
        raise ProtocolError(f"malformed {w} message: lists do not line up")
    items = [
        EncryptedShares(*row)
        for row in zip(cols["round_id"], cols["src"], cols["dst"], cols["nonce"], cols["ciphertext"])
    ]
    keys = [getattr(s, key_by) for s in items]
    return _zip(keys, items, key_by, w)


@dataclass(frozen=True)
class MaskInputRequest:
    """Stage 2 request: the ciphertexts addressed to this peer, keyed by source."""

    round_id: int
    shares: Mapping[int, EncryptedShares]

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id,
            **{f"shares.{k}": v for k, v in encrypted_shares_to_dict(self.shares, key_by="src").items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MaskInputRequest:
        inner = {k[len("shares.") :]: v for k, v in d.items() if k.startswith("shares.")}
        return cls(_get(d, "round_id", int, "mask-input request"), encrypted_shares_from_dict(inner))


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2 answer: ``y = enc + PRG(b_u) + sum_(v>u) PRG(s_uv) - sum_(v<u) PRG(s_uv) mod M``.

    ``masked`` has length d + 1 (the weight slot last), dtype uint64, values < M.
    ``rejected`` maps a source whose shares failed to decrypt/authenticate to the reason;
    the client masked without that source, and the server drops it.
    """

    round_id: int
    node_id: int
    masked: np.ndarray
    rejected: Mapping[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        ids = sorted(self.rejected)
        return {
            "round_id": self.round_id,
            "node_id": self.node_id,
            "masked": self.masked,
            "rejected_ids": ids,
            "rejected_reasons": [self.rejected[i] for i in ids],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MaskedInput:
        w = "masked-input"
        rejected = _zip(_list(d, "rejected_ids", int, w), _list(d, "rejected_reasons", str, w), "rejected", w)
        return cls(_get(d, "round_id", int, w), _get(d, "node_id", int, w), _get(d, "masked", np.ndarray, w), rejected)


@dataclass(frozen=True)
class ConsistencyRequest:
    """Consistency-check request: who survived (sent masked input) and who dropped after
    sharing keys. Each survivor signs exactly these lists before anything is unmasked."""

    round_id: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"round_id": self.round_id, "survivors": list(self.survivors), "dropped": list(self.dropped)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConsistencyRequest:
        w = "consistency request"
        return cls(
            _get(d, "round_id", int, w), tuple(_list(d, "survivors", int, w)), tuple(_list(d, "dropped", int, w))
        )


@dataclass(frozen=True)
class SurvivorSignature:
    """Consistency-check answer: a survivor's signature over the lists it was given."""

    round_id: int
    node_id: int
    credential: bytes
    signature: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id,
            "node_id": self.node_id,
            "credential": self.credential,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurvivorSignature:
        w = "survivor-signature"
        return cls(
            _get(d, "round_id", int, w),
            _get(d, "node_id", int, w),
            _get(d, "credential", bytes, w),
            _get(d, "signature", bytes, w),
        )


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3 request: the survivor and dropout lists, and the survivors' signatures on them."""

    round_id: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: Mapping[int, SurvivorSignature] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        ids = sorted(self.signatures)
        return {
            "round_id": self.round_id,
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
            "signer_ids": ids,
            "signer_credentials": [self.signatures[i].credential for i in ids],
            "signer_signatures": [self.signatures[i].signature for i in ids],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UnmaskRequest:
        w = "unmask request"
        round_id = _get(d, "round_id", int, w)
        ids = _list(d, "signer_ids", int, w)
        creds, sigs = _list(d, "signer_credentials", bytes, w), _list(d, "signer_signatures", bytes, w)
        if len(creds) != len(ids) or len(sigs) != len(ids) or len(set(ids)) != len(ids):
            raise ProtocolError(f"malformed {w} message: signature lists do not line up")
        signatures = {i: SurvivorSignature(round_id, i, c, g) for i, c, g in zip(ids, creds, sigs)}
        return cls(round_id, tuple(_list(d, "survivors", int, w)), tuple(_list(d, "dropped", int, w)), signatures)


@dataclass(frozen=True)
class UnmaskShares:
    """Stage 3 answer: shares of ``b_v`` for survivors v and of ``s_v`` for dropped v (66 bytes each)."""

    round_id: int
    node_id: int
    seed_shares: Mapping[int, bytes]  # v -> share of b_v (v survived)
    key_shares: Mapping[int, bytes]  # v -> share of s_v (v dropped)

    def to_dict(self) -> dict[str, Any]:
        b_ids, s_ids = sorted(self.seed_shares), sorted(self.key_shares)
        return {
            "round_id": self.round_id,
            "node_id": self.node_id,
            "seed_share_ids": b_ids,
            "seed_shares": [self.seed_shares[i] for i in b_ids],
            "key_share_ids": s_ids,
            "key_shares": [self.key_shares[i] for i in s_ids],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UnmaskShares:
        w = "unmask-shares"
        return cls(
            _get(d, "round_id", int, w),
            _get(d, "node_id", int, w),
            _zip(_list(d, "seed_share_ids", int, w), _list(d, "seed_shares", bytes, w), "seed_shares", w),
            _zip(_list(d, "key_share_ids", int, w), _list(d, "key_shares", bytes, w), "key_shares", w),
        )


@dataclass(frozen=True)
class SecAggResult:
    """What the server learns: the weighted average of the survivors, and nothing per peer.

    ``error_bound`` is the quantization bound on ``|average - exact weighted average|``
    (without distributed noise; with noise add the noise's own spread).
    """

    average: np.ndarray  # float64, length d: sum w_i x_i / sum w_i
    total_weight: float  # sum w_i over survivors (in the caller's weight units)
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    error_bound: float
    rejections: Mapping[int, str] = field(default_factory=dict)
