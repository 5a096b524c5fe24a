"""Shared customers for split learning: one order and one train/test side per customer, no raw id crossing.

The label holder aligns with each feature party by both-sides PSI
(:class:`fedsilo.peers.alignment.AlignmentSide`; the label holder is the receiver): both
learn which of their own rows are shared and hold them in one common order, sorted by
the doubly blinded element ``H(id)^ab``; neither learns anything about the other's
customers outside the intersection beyond their number. Both compute the same
:attr:`PairAlignment.digest` (SHA-256 of the ordered elements): comparing digests
before training catches a party with another intersection or another order.

Sides: the label holder splits all its rows (stratified by its labels, seeded:
:func:`fedsilo.peers.data.bank.split_train_test`) and sends each feature party a pin
frame (:func:`fedsilo.peers.shared_holdout.pin_frame`: one bit per shared customer, in
the pair's order). The feature party learns the side of each shared customer, nothing
else; it refuses a training batch that asks for a test customer.

With several feature parties, the label holder trains on the customers it shares with
all of them and addresses each party in that party's own order; a feature party then
learns which of its shared customers are also shared with the others (those it is asked
about in training). Stated in the card.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsilo.errors import DataError
from fedsilo.peers.alignment import AlignmentSide
from fedsilo.peers.data.bank import TEST, TRAIN, split_train_test
from fedsilo.peers.shared_holdout import pin_frame, read_pin_frame
from fedsilo.privacy.psi import exchange

__all__ = ["PairAlignment", "VerticalAlignment", "align_vertical"]


@dataclass(frozen=True)
class PairAlignment:
    """One party's view of its alignment with one other party.

    ``rows[p]`` is this party's table row of the customer at position ``p`` of the pair's
    order; ``sides[p]`` is TRAIN or TEST; ``digest`` identifies the order.
    """

    rows: np.ndarray
    sides: np.ndarray
    digest: str

    @property
    def shared(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class VerticalAlignment:
    """The label holder's side (``holder[k]``, with feature party k) and each feature party's (``parties[k]``)."""

    holder: list[PairAlignment]
    parties: list[PairAlignment]
    holder_sides: np.ndarray  # TRAIN or TEST for every row of the label holder's table

    def joint(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The label holder's rows shared with every feature party (ascending), and their positions in each pair."""
        common = self.holder[0].rows
        for pair in self.holder[1:]:
            common = np.intersect1d(common, pair.rows)
        common = np.sort(common)
        positions = []
        for pair in self.holder:
            where = np.full(int(self.holder_sides.shape[0]), -1, dtype=np.int64)
            where[pair.rows] = np.arange(pair.shared)
            positions.append(where[common])
        return common, positions


def _digest(side: AlignmentSide) -> str:
    keys = side.psi.result().shared_keys
    ordered = np.ascontiguousarray(keys)[
        np.argsort(np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel(), kind="stable")
    ]
    return hashlib.sha256(ordered.tobytes()).hexdigest()


def align_vertical(
    holder_ids: Sequence[str],
    labels: np.ndarray,
    party_ids: Sequence[Sequence[str]],
    test_fraction: float,
    seed: int,
    *,
    kind: str = "customer",
    wire: Callable[[bytes], None] | None = None,
) -> VerticalAlignment:
    """Run the alignments and the pin frames in one process (simulations, tests); ``wire`` sees every frame."""
    labels = np.asarray(labels)
    if len(holder_ids) != len(labels):
        raise DataError(f"the label holder has {len(holder_ids)} ids for {len(labels)} labels: one per row")
    wire = wire or (lambda frame: None)
    train, test = split_train_test(labels, test_fraction, seed)
    holder_sides = np.full(len(labels), TRAIN, dtype=np.int8)
    holder_sides[test] = TEST
    holder, parties = [], []
    for ids in party_ids:
        a = AlignmentSide(pd.DataFrame({"id": list(holder_ids)}), "id", "receiver", kind=kind)
        b = AlignmentSide(pd.DataFrame({"id": list(ids)}), "id", "sender", kind=kind)
        exchange(a.psi, b.psi, tap=lambda _direction, frame: wire(frame))
        rows_a, rows_b = a.rows(), b.rows()
        sides = holder_sides[rows_a]
        frame = pin_frame(sides)
        wire(frame)
        holder.append(PairAlignment(rows_a, sides, _digest(a)))
        parties.append(PairAlignment(rows_b, read_pin_frame(frame, len(rows_b)), _digest(b)))
    return VerticalAlignment(holder, parties, holder_sides)
