"""Shamir secret sharing over the prime field GF(p), p = 2**521 - 1 (a Mersenne prime).

Secrets are 32-byte values (a self-mask seed, an X25519 private key) read as integers
below 2**256 < p, so no chunking is needed. A share is ``f(x)`` for the holder's
evaluation point ``x``; in SecAgg the point of node ``v`` is ``v + 1`` (node ids are
< 2**64 < p, so points are distinct and non-zero). Shares serialize to 66 bytes.

The functions work on batches: :func:`split` shares many secrets among many holders
at once (one Horner evaluation per holder and secret), and reconstruction is split
into :func:`lagrange_coefficients` -- computed ONCE per set of responding holders and
reused for every secret reconstructed from that set -- and :func:`combine`, a dot
product per secret. Python integers do the field arithmetic (exact, constant-free).
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable, Sequence

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "split",
    "lagrange_coefficients",
    "combine",
    "reconstruct",
    "share_to_bytes",
    "share_from_bytes",
    "point_of",
]

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)


def point_of(node_id: int) -> int:
    """Evaluation point of a node: ``node_id + 1``."""
    return node_id + 1


def split(
    secrets: Sequence[int],
    xs: Sequence[int],
    threshold: int,
    *,
    randbelow: Callable[[int], int] = _secrets.randbelow,
) -> list[list[int]]:
    """Share every secret t-out-of-len(xs); returns ``shares[j][i]`` = share of secret i for xs[j].

    Each secret gets its own random polynomial of degree ``threshold - 1`` whose
    constant term is the secret (coefficients from the OS CSPRNG).
    """
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be between 1 and the {len(xs)} holders")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("evaluation points must be distinct and non-zero")
    for s in secrets:
        if not 0 <= s < PRIME:
            raise ValueError("secret out of field range")
    polys = [[s] + [randbelow(PRIME) for _ in range(threshold - 1)] for s in secrets]
    out: list[list[int]] = []
    for x in xs:
        row = []
        for poly in polys:
            acc = 0
            for coeff in reversed(poly):
                acc = (acc * x + coeff) % PRIME
            row.append(acc)
        out.append(row)
    return out


def lagrange_coefficients(xs: Sequence[int]) -> list[int]:
    """Coefficients ``l_j`` with ``f(0) = sum_j l_j f(xs[j])`` for any f of degree < len(xs).

    Compute once per set of holders and reuse for all secrets shared among them.
    """
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("evaluation points must be distinct and non-zero")
    coeffs = []
    for j, xj in enumerate(xs):
        num = 1
        den = 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * xm % PRIME
                den = den * (xm - xj) % PRIME
        coeffs.append(num * pow(den, -1, PRIME) % PRIME)
    return coeffs


def combine(shares: Sequence[Sequence[int]], coeffs: Sequence[int]) -> list[int]:
    """Reconstruct many secrets: ``shares[j][i]`` is holder j's share of secret i."""
    if len(shares) != len(coeffs):
        raise ValueError("one row of shares per Lagrange coefficient is needed")
    if not shares:
        return []
    n_secrets = len(shares[0])
    return [sum(c * row[i] for c, row in zip(coeffs, shares)) % PRIME for i in range(n_secrets)]


def reconstruct(points: Sequence[int], shares: Sequence[Sequence[int]]) -> list[int]:
    """Convenience: Lagrange coefficients for ``points`` and :func:`combine`."""
    return combine(shares, lagrange_coefficients(points))


def share_to_bytes(share: int) -> bytes:
    return share.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(raw: bytes) -> int:
    """Parse a 66-byte share; ValueError if malformed or not a field element."""
    if not isinstance(raw, bytes) or len(raw) != SHARE_BYTES:
        raise ValueError(f"a share must be {SHARE_BYTES} bytes")
    value = int.from_bytes(raw, "big")
    if value >= PRIME:
        raise ValueError("share is not a field element")
    return value
