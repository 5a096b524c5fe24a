"""Oblivious-transfer building blocks for :mod:`fedsilo.privacy.psi.kkrt`: base OTs, PRG, bit transposes.

Base OTs: the "simplest OT" of Chou and Orlandi (LATINCRYPT 2015), on ristretto255
(libsodium, the group :mod:`fedsilo.privacy.psi.group` binds) instead of the paper's
Curve25519, because the protocol adds and subtracts points (x-only X25519 cannot) and
ristretto255 has prime order, so no cofactor can leak a choice bit::

    OT sender (seeds)                 OT receiver (choice bits c_i)
    a random, A = aG          ->
                              <-      B_i = b_i G + c_i A      (b_i random, i < k)
    k_i0 = H(i, A, B_i, a B_i)        k_i = H(i, A, B_i, b_i A)  (= k_{i, c_i})
    k_i1 = H(i, A, B_i, a (B_i - A))

``H`` is SHA-256 truncated to 16 bytes (an AES key), modelled as a random oracle; one
``a`` serves all ``k`` OTs, the index ``i`` separates them. Semi-honest security rests
on CDH in ristretto255 in the random-oracle model; the paper's claim of UC security
against malicious parties does not hold as stated (Genç, Iovino and Rial, "'The
simplest protocol for oblivious transfer' revisited", IPL 2020), which does not
concern the semi-honest use here. Every received point is checked by libsodium
(canonical encoding, not the identity) before a secret touches it.

PRG: AES-128 in CTR mode keyed by a seed (``cryptography``, AES-NI), expanding one
seed into a column of a bit matrix. Bit matrices are ``uint8`` arrays, bit ``b`` of a
row in byte ``b // 8`` at bit ``b % 8`` (least significant first); :func:`transpose`
moves between rows and columns with 64×64 block transposes on ``uint64`` words.
Randomness comes from the OS CSPRNG (``os.urandom``, libsodium's ``randombytes``).
"""

from __future__ import annotations

import ctypes
import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsilo.errors import PsiFrameError
from fedsilo.privacy.psi import group

__all__ = ["SEED_BYTES", "OtSender", "OtReceiver", "prg", "transpose", "aes_ecb"]

SEED_BYTES = 16
_lib = group.lib
_vp = ctypes.c_void_p
_lib.crypto_scalarmult_ristretto255_base.argtypes = [_vp, _vp]
_lib.crypto_core_ristretto255_add.argtypes = [_vp, _vp, _vp]
_lib.crypto_core_ristretto255_sub.argtypes = [_vp, _vp, _vp]
_E = group.ELEMENT_BYTES


def _base(scalar: bytes) -> bytes:
    out = ctypes.create_string_buffer(_E)
    if _lib.crypto_scalarmult_ristretto255_base(out, scalar) != 0:
        raise PsiFrameError("a base-OT scalar gave the identity; the run was aborted")
    return out.raw


def _mul(scalar: bytes, point: bytes, what: str) -> bytes:
    out = ctypes.create_string_buffer(_E)
    if _lib.crypto_scalarmult_ristretto255(out, scalar, point) != 0:
        raise PsiFrameError(f"{what} is not a valid ristretto255 point; the peer's message was refused")
    return out.raw


def _key(index: int, a: bytes, b: bytes, shared: bytes) -> bytes:
    data = b"fedsilo/psi/base-ot/v1" + index.to_bytes(4, "big") + a + b + shared
    return hashlib.sha256(data).digest()[:SEED_BYTES]


class OtSender:
    """The side that holds ``k`` pairs of random seeds and learns nothing of the choices."""

    def __init__(self) -> None:
        self._a = group.random_scalar()
        self.first = _base(self._a)
        """``A``: the message to send the receiver (32 bytes)."""

    def seeds(self, replies: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """From the receiver's ``B_i``: the seeds ``k_i0`` and ``k_i1`` (16 bytes each)."""
        zero, one = [], []
        aa = _mul(self._a, self.first, "the base-OT first message")
        diff = ctypes.create_string_buffer(_E)
        for i, b in enumerate(replies):
            ab = _mul(self._a, b, f"base-OT point {i}")
            _lib.crypto_core_ristretto255_sub(diff, ab, aa)  # a (B_i - A) = a B_i - a A
            zero.append(_key(i, self.first, b, ab))
            one.append(_key(i, self.first, b, diff.raw))
        return zero, one


class OtReceiver:
    """The side that chooses one seed of each pair: ``choices`` is a sequence of bits."""

    def __init__(self, first: bytes, choices: np.ndarray) -> None:
        if len(first) != _E:
            raise PsiFrameError("a base-OT first message is 32 bytes; the message was refused")
        self.replies: list[bytes] = []
        """``B_i``: the messages to send the sender (32 bytes each)."""
        self.seeds: list[bytes] = []
        """``k_{i, c_i}``: the chosen seeds (16 bytes each)."""
        total = ctypes.create_string_buffer(_E)
        for i, choice in enumerate(choices):
            b = group.random_scalar()
            point = _base(b)
            if choice:
                if _lib.crypto_core_ristretto255_add(total, point, first) != 0:
                    raise PsiFrameError("the base-OT first message is not a valid ristretto255 point")
                point = total.raw
            self.replies.append(point)
            self.seeds.append(_key(i, first, point, _mul(b, first, "the base-OT first message")))


def prg(seed: bytes, nbytes: int, offset: int = 0) -> np.ndarray:
    """Bytes ``offset`` to ``offset + nbytes`` of a 16-byte seed's pseudorandom stream (AES-128-CTR from counter 0).

    A slice of the stream costs only its own blocks (the counter starts at ``offset // 16``),
    so a long column can be expanded piece by piece with the same bytes as in one call.
    """
    block, skip = divmod(offset, 16)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(block.to_bytes(16, "big"))).encryptor()
    return np.frombuffer(encryptor.update(bytes(skip + nbytes)), dtype=np.uint8)[skip:]


def aes_ecb(key: bytes, blocks: np.ndarray) -> np.ndarray:
    """AES-128 of every 16-byte block of ``blocks`` (a contiguous uint8 array), same shape."""
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    data = np.ascontiguousarray(blocks)
    return np.frombuffer(encryptor.update(data.tobytes()), dtype=np.uint8).reshape(data.shape)


_STAGES = [
    (np.uint64(j), np.uint64(mask))
    for j, mask in [
        (32, 0x00000000FFFFFFFF),
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    ]
]


def transpose(matrix: np.ndarray) -> np.ndarray:
    """The transpose of a bit matrix: ``(r, c)`` bytes (``r`` rows of ``8 c`` bits) -> ``(8 c, r / 8)``.

    ``r`` must be a multiple of 64 and ``c`` of 8. Bits as in the module doc (least
    significant first), so a little-endian ``uint64`` holds 64 columns of one row. Each
    64×64 block is transposed in six stages, all blocks at once: stage ``j`` (32, 16, …, 1)
    swaps the off-diagonal ``j × j`` sub-blocks of every ``2j × 2j`` sub-block (Hacker's
    Delight, §7-3), then the blocks trade places.
    """
    rows, cols = matrix.shape
    if rows % 64 or cols % 8:
        raise ValueError("a bit matrix to transpose needs a multiple of 64 rows and of 8 bytes per row")
    words = cols // 8
    x = np.array(matrix, dtype=np.uint8, order="C").view("<u8").reshape(rows // 64, 64, words)
    for j, mask in _STAGES:
        pairs = x.reshape(rows // 64, 32 // int(j), 2, int(j), words)
        low, high = pairs[:, :, 0], pairs[:, :, 1]
        t = ((low >> j) ^ high) & mask
        high ^= t
        low ^= t << j
    return np.ascontiguousarray(x.transpose(2, 1, 0)).reshape(64 * words, rows // 64).view(np.uint8)
