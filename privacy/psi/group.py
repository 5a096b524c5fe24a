"""The anonymous query's group: ristretto255 (RFC 9496) from libsodium, batch operations.

Used by the anonymous query (:mod:`fedsilo.privacy.psi.query`); PSI uses X25519
(:mod:`fedsilo.privacy.psi.x25519`), which is about twice as fast here but whose clamped
scalars cannot be inverted, and the query unblinds with ``1/r``.

Why ristretto255 for the query. It needs a prime-order group where DDH and one-more-DH
are hard, where scalars can be inverted, and where every received element can be
checked cheaply. ristretto255 (RFC 9496) is built on Curve25519: an encoding is 32
bytes, a canonical encoding decodes to exactly one group element, and there are no
small-order elements besides the identity, so there is no cofactor to clear and no
twist to worry about. libsodium implements it (``crypto_core_ristretto255_*``); its
``scalarmult`` refuses a non-canonical or invalid encoding and an identity result,
which is the validation every received element needs.

Binding. PyNaCl does not bind the ristretto255 functions, so this module calls the
libsodium shared library (>= 1.0.18, Debian's ``libsodium23``) through ``ctypes``
(loaded once here as :data:`lib`; :mod:`fedsilo.privacy.psi.x25519` uses it too).
Batches are numpy ``uint8`` arrays of shape ``(n, 32)``; the loops pass raw addresses,
so no Python object is made per element.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import numpy as np

from fedsilo.errors import ConfigError, ProtocolError

__all__ = [
    "lib",
    "ELEMENT_BYTES",
    "SCALAR_BYTES",
    "HASH_BYTES",
    "random_scalar",
    "invert_scalar",
    "hash_to_group",
    "multiply",
    "multiply_each",
]

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
HASH_BYTES = 64


def _load() -> ctypes.CDLL:
    names = [ctypes.util.find_library("sodium"), "libsodium.so.23", "libsodium.so.26", "libsodium.so"]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "crypto_core_ristretto255_from_hash"):
            break
    else:
        raise ConfigError(
            "private set intersection needs libsodium >= 1.0.18 (ristretto255); "
            "install it with your system's package manager (Debian: apt-get install libsodium23)"
        )
    if lib.sodium_init() < 0:
        raise ConfigError("libsodium failed to initialise")
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.crypto_core_ristretto255_from_hash.argtypes = [vp, vp]
    lib.crypto_scalarmult_ristretto255.argtypes = [vp, vp, vp]
    lib.crypto_core_ristretto255_is_valid_point.argtypes = [vp]
    lib.crypto_core_ristretto255_scalar_random.argtypes = [cp]
    lib.crypto_core_ristretto255_scalar_invert.argtypes = [cp, cp]
    lib.crypto_core_ristretto255_scalar_reduce.argtypes = [cp, cp]
    return lib


lib = _load()


def _rows(array: np.ndarray, width: int, what: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != width:
        raise ProtocolError(f"{what} must be a uint8 array of shape (n, {width}), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar modulo the group order (libsodium's CSPRNG)."""
    out = ctypes.create_string_buffer(SCALAR_BYTES)
    lib.crypto_core_ristretto255_scalar_random(out)
    return out.raw


def invert_scalar(scalar: bytes) -> bytes:
    """The inverse of a non-zero scalar modulo the group order."""
    out = ctypes.create_string_buffer(SCALAR_BYTES)
    if len(scalar) != SCALAR_BYTES or lib.crypto_core_ristretto255_scalar_invert(out, scalar) != 0:
        raise ProtocolError("a scalar must be 32 bytes and non-zero modulo the group order")
    return out.raw


def hash_to_group(digests: np.ndarray) -> np.ndarray:
    """Map 64-byte uniform digests (rows of ``digests``) to group elements.

    This is RFC 9496's one-way map (two Elligator evaluations added), so the discrete
    logarithm of an output is unknown to everyone.
    """
    digests = _rows(digests, HASH_BYTES, "digests")
    out = np.empty((len(digests), ELEMENT_BYTES), dtype=np.uint8)
    fn, src, dst = lib.crypto_core_ristretto255_from_hash, digests.ctypes.data, out.ctypes.data
    for i in range(len(digests)):
        fn(dst + ELEMENT_BYTES * i, src + HASH_BYTES * i)
    return out


def scalarmult_rows(fn: Any, elements: np.ndarray, scalar: bytes) -> tuple[np.ndarray, int | None]:
    """``fn(out, scalar, e)`` (a libsodium scalar multiplication) for every ``(n, 32)`` row ``e``.

    One call per row on raw addresses, no Python object per element. Returns the
    results and the index of the first row ``fn`` refused (None if it refused none);
    rows after a refused one are not computed.
    """
    if len(scalar) != SCALAR_BYTES:
        raise ProtocolError("a scalar must be 32 bytes")
    out = np.empty_like(elements)
    src, dst = elements.ctypes.data, out.ctypes.data
    key = ctypes.create_string_buffer(scalar, SCALAR_BYTES)
    kaddr = ctypes.addressof(key)
    for i in range(len(elements)):
        if fn(dst + ELEMENT_BYTES * i, kaddr, src + ELEMENT_BYTES * i) != 0:
            return out, i
    return out, None


def multiply(elements: np.ndarray, scalar: bytes) -> np.ndarray:
    """Every element raised to ``scalar`` (written multiplicatively: ``e ** scalar``).

    Raises :class:`ProtocolError` naming the first position whose bytes are not the
    canonical encoding of a non-identity group element (the only invalid inputs: the
    group has no other small-order element). The message names the position only.
    """
    out, refused = scalarmult_rows(
        lib.crypto_scalarmult_ristretto255, _rows(elements, ELEMENT_BYTES, "group elements"), scalar
    )
    if refused is not None:
        raise ProtocolError(
            f"group element at position {refused} is not a valid ristretto255 encoding "
            "(wrong bytes, non-canonical, or the identity); the peer's message was refused"
        )
    return out


def multiply_each(elements: np.ndarray, scalars: np.ndarray) -> np.ndarray:
    """Element ``i`` raised to scalar ``i`` (rows of ``scalars``, shape ``(n, 32)``)."""
    elements = _rows(elements, ELEMENT_BYTES, "group elements")
    scalars = _rows(scalars, SCALAR_BYTES, "scalars")
    if len(scalars) != len(elements):
        raise ProtocolError("one scalar per element is needed")
    out = np.empty_like(elements)
    fn, src, dst, sc = lib.crypto_scalarmult_ristretto255, elements.ctypes.data, out.ctypes.data, scalars.ctypes.data
    for i in range(len(elements)):
        if fn(dst + ELEMENT_BYTES * i, sc + SCALAR_BYTES * i, src + ELEMENT_BYTES * i) != 0:
            raise ProtocolError(
                f"group element at position {i} is not a valid ristretto255 encoding "
                "(wrong bytes, non-canonical, or the identity); the peer's message was refused"
            )
    return out
