"""Customers that institutions share go to the same side of the train/test split everywhere.

When institutions share customers (a client of both the bank and the broker, each
holding its own columns for her), a federated model must not be tested at one
institution on a customer it trained on at another: that test scores a customer the
model has seen and inflates the metrics. So every institution that holds a shared
customer puts her on the same side of its split. They agree on it without exchanging
any identifier:

1. **Alignment.** Every pair of institutions runs a both-sides PSI on its id columns
   (:mod:`fedsilo.peers.alignment`; the lower-indexed one is the PSI receiver). Both learn
   which of their own rows are shared, in one common order (sorted by the doubly
   blinded element ``H(id)^ab`` that both hold), and nothing about the other's
   customers outside the intersection.
2. **Pins, in index order.** Institution ``i`` splits its rows
   (:func:`fedsilo.peers.data.bank.split_train_test`, stratified and seeded), keeping the
   sides that lower-indexed institutions pinned, then sends each higher-indexed
   institution ``j`` one *pin frame*: the side of every customer they share, one bit
   per customer in their common order. ``j`` pins those rows before it splits. So a
   shared customer's side is the one the lowest-indexed institution holding her
   drew, and every other holder copies it; by induction all pin frames about one
   customer agree, and a frame that contradicts a side already pinned (which only a
   deviating party can send) is refused.

What crosses between institutions: PSI frames (group elements only) and pin frames
(a count and bits). What an institution learns beyond the PSI's results: the
lower-indexed one's train/test side of the customers they share, a stratified draw at
the test fraction within each class (so a side says nothing of the customer's label
beyond that fraction's rounding).

Where the split's randomness comes from: ``seed`` (an int) makes the split reproducible,
which simulations need (the same run gives the same split). Between daemons the seed is
the signed job's, known to every member and the host, so anyone holding a table could
recompute its split; there ``seed=None`` draws each institution's free rows from the OS
CSPRNG (32 bytes of ``os.urandom``), and the agreed sides are kept (written into the
job's split column), not recomputed. The pins still carry the lowest holder's side to
every other holder, so the agreement does not depend on the seed.

Why not derive the side from a keyed hash of ``H(id)^ab`` (no pin frames at all):
every pair has its own element, so a customer held by three institutions would get
up to three unrelated sides; and the element changes with the PSI's fresh keys on
every run, so the split would not be reproducible from the seed.

:class:`HoldoutMember` is one institution's transport-agnostic half;
:func:`agree_holdout` runs the whole agreement in one process (simulations, tests),
passing every frame through ``wire`` if given. Semi-honest model, as the PSI.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsilo.errors import DataError, ProtocolError
from fedsilo.peers.alignment import AlignmentSide
from fedsilo.peers.data.bank import FREE, TEST, TRAIN, split_train_test
from fedsilo.privacy.psi import Workers, canonical, exchange

__all__ = ["HoldoutMember", "PairAlignment", "SharedHoldout", "agree_holdout", "pin_frame", "read_pin_frame"]

_MAGIC = b"FSHP"
_VERSION = 1
_HEADER = struct.Struct(">4sBI")


def pin_frame(sides: np.ndarray) -> bytes:
    """The frame carrying ``sides`` (TRAIN or TEST per shared customer, in a pair's common order)."""
    sides = np.asarray(sides)
    return _HEADER.pack(_MAGIC, _VERSION, len(sides)) + np.packbits(sides == TEST).tobytes()


def read_pin_frame(frame: bytes, expected: int) -> np.ndarray:
    """The sides in a pin frame about ``expected`` shared customers; ProtocolError if it is not one."""
    if len(frame) < _HEADER.size:
        raise ProtocolError(f"a pin frame has a {_HEADER.size}-byte header; got {len(frame)} bytes")
    magic, version, count = _HEADER.unpack_from(frame)
    if magic != _MAGIC or version != _VERSION:
        raise ProtocolError(f"not a version-{_VERSION} pin frame: refused")
    if count != expected or len(frame) != _HEADER.size + (count + 7) // 8:
        raise ProtocolError(
            f"a pin frame about {count} customers in {len(frame)} bytes, where the alignment shares {expected}: refused"
        )
    bits = np.unpackbits(np.frombuffer(frame, np.uint8, offset=_HEADER.size))
    if bits[count:].any():
        raise ProtocolError("a pin frame with bits set past its count: refused")
    return np.where(bits[:count] == 1, TEST, TRAIN).astype(np.int8)


class HoldoutMember:
    """One institution's half: its labels, its alignments with the others, its pinned sides.

    Call :meth:`aligned` with each alignment's rows, :meth:`receive` every pin frame
    from lower-indexed institutions (in any order), then :meth:`split` once, then
    :meth:`frame_for` each higher-indexed institution.
    """

    def __init__(self, index: int, labels: np.ndarray, test_fraction: float, seed: int | None) -> None:
        self.index, self.labels = index, np.asarray(labels)
        self.test_fraction, self.seed = test_fraction, seed
        self.pinned = np.full(len(self.labels), FREE, dtype=np.int8)
        self.rows: dict[int, np.ndarray] = {}
        self.sides: np.ndarray | None = None

    def aligned(self, peer: int, rows: np.ndarray) -> None:
        """This side's rows shared with ``peer``, in the pair's common order."""
        self.rows[peer] = np.asarray(rows, dtype=np.int64)

    def receive(self, peer: int, frame: bytes) -> None:
        """Pin the sides a lower-indexed ``peer`` sent; refuse a frame that contradicts a pin."""
        if peer >= self.index or peer not in self.rows:
            raise ProtocolError(
                f"institution {self.index} takes pins only from a lower-indexed institution it "
                f"aligned with; {peer} is not one"
            )
        if self.sides is not None:
            raise ProtocolError(f"institution {self.index} has already split its rows; pins arrived too late")
        rows = self.rows[peer]
        sides = read_pin_frame(frame, len(rows))
        held = self.pinned[rows]
        if ((held != FREE) & (held != sides)).any():
            raise ProtocolError(
                f"institution {peer}'s pins contradict sides already agreed for "
                f"{int(((held != FREE) & (held != sides)).sum())} shared customers: refused"
            )
        self.pinned[rows] = sides

    def split(self) -> np.ndarray:
        """TRAIN or TEST per row: pinned rows keep their side, the rest are split as usual.

        With ``seed=None`` the free rows are drawn from the OS CSPRNG (fresh at every call).
        """
        if self.sides is not None:
            raise ProtocolError(f"institution {self.index} has already split its rows; it splits once")
        seed = int.from_bytes(os.urandom(32), "big") if self.seed is None else self.seed
        _, test = split_train_test(self.labels, self.test_fraction, seed, self.pinned)
        sides = np.full(len(self.labels), TRAIN, dtype=np.int8)
        sides[test] = TEST
        self.sides = sides
        return sides

    def frame_for(self, peer: int) -> bytes:
        """The pin frame for a higher-indexed ``peer`` (after :meth:`split`)."""
        if self.sides is None or peer <= self.index or peer not in self.rows:
            raise ProtocolError(
                f"institution {self.index} sends pins, after its split, only to a higher-indexed "
                f"institution it aligned with; {peer} is not one"
            )
        return pin_frame(self.sides[self.rows[peer]])


@dataclass(frozen=True)
class PairAlignment:
    """Two institutions' shared customers: ``rows_low[k]`` and ``rows_high[k]`` are one customer."""

    low: int
    high: int
    rows_low: np.ndarray
    rows_high: np.ndarray

    @property
    def shared(self) -> int:
        return len(self.rows_low)


@dataclass(frozen=True)
class SharedHoldout:
    """The agreed split: TRAIN or TEST per row of each institution, and the pairs' alignments."""

    sides: list[np.ndarray]
    pairs: list[PairAlignment]


def _check_ids(index: int, ids: Sequence[str], kind: str | None) -> None:
    forms = [canonical(str(x), kind) for x in ids]
    if len(set(forms)) != len(forms):
        raise DataError(
            f"institution {index} lists {len(forms) - len(set(forms))} customer id(s) more than once "
            f"(same canonical form): give each customer one row before agreeing on a split"
        )


def agree_holdout(
    ids: Sequence[Sequence[str]],
    labels: Sequence[np.ndarray],
    test_fraction: float,
    seed: int | None,
    *,
    kind: str | None = "id",
    workers: Workers | None = None,
    wire: Callable[[bytes], None] | None = None,
) -> SharedHoldout:
    """Every institution's split, with each shared customer on one side at all its holders.

    ``ids[i]`` and ``labels[i]`` are institution ``i``'s customer ids and labels, row for
    row (ids distinct per institution). ``wire`` sees every frame that would cross
    between institutions. ``seed=None`` draws every split from the OS CSPRNG (see the
    module docstring). Runs the protocol of the module docstring in one process.
    """
    if len(ids) != len(labels):
        raise DataError(f"{len(ids)} id lists for {len(labels)} label arrays: give one of each per institution")
    for i, (own, own_labels) in enumerate(zip(ids, labels)):
        if len(own) != len(own_labels):
            raise DataError(f"institution {i} has {len(own)} ids for {len(own_labels)} labels: one per row")
        _check_ids(i, own, kind)
    wire = wire or (lambda frame: None)
    members = [HoldoutMember(i, y, test_fraction, seed) for i, y in enumerate(labels)]
    pairs = []
    for low in range(len(ids)):
        for high in range(low + 1, len(ids)):
            a = AlignmentSide(pd.DataFrame({"id": list(ids[low])}), "id", "receiver", kind=kind, workers=workers)
            b = AlignmentSide(pd.DataFrame({"id": list(ids[high])}), "id", "sender", kind=kind, workers=workers)
            exchange(a.psi, b.psi, tap=lambda _direction, frame: wire(frame))
            pair = PairAlignment(low, high, a.rows(), b.rows())
            members[low].aligned(high, pair.rows_low)
            members[high].aligned(low, pair.rows_high)
            pairs.append(pair)
    for member in members:
        member.split()
        for peer in range(member.index + 1, len(members)):
            frame = member.frame_for(peer)
            wire(frame)
            members[peer].receive(member.index, frame)
    return SharedHoldout([m.sides for m in members], pairs)
