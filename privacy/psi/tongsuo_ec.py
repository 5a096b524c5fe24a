"""SM2-curve point arithmetic in C, through Tongsuo's EC functions (the one private-API use).

PRIVATE API. ``tongsuopy`` 1.0.1 (pinned) exposes the elliptic-curve *point* functions only
through its cffi binding of Tongsuo, ``tongsuopy.backends.tongsuo.backend.backend._lib``:
its public API offers signatures, not a scalar multiplication of an arbitrary point. This
module is the only place that touches ``_lib``; ``tests/privacy/psi/test_sm2.py`` checks
that every name used below is still there, so a tongsuopy upgrade that drops one fails a
test, not a PSI run.

What runs in C (Tongsuo, OpenSSL 1.1.1 code): decoding a compressed or uncompressed point
(``EC_POINT_oct2point`` refuses an x or y not below p and a point that is not on the curve),
point addition, and ``EC_POINT_mul`` of one point by one scalar, which OpenSSL 1.1.1 computes
with its Montgomery ladder (``ec_scalar_mul_ladder``, constant-time in the scalar). The curve
is sm2p256v1 (GB/T 32918.5), NID 1172.

Contracts: points cross this module as SEC1 octet strings (33-byte compressed or 65-byte
uncompressed); scalars as 32-byte big-endian integers in ``[1, n)``. Each function returns
the index of the first input it refused (not a point of the curve, or the point at
infinity, in or out), or None; it never raises for a bad point, so the caller names the
position in its own words.
"""

from __future__ import annotations

from typing import Any

from tongsuopy.backends.tongsuo.backend import backend as _backend

__all__ = ["NAMES", "SM2_NID", "multiply", "multiply_each", "add_then_multiply", "compress"]

SM2_NID = 1172
COMPRESSED = 2  # POINT_CONVERSION_COMPRESSED
NAMES = (
    "EC_GROUP_new_by_curve_name",
    "EC_POINT_new",
    "EC_POINT_free",
    "EC_POINT_oct2point",
    "EC_POINT_point2oct",
    "EC_POINT_mul",
    "EC_POINT_add",
    "EC_POINT_is_on_curve",
    "EC_POINT_is_at_infinity",
    "BN_CTX_new",
    "BN_CTX_free",
    "BN_new",
    "BN_clear_free",
    "BN_bin2bn",
    "ERR_clear_error",
)
"""The Tongsuo functions this module calls (checked by a test)."""

_lib: Any = _backend._lib
_ffi: Any = _backend._ffi
_GROUP = _lib.EC_GROUP_new_by_curve_name(SM2_NID)  # lives as long as the process
if _GROUP == _ffi.NULL:
    raise ImportError("Tongsuo has no SM2 curve (NID 1172)")


class _Work:
    """A BN_CTX, two points and a scalar for one batch (freed when collected; not shared between threads)."""

    def __init__(self) -> None:
        self.ctx = _ffi.gc(_lib.BN_CTX_new(), _lib.BN_CTX_free)
        self.a = _ffi.gc(_lib.EC_POINT_new(_GROUP), _lib.EC_POINT_free)
        self.b = _ffi.gc(_lib.EC_POINT_new(_GROUP), _lib.EC_POINT_free)
        self.k = _ffi.gc(_lib.BN_new(), _lib.BN_clear_free)
        self.out = _ffi.new("unsigned char[]", 33)

    def load(self, point: Any, data: bytes) -> bool:
        """Decode ``data`` into ``point``: True if it is a point of the curve other than infinity."""
        ok = (
            _lib.EC_POINT_oct2point(_GROUP, point, data, len(data), self.ctx) == 1
            and _lib.EC_POINT_is_on_curve(_GROUP, point, self.ctx) == 1
            and _lib.EC_POINT_is_at_infinity(_GROUP, point) == 0
        )
        if not ok:
            _lib.ERR_clear_error()
        return ok

    def scalar(self, scalar: bytes) -> None:
        _lib.BN_bin2bn(scalar, len(scalar), self.k)

    def times(self, point: Any) -> bytes | None:
        """``point * k``, compressed; None if the multiplication failed or gave infinity."""
        if _lib.EC_POINT_mul(_GROUP, self.b, _ffi.NULL, point, self.k, self.ctx) != 1:
            _lib.ERR_clear_error()
            return None
        return self._encode(self.b)

    def _encode(self, point: Any) -> bytes | None:
        if _lib.EC_POINT_is_at_infinity(_GROUP, point) == 1:
            return None
        if _lib.EC_POINT_point2oct(_GROUP, point, COMPRESSED, self.out, 33, self.ctx) != 33:
            _lib.ERR_clear_error()
            return None
        return bytes(_ffi.buffer(self.out, 33))


def multiply(points: list[bytes], scalar: bytes) -> tuple[list[bytes], int | None]:
    """``P * scalar`` (compressed) for each encoded point ``P``, up to the first refused one."""
    work = _Work()
    work.scalar(scalar)
    out: list[bytes] = []
    for i, data in enumerate(points):
        if not work.load(work.a, data) or (result := work.times(work.a)) is None:
            return out, i
        out.append(result)
    return out, None


def multiply_each(points: list[bytes], scalars: list[bytes]) -> tuple[list[bytes], int | None]:
    """``P_i * scalar_i`` (compressed) for each pair, up to the first refused point."""
    work = _Work()
    out: list[bytes] = []
    for i, (data, scalar) in enumerate(zip(points, scalars)):
        work.scalar(scalar)
        if not work.load(work.a, data) or (result := work.times(work.a)) is None:
            return out, i
        out.append(result)
    return out, None


def add_then_multiply(pairs: list[tuple[bytes, bytes]], scalar: bytes | None) -> tuple[list[bytes], int | None]:
    """``(P + Q) * scalar`` (or ``P + Q`` without a scalar), compressed, for each pair of encoded points."""
    work = _Work()
    if scalar is not None:
        work.scalar(scalar)
    total = _ffi.gc(_lib.EC_POINT_new(_GROUP), _lib.EC_POINT_free)
    out: list[bytes] = []
    for i, (first, second) in enumerate(pairs):
        if not (work.load(work.a, first) and work.load(work.b, second)):
            return out, i
        if _lib.EC_POINT_add(_GROUP, total, work.a, work.b, work.ctx) != 1:
            _lib.ERR_clear_error()
            return out, i
        result = work.times(total) if scalar is not None else work._encode(total)
        if result is None:
            return out, i
        out.append(result)
    return out, None


def compress(point: bytes) -> bytes | None:
    """The 33-byte compressed encoding of an encoded point, or None if it is not a finite point of the curve."""
    work = _Work()
    return work._encode(work.a) if work.load(work.a, point) else None
