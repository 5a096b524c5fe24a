"""Mask expansion: a 32-byte seed and a label -> a stream of uint64 words, by the suite's keystream.

The keystream is the crypto suite's (``CryptoSuite.keystream``; the standard suite by
default, ``SecAggConfig.suite`` for a round). Standard: ChaCha20 keyed by
``HMAC-SHA256(seed, "fedsilo/secagg/v1/prg|" + label)`` with an all-zero 16-byte nonce
(32-bit block counter and 96-bit nonce, as ``cryptography`` takes it). gm: SM4-CTR keyed
by the first 16 bytes of ``HMAC-SM3(seed, ...)``, zero initial counter. Either way every
(seed, label) pair gets its own key, used for exactly one stream,
so the nonce never needs to vary. The keystream is read as little-endian uint64
words (``np.frombuffer``, no Python loop over coordinates); ``expand`` masks them to
k bits, which is uniform over Z_(2**k) because 2**k divides 2**64.

:func:`add_mask` adds (or subtracts) the raw 64-bit words in place into a uint64
array, chunk by chunk so the keystream stays in cache. Reducing once at the end is
enough: ``(sum of raw words) mod 2**k == (sum of words mod 2**k) mod 2**k``.
"""

from __future__ import annotations

import numpy as np

from fedsilo.privacy.crypto_suite import CryptoSuite, get_suite

__all__ = [
    "LABEL_SELF_MASK",
    "LABEL_PAIR_MASK",
    "LABEL_NOISE",
    "KeyStream",
    "expand",
    "add_mask",
]

SEED_BYTES = 32
_PREFIX = b"fedsilo/secagg/v1/prg|"
STANDARD = get_suite("standard")
_CHUNK_WORDS = 1 << 16  # 512 KiB of keystream per step

LABEL_SELF_MASK = b"self-mask"
LABEL_PAIR_MASK = b"pair-mask"
LABEL_NOISE = b"noise"


class KeyStream:
    """The suite's keystream of ``(seed, label)`` read as consecutive uint64 words (little-endian)."""

    def __init__(self, seed: bytes, label: bytes, *, suite: CryptoSuite = STANDARD) -> None:
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes")
        self._enc = suite.keystream(bytes(seed), _PREFIX + bytes(label))
        self._zeros = b""

    def _zero(self, nbytes: int) -> bytes:
        if len(self._zeros) < nbytes:
            self._zeros = bytes(nbytes)
        return self._zeros if len(self._zeros) == nbytes else self._zeros[:nbytes]

    def words(self, n: int) -> np.ndarray:
        """The next ``n`` words as a new uint64 array."""
        return np.frombuffer(self._enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64, copy=False)

    def add_into(self, out: np.ndarray, *, subtract: bool = False) -> None:
        """``out += next words`` (or ``-=``) modulo 2**64, in place, chunked."""
        if out.dtype != np.uint64 or out.ndim != 1 or not out.flags.c_contiguous:
            raise ValueError("add_into needs a contiguous 1-D uint64 array")
        n = out.shape[0]
        buf = np.empty(min(_CHUNK_WORDS, n), dtype="<u8")
        raw = buf.view(np.uint8)
        op = np.subtract if subtract else np.add
        for start in range(0, n, _CHUNK_WORDS):
            m = min(_CHUNK_WORDS, n - start)
            self._enc.update_into(self._zero(8 * m), raw[: 8 * m].data)
            seg = out[start : start + m]
            op(seg, buf[:m], out=seg)


def expand(seed: bytes, label: bytes, n: int, modulus_bits: int, *, suite: CryptoSuite = STANDARD) -> np.ndarray:
    """``n`` uniform elements of Z_(2**modulus_bits) from ``(seed, label)`` (uint64)."""
    if not 1 <= modulus_bits <= 64:
        raise ValueError("modulus_bits must be in [1, 64]")
    words = KeyStream(seed, label, suite=suite).words(n).copy()
    if modulus_bits < 64:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


def add_mask(
    out: np.ndarray, seed: bytes, label: bytes, *, subtract: bool = False, suite: CryptoSuite = STANDARD
) -> None:
    """Add (or subtract) the mask of ``(seed, label)`` into ``out`` modulo 2**64, in place.

    The caller reduces with ``out &= M - 1`` once after all masks are applied.
    """
    KeyStream(seed, label, suite=suite).add_into(out, subtract=subtract)
