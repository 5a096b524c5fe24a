"""Cuckoo hashing with three hash functions, vectorized: each item in one of its three bins.

Used by the receiver of :mod:`fedsilo.privacy.psi.kkrt`. Hash function ``i`` of an item
with 16-byte digest ``d`` is ``AES_key(d xor tweak_t)`` read as little-endian 64-bit
integers, the ``i``-th of them modulo the number of bins (the bias of the reduction,
below ``bins / 2^64``, only affects the load). ``key`` is 16 random bytes the receiver
draws and sends, so the sender computes the same bins.

Insertion runs all homeless items at once (a parallel random walk): each claims the
bin of its current hash function; of the items claiming one bin one wins and evicts
the occupant; every loser and evictee moves to one of its other two hash functions,
chosen at random. With ``1.27 n + 64`` bins (load below 0.79, under the 0.918
threshold of three-way cuckoo hashing) the homeless shrink geometrically; a table
that has not settled after :data:`ROUNDS` rounds is reported as a failure, and the
caller draws a new key (Pinkas, Schneider and Zohner, "Scalable private set
intersection based on OT extension", ACM TOPS 2018, measure the failure rate of
stash-less three-way tables with 1.27 n bins below 2^-40 for large n; the extra 64
bins cover small sets).
"""

from __future__ import annotations

import math
import os

import numpy as np

from fedsilo.privacy.psi.ot import aes_ecb

__all__ = ["HASHES", "ROUNDS", "bins_for", "bin_indices", "place"]

HASHES = 3
ROUNDS = 2000
_TWEAKS = np.zeros((2, 16), dtype=np.uint8)
_TWEAKS[1, 15] = 1


def bins_for(items: int) -> int:
    """Bins for ``items`` distinct items: ``1.27 items + 64``, rounded up to a multiple of 64."""
    return 64 * math.ceil((math.ceil(1.27 * items) + 64) / 64)


def bin_indices(key: bytes, digests: np.ndarray, bins: int) -> np.ndarray:
    """``(n, 3)`` int64: the three bins of each 16-byte digest (rows of ``digests``)."""
    blocks = (digests[:, None, :] ^ _TWEAKS[None, :, :]).reshape(-1, 16)
    words = aes_ecb(key, blocks).view("<u8").reshape(len(digests), 4)[:, :HASHES]
    return (words % np.uint64(bins)).astype(np.int64)


def place(candidates: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Put item ``k`` in one of the bins ``candidates[k]``; ``None`` if the table did not settle.

    Returns, per bin, the item in it (-1 for an empty bin) and the hash function that put
    it there (0-2; 0 for an empty bin).
    """
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "big"))
    occupant = np.full(bins, -1, dtype=np.int64)
    choice = np.zeros(len(candidates), dtype=np.int64)
    homeless = np.arange(len(candidates), dtype=np.int64)
    for _ in range(ROUNDS):
        if len(homeless) == 0:
            used = occupant >= 0
            which = np.zeros(bins, dtype=np.int8)
            which[used] = choice[occupant[used]]
            return occupant, which
        homeless = homeless[rng.permutation(len(homeless))]  # who wins a contested bin is random
        target = candidates[homeless, choice[homeless]]
        _, first = np.unique(target, return_index=True)
        winners = homeless[first]
        lost = np.ones(len(homeless), dtype=bool)
        lost[first] = False
        evicted = occupant[target[first]]
        occupant[target[first]] = winners
        moved = np.concatenate([homeless[lost], evicted[evicted >= 0]])
        choice[moved] = (choice[moved] + rng.integers(1, HASHES, len(moved))) % HASHES
        homeless = moved
    return None
