"""The gm suite's PSI and query group: the SM2 curve sm2p256v1, hashing by RFC 9380's simplified SWU.

The group. sm2p256v1 (GB/T 32918.5): ``y^2 = x^3 - 3x + b`` over ``GF(p)``,
``p = 2^256 - 2^224 - 2^96 + 2^64 - 1``, of prime order ``n`` (cofactor 1). Every point of
the curve other than infinity generates the whole group, so a received point needs no
subgroup check beyond "on the curve and not infinity", and there is no cofactor to
clear. ``e^k`` (the PSI's and the query's blinding, written multiplicatively) is the
scalar multiplication ``k·P``; scalars are uniform in ``[1, n)`` from the OS CSPRNG and,
unlike X25519's clamped ones, invertible, so one group serves both DH-PSI and the
anonymous query. Point arithmetic runs in C, in Tongsuo (:mod:`fedsilo.privacy.psi.tongsuo_ec`).

Encoding. An element is the 33-byte SEC1 compressed point ``02|03 || x``. :func:`check_elements`
refuses, naming the position, a row that is not one: another prefix (``00`` would be the
point at infinity, ``04`` an uncompressed point), ``x >= p``, or an ``x`` for which
``x^3 - 3x + b`` is not a square modulo ``p`` (no point of the curve has that x: an
"off-curve" point; it is never 0, as the curve has no point of order 2). Tongsuo decodes
every element a secret scalar touches once more and checks it on the curve.

Hash to the curve (RFC 9380, suite ``sm2p256v1_XMD:SM3_SSWU_RO_``): ``hash_to_field`` with
``expand_message_xmd`` over SM3 (``L = 48`` bytes per field element, two elements), the
simplified SWU map of §6.6.2 on each (the curve has ``a = -3`` and ``b != 0``, so SSWU applies
directly, without an isogeny), and the sum of the two points (the random-oracle
construction; ``clear_cofactor`` is the identity). ``Z = -9``, the value of §H.2's rule
(``find_z_sswu``: the first of 1, -1, 2, -2, ... that is a non-square, not -1, with
``g(x) - Z`` irreducible and ``g(B / (Z·A))`` square); the test recomputes it, and recomputes
RFC 9380's ``Z = -10`` for P-256 with the same code. The domain separation tag names
fedsilo, the suite, the protocol use and the wire version: :data:`PSI_DST`, :data:`QUERY_DST`.

Timing. The field arithmetic of the map is Python/GMP integers, not constant-time code:
this is a map, not a primitive, but its input is a private identifier. It is written in
RFC 9380's straight-line form (Appendix F.2, with ``sqrt_ratio`` for ``p = 3 mod 4``): the
same sequence of field operations for every input, no branch on any value, the
conditional moves done arithmetically, and both exponentiations (the square root and the
inversion, ``x^((p-3)/4)`` and ``x^(p-2)``) by GMP's ``mpz_powm_sec``, which is
constant-time. What remains variable is the time of GMP's multiplications, reductions and
comparisons, which depends on the operands' lengths in 64-bit limbs: an intermediate value
shorter by a limb (probability about ``2^-64`` per value) is a little faster. An observer
of timing could therefore learn, per identifier, at most whether such a rare event
happened, which says nothing usable about the identifier; and a peer sees only the time
of the whole set (each side hashes its whole set before it sends anything, on its own
workers), where these variations vanish in the constant-time scalar multiplications,
about 20 times costlier.

Assumptions for the protocols on this group: DDH (PSI) and one-more-DH (query) hard on
sm2p256v1; SM3 behaves as a random oracle (so the hash is one onto the group).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np
from cryptography.hazmat.primitives import hashes

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi import tongsuo_ec

__all__ = [
    "ELEMENT_BYTES",
    "SCALAR_BYTES",
    "PSI_DST",
    "QUERY_DST",
    "Curve",
    "SM2",
    "Z",
    "expand_message_xmd",
    "hash_to_field",
    "map_to_curve",
    "hash_to_curve",
    "random_scalar",
    "invert_scalar",
    "check_elements",
    "multiply",
    "multiply_each",
]

ELEMENT_BYTES = 33
SCALAR_BYTES = 32
PSI_DST = b"fedsilo-psi-v3-gm-suite-dh-psi-sm2p256v1_XMD:SM3_SSWU_RO_"
QUERY_DST = b"fedsilo-psi-v3-gm-suite-query-sm2p256v1_XMD:SM3_SSWU_RO_"


@dataclass(frozen=True)
class Curve:
    """A short Weierstrass curve ``y^2 = x^3 + a x + b`` over GF(p), p = 3 mod 4, with its SSWU constant Z."""

    p: int
    a: int
    b: int
    n: int
    z: int

    @functools.cached_property
    def c1(self) -> int:  # sqrt_ratio's exponent (p - 3) / 4
        return (self.p - 3) // 4

    @functools.cached_property
    def c2(self) -> int:  # sqrt(-Z): -Z is a square, since Z and -1 are not (p = 3 mod 4)
        return pow(-self.z % self.p, (self.p + 1) // 4, self.p)


SM2 = Curve(
    p=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF,
    a=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC,
    b=0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93,
    n=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123,
    z=-9,
)
Z = SM2.z
_FIELD_BYTES = 48  # L = ceil((ceil(log2(p)) + k) / 8), k = 128


def _hash(name: str) -> Callable[[], Any]:
    """A constructor of ``name`` hash objects (``update``, ``digest``, ``copy``): hashlib's (OpenSSL) when
    it offers the hash, else ``cryptography``'s (which always has SM3 and SHA-256)."""
    if name in hashlib.algorithms_available:
        return functools.partial(hashlib.new, name)
    algorithm = {"sm3": hashes.SM3, "sha256": hashes.SHA256}[name]()
    return lambda: _CryptographyHash(hashes.Hash(algorithm))


class _CryptographyHash:
    def __init__(self, h: hashes.Hash) -> None:
        self._h = h

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.copy().finalize()

    def copy(self) -> _CryptographyHash:
        return _CryptographyHash(self._h.copy())


@functools.cache
def _xmd_start(name: str) -> tuple[Any, int]:
    """A hash object that has absorbed ``Z_pad`` (one zero block) and the hash's output size."""
    h = _hash(name)()
    h.update(bytes(h.block_size if hasattr(h, "block_size") else 64))
    return h, len(h.copy().digest())


def expand_message_xmd(msg: bytes, dst: bytes, length: int, hash_name: str = "sm3") -> bytes:
    """RFC 9380 §5.3.1 ``expand_message_xmd`` with the hash ``hash_name`` ("sm3" or "sha256": 64-byte blocks)."""
    start, b_bytes = _xmd_start(hash_name)
    ell = -(-length // b_bytes)
    if ell > 255 or length > 65535 or len(dst) > 255:
        raise ValueError("expand_message_xmd: output or DST too long")
    dst_prime = dst + bytes([len(dst)])
    h = start.copy()
    h.update(msg + length.to_bytes(2, "big") + b"\x00" + dst_prime)
    b0 = h.digest()
    new = _hash(hash_name)
    h = new()
    h.update(b0 + b"\x01" + dst_prime)
    out = [h.digest()]
    x0 = int.from_bytes(b0, "big")
    for i in range(2, ell + 1):
        h = new()
        h.update((x0 ^ int.from_bytes(out[-1], "big")).to_bytes(b_bytes, "big") + bytes([i]) + dst_prime)
        out.append(h.digest())
    return b"".join(out)[:length]


def hash_to_field(
    msg: bytes, dst: bytes, count: int = 2, curve: Curve | None = None, hash_name: str = "sm3"
) -> list[int]:
    """RFC 9380 §5.2 ``hash_to_field`` onto GF(p) (``m = 1``, ``L = 48``)."""
    p = (curve or SM2).p
    data = expand_message_xmd(msg, dst, count * _FIELD_BYTES, hash_name)
    return [int.from_bytes(data[i * _FIELD_BYTES : (i + 1) * _FIELD_BYTES], "big") % p for i in range(count)]


def _cmov(a: int, b: int, c: int) -> int:
    """``b`` if ``c`` (0 or 1) else ``a``, without a branch."""
    return a * (1 - c) + b * c


def map_to_curve(u: int, curve: Curve | None = None) -> tuple[int, int]:
    """RFC 9380 Appendix F.2: the simplified SWU map, straight-line, with F.2.1.2's ``sqrt_ratio`` for p = 3 mod 4.

    Returns the affine point ``(x, y)``; see the module doc on timing.
    """
    curve = curve or SM2
    p, a, b, z = curve.p, curve.a, curve.b, curve.z % curve.p
    mpz, powsec = gmpy2.mpz, gmpy2.powmod_sec
    u = mpz(u)
    tv1 = z * (u * u % p) % p
    tv2 = (tv1 * tv1 + tv1) % p
    tv3 = b * (tv2 + 1) % p
    tv4 = a * _cmov(z, -tv2 % p, int(tv2 != 0)) % p
    tv6 = tv4 * tv4 % p
    tv2 = (tv3 * tv3 + a * tv6) % p * tv3 % p
    tv6 = tv6 * tv4 % p
    tv2 = (tv2 + b * tv6) % p
    x = tv1 * tv3 % p
    # (is_gx1_square, y1) = sqrt_ratio(tv2, tv6)
    s1 = tv6 * tv6 % p
    s2 = tv2 * tv6 % p
    s1 = s1 * s2 % p
    y1 = powsec(s1, curve.c1, p) * s2 % p
    y2 = y1 * curve.c2 % p
    square = int(y1 * y1 % p * tv6 % p == tv2)
    y1 = _cmov(y2, y1, square) % p
    y = tv1 * u % p * y1 % p
    x = _cmov(x, tv3, square)
    y = _cmov(y, y1, square)
    same_sign = int(u % 2 == y % 2)
    y = _cmov(-y % p, y, same_sign)
    x = x * powsec(tv4, p - 2, p) % p
    return int(x), int(y)


def _uncompressed(point: tuple[int, int]) -> bytes:
    return b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


def hash_to_curve(messages: Iterable[bytes], dst: bytes, scalar: bytes | None = None) -> np.ndarray:
    """``H(m)`` (``H(m)·scalar`` when a scalar is given) for each message: ``(n, 33)`` compressed points.

    ``H`` is RFC 9380's ``hash_to_curve`` with :func:`map_to_curve` (module doc); the sum,
    and the multiplication, run in Tongsuo, which also checks each mapped point lies on
    the curve.
    """
    pairs = []
    for msg in messages:
        u0, u1 = hash_to_field(msg, dst)
        pairs.append((_uncompressed(map_to_curve(u0)), _uncompressed(map_to_curve(u1))))
    out, refused = tongsuo_ec.add_then_multiply(pairs, scalar)
    if refused is not None:  # impossible unless the map is wrong (probability 2^-256 of infinity otherwise)
        raise ProtocolError(f"hashing identifier {refused} onto the SM2 curve failed; report this as a bug")
    return _stack(out)


def random_scalar() -> bytes:
    """A uniformly random scalar in ``[1, n)``, 32 bytes big-endian, from the OS CSPRNG (rejection sampling)."""
    while True:
        k = int.from_bytes(os.urandom(SCALAR_BYTES), "big")
        if 0 < k < SM2.n:
            return k.to_bytes(SCALAR_BYTES, "big")


def invert_scalar(scalar: bytes) -> bytes:
    """``1/scalar mod n`` (by the constant-time exponentiation ``scalar^(n-2)``); ProtocolError for 0 or >= n."""
    k = int.from_bytes(scalar, "big")
    if len(scalar) != SCALAR_BYTES or not 0 < k < SM2.n:
        raise ProtocolError("a scalar must be 32 bytes and in [1, n) of the SM2 curve")
    return int(gmpy2.powmod_sec(k, SM2.n - 2, SM2.n)).to_bytes(SCALAR_BYTES, "big")


def _rows(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != ELEMENT_BYTES:
        raise ProtocolError(
            f"{what} must be a uint8 array of shape (n, {ELEMENT_BYTES}), got {array.dtype} {array.shape}"
        )
    return np.ascontiguousarray(array)


def _stack(points: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(points), dtype=np.uint8).reshape(-1, ELEMENT_BYTES)


def check_elements(elements: np.ndarray, offset: int = 0) -> np.ndarray:
    """Refuse (:class:`ProtocolError`) the first row that is not a compressed point of the curve.

    Names the position (``offset`` + the row's index) and what was wrong, nothing about this
    side's secret or set. Returns the rows as a contiguous ``(n, 33)`` array.
    """
    elements = _rows(elements, "SM2 points")
    if not len(elements):
        return elements
    prefix = elements[:, 0]
    bad = (prefix != 2) & (prefix != 3)
    if bad.any():
        at = int(np.argmax(bad))
        what = "the point at infinity" if prefix[at] == 0 else f"not a compressed point (prefix {prefix[at]:#04x})"
        raise ProtocolError(
            f"SM2 point at position {offset + at} is {what}; the peer's message was refused (gm suite: "
            "every PSI element is a 33-byte compressed point of sm2p256v1)"
        )
    data = elements.tobytes()
    p, b, from_bytes, jacobi = SM2.p, SM2.b, gmpy2.mpz.from_bytes, gmpy2.jacobi
    for i in range(len(elements)):
        x = from_bytes(data[i * ELEMENT_BYTES + 1 : (i + 1) * ELEMENT_BYTES], "big")
        if x >= p:
            raise ProtocolError(
                f"SM2 point at position {offset + i} has x >= p (not canonical); the peer's message was refused"
            )
        if jacobi((x * x - 3) * x + b, p) != 1:
            raise ProtocolError(
                f"SM2 point at position {offset + i} is not on the curve sm2p256v1 (no point has its x); "
                "the peer's message was refused"
            )
    return elements


def _points(elements: np.ndarray) -> list[bytes]:
    data = elements.tobytes()
    return [data[i : i + ELEMENT_BYTES] for i in range(0, len(data), ELEMENT_BYTES)]


def multiply(elements: np.ndarray, scalar: bytes, offset: int = 0) -> np.ndarray:
    """``P·scalar`` for each row, after :func:`check_elements`; ProtocolError naming a refused position."""
    rows = check_elements(elements, offset)
    if len(scalar) != SCALAR_BYTES:
        raise ProtocolError("a scalar must be 32 bytes")
    out, refused = tongsuo_ec.multiply(_points(rows), scalar)
    if refused is not None:
        raise ProtocolError(
            f"SM2 point at position {offset + refused} is not a point of sm2p256v1; the peer's message was refused"
        )
    return _stack(out)


def multiply_each(elements: np.ndarray, scalars: np.ndarray) -> np.ndarray:
    """Row ``i`` times scalar ``i`` (rows of ``scalars``, shape ``(n, 32)``), after :func:`check_elements`."""
    rows = check_elements(elements)
    if scalars.dtype != np.uint8 or scalars.shape != (len(rows), SCALAR_BYTES):
        raise ProtocolError("one 32-byte scalar per element is needed")
    data = scalars.tobytes()
    out, refused = tongsuo_ec.multiply_each(
        _points(rows), [data[i : i + SCALAR_BYTES] for i in range(0, len(data), SCALAR_BYTES)]
    )
    if refused is not None:
        raise ProtocolError(f"SM2 point at position {refused} is not a point of sm2p256v1; the message was refused")
    return _stack(out)
