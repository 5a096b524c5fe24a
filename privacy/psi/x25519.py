"""The PSI group: x-only Curve25519 (X25519, RFC 7748) from libsodium, batch operations.

Why X25519 for PSI. DH-style PSI needs a commutative blinding ``e -> e^k`` in a group
where DDH is hard, and four variable-base exponentiations per pair of identifiers (two
per side). On this machine libsodium's X25519 ladder costs about 31 µs against 55 µs
for a ristretto255 scalar multiplication, and hashing onto the curve (below) about
3.5 µs against 19 µs for ristretto255's ``from_hash``: PSI's CPU per pair drops from
about 250 µs to about 145 µs.

The group. Elements are u-coordinates of points of Curve25519 ``v^2 = u^3 + A u^2 + u``
(``A = 486662``) over ``GF(p)``, ``p = 2^255 - 19``, 32 bytes little-endian; ``e^k`` is
``X25519(k, e)``: the Montgomery ladder with the scalar clamped (bits 0-2 and 255
cleared, bit 254 set), so every scalar is a multiple of the cofactor 8 and every
result lies in the prime-order subgroup (order ``ℓ ≈ 2^252``). Clamped scalars
commute (``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``), which is all DH-PSI
needs; they cannot be inverted (the ladder clamps whatever it is given), so the
anonymous query, which unblinds, stays on ristretto255 (:mod:`fedsilo.privacy.psi.group`).

Hash onto the curve, never the twist. An x-only element tells whether it lies on the
curve or on its quadratic twist; if ``H(id)`` could land on the twist, every element
``H(id)^k`` would carry that bit of the hidden identifier. :func:`hash_onto_curve`
therefore returns only points of the curve: the Elligator 2 map of RFC 9380 (§6.7.1,
``Z = 2``) applied to the 64-byte digest read as an integer modulo ``p``::

    r  = digest mod p;   u1 = -A / (1 + 2 r^2);   u2 = -u1 - A
    u  = u1 if u1^3 + A u1^2 + u1 is a square (Jacobi symbol 1) else u2

Exactly one of ``u1`` and ``u2`` lies on the curve (``2`` is not a square modulo
``p``), so one Jacobi symbol (GMP through ``gmpy2``) decides, and the denominators
of a whole batch are inverted at once (Montgomery's trick: one inversion, three
multiplications per element). This is RFC 9380's nonuniform encoding: it reaches
about half of the curve's points, each from two values ``±r``, and it is efficiently
invertible, so a security proof can still program ``H`` as a random oracle (draw a
point of known discrete logarithm, retry until Elligator reaches it, answer with one
of its two preimages, uniform). The clamped scalar of the first exponentiation
clears the cofactor. The branch and GMP's arithmetic are not constant-time; each
side hashes its whole set on its own workers before sending anything, so a peer
sees only the time of the whole set.

Received elements. :func:`check_encoding` refuses any row that is not canonical (top
bit set, or ``u >= p``) or is one of the curve's four small-order u-coordinates (0, 1
and the two of order 8); :func:`check_elements` also refuses a row that is not on the
curve (twist points, which covers the twist's small-order points: one Jacobi symbol,
about 1.4 µs); :func:`multiply` also refuses an all-zero result, which is what a
small-order point gives after clamping. Every element a secret scalar will touch goes
through :func:`check_elements` first, so twist security of Curve25519 is not relied
on. An element a side only compares with its own results (never exponentiates) needs
:func:`check_encoding` only: off the curve, it equals nothing this side computes. The
protocol only ever sends elements of the prime-order subgroup, so an honest peer never
trips any check.

Assumptions: semi-honest parties; DDH hard in the prime-order subgroup of Curve25519
(with scalars uniform among clamped values: ``k mod ℓ`` uniform over a fixed set of
``2^251`` residues); SHA-512 a random oracle.

Binding: libsodium (>= 1.0.18, the library :mod:`fedsilo.privacy.psi.group` already loads)
through ``ctypes``, one call per element on numpy ``uint8`` arrays of shape
``(n, 32)`` (raw addresses, no Python object per element); GMP's Jacobi symbol
through ``gmpy2``.
"""

from __future__ import annotations

import ctypes
import os

import gmpy2
import numpy as np

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi.group import lib, scalarmult_rows

__all__ = [
    "ELEMENT_BYTES",
    "SCALAR_BYTES",
    "random_scalar",
    "hash_onto_curve",
    "multiply",
    "check_encoding",
    "check_elements",
]

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
_P = gmpy2.mpz(2**255 - 19)
_A = 486662
# u-coordinates of the curve's points of small order (the twist's are refused as twist points):
# order 2 (u = 0), order 4 (u = 1) and order 8 (two values).
_SMALL_ORDER = np.frombuffer(
    b"".join(
        u.to_bytes(32, "little")
        for u in (
            0,
            1,
            325606250916557431795983626356110631294008115727848805560023387167927233504,
            39382357235489614581723060781553021112529911719440698176882885853963445705823,
        )
    ),
    dtype=np.uint8,
).reshape(-1, 32)

lib.crypto_scalarmult_curve25519.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
_from_bytes = gmpy2.mpz.from_bytes
_jacobi = gmpy2.jacobi
_invert = gmpy2.invert
# On the curve, not the twist, not 0: ``u^3 + A u^2 + u`` is a non-zero square, i.e. its
# Jacobi symbol modulo p is 1 (it is 0 only for u = 0). The loops below inline this test,
# which runs 4 times per pair of identifiers (2 hashes, 2 received sets exponentiated).


def _rows(array: np.ndarray, width: int, what: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != width:
        raise ProtocolError(f"{what} must be a uint8 array of shape (n, {width}), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def random_scalar() -> bytes:
    """32 uniformly random bytes from the OS; X25519 clamps them when it uses them."""
    return os.urandom(SCALAR_BYTES)


def hash_onto_curve(digests: np.ndarray) -> np.ndarray:
    """Map 64-byte uniform digests (rows) to u-coordinates of curve points: Elligator 2 (see the module doc)."""
    digests = _rows(digests, 64, "digests")
    data, p, a, jacobi, from_bytes = digests.tobytes(), _P, _A, _jacobi, _from_bytes
    dens = [
        (2 * r * r + 1) % p for r in (from_bytes(data[at : at + 64], "little") % p for at in range(0, len(data), 64))
    ]
    prefix, acc = [], gmpy2.mpz(1)  # prefix[i] = dens[0] * ... * dens[i-1]
    for den in dens:
        prefix.append(acc)
        acc = acc * den % p
    inverse = _invert(acc, p)  # 1 / (dens[0] * ... * dens[n-1]); never 0: 1 + 2 r^2 = 0 has no root
    out = [b""] * len(dens)
    for i in range(len(dens) - 1, -1, -1):
        u = -a * (inverse * prefix[i]) % p  # -A / dens[i]
        inverse = inverse * dens[i] % p
        if jacobi(u * (u * (u + a) + 1) % p, p) != 1:
            u = (-u - a) % p
        out[i] = u.to_bytes(ELEMENT_BYTES, "little")
    return np.frombuffer(b"".join(out), dtype=np.uint8).reshape(-1, ELEMENT_BYTES)


def check_encoding(elements: np.ndarray, offset: int = 0) -> np.ndarray:
    """Refuse (:class:`ProtocolError`) the first row that is not a canonical u-coordinate or is of small order.

    Enough for elements this side only compares (see the module doc); returns the rows
    as a contiguous ``(n, 32)`` array. The message names the position only (``offset`` +
    the row's index: the row's place in the peer's stream): it says nothing about this
    side's secret or set.
    """
    elements = _rows(elements, ELEMENT_BYTES, "group elements")
    if not len(elements):
        return elements
    top = elements[:, 31]
    bad = (top & 0x80) != 0  # the unused 256th bit must be clear
    bad |= (top == 0x7F) & (elements[:, 1:31] == 0xFF).all(axis=1) & (elements[:, 0] >= 0xED)  # u >= p
    if bad.any():
        at = offset + int(np.argmax(bad))
        raise ProtocolError(
            f"group element at position {at} is not a canonical Curve25519 "
            "u-coordinate (wrong bytes); the peer's message was refused"
        )
    small = (elements[:, None, :] == _SMALL_ORDER[None, :, :]).all(axis=2).any(axis=1)
    if small.any():
        raise ProtocolError(
            f"group element at position {offset + int(np.argmax(small))} is of small order; "
            "the peer's message was refused"
        )
    return elements


def check_elements(elements: np.ndarray, offset: int = 0) -> None:
    """Refuse (:class:`ProtocolError`) the first row that is not a canonical point of the curve of large order.

    What every element must pass before a secret scalar touches it; messages as in
    :func:`check_encoding`.
    """
    data = check_encoding(elements, offset).tobytes()
    p, a, jacobi, from_bytes = _P, _A, _jacobi, _from_bytes
    for at in range(len(data) // ELEMENT_BYTES):
        u = from_bytes(data[ELEMENT_BYTES * at : ELEMENT_BYTES * (at + 1)], "little")
        if jacobi(u * (u * (u + a) + 1) % p, p) != 1:
            raise ProtocolError(
                f"group element at position {offset + at} is not a point of Curve25519 (it lies on the "
                "twist or is of small order); the peer's message was refused"
            )


def multiply(elements: np.ndarray, scalar: bytes, offset: int = 0) -> np.ndarray:
    """``X25519(scalar, e)`` for every row ``e``: the exponentiation ``e^scalar`` of the PSI.

    Rows are taken as they are: check received rows with :func:`check_elements` first.
    An all-zero result (the input was of small order) raises :class:`ProtocolError`
    naming the position (``offset`` + the row's index) only.
    """
    out, refused = scalarmult_rows(
        lib.crypto_scalarmult_curve25519, _rows(elements, ELEMENT_BYTES, "group elements"), scalar
    )
    if refused is not None:
        raise ProtocolError(
            f"group element at position {offset + refused} is of small order; the peer's message was refused"
        )
    return out
