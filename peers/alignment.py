"""Sample alignment: two institutions line up the rows of their shared customers by PSI.

Vertical and transfer setups need, at both institutions, the rows of the customers
they share, in one common order, without either side learning the other's customers
outside the intersection and without any raw identifier crossing the wire. Each side
runs :mod:`fedsilo.privacy.psi` in both-sides mode on its id column; both then hold, for each
shared customer, the same doubly blinded element ``H(id)^ab`` and sort their matched
rows by it. Row ``i`` of one side's aligned rows is the same customer as row ``i`` of
the other's.

What each side learns: the number of distinct ids the other holds and which of its
own rows are shared (semi-honest model, see :mod:`fedsilo.privacy.psi.protocol`). The order
is pseudorandom: it says nothing about the other side's row order.

:class:`AlignmentSide` is the transport-agnostic half a peer runs (the daemon carries
its frames); :func:`align_local` runs both halves in one process (simulations, tests).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from fedsilo.errors import DataError
from fedsilo.privacy.psi import Mode, PsiReceiver, PsiResult, PsiSender, Workers, exchange

__all__ = ["AlignmentSide", "aligned_rows", "align_local"]


def _ids(table: pd.DataFrame, id_column: str) -> Iterable[str]:
    if id_column not in table.columns:
        raise DataError(f"id column {id_column!r} is not in the table; columns: {', '.join(map(str, table.columns))}")
    column = table[id_column]
    if column.isna().any():
        raise DataError(f"id column {id_column!r} has missing values; fill or drop those rows before aligning")
    return (str(v) for v in column)


def aligned_rows(result: PsiResult) -> np.ndarray:
    """This side's row positions of the shared customers, in the order both sides share."""
    if result.positions is None or result.shared_keys is None:
        raise DataError("sample alignment needs a both-sides PSI result")
    keys = np.ascontiguousarray(result.shared_keys).view(np.dtype((np.void, result.shared_keys.shape[1]))).ravel()
    return result.positions[np.argsort(keys, kind="stable")]


class AlignmentSide:
    """One institution's half of a sample alignment over its table's ``id_column``.

    ``role`` is ``"receiver"`` (starts: send :meth:`request_frames`) or ``"sender"``;
    feed every frame from the other side to :meth:`handle` and send what it returns.
    Duplicate ids in the column: the first row with that id is used (documented PSI
    behaviour). ``kind`` types the ids (see :mod:`fedsilo.privacy.psi.identifiers`).
    """

    def __init__(
        self, table: pd.DataFrame, id_column: str, role: str, *, kind: str = "id", workers: Workers | None = None
    ) -> None:
        if role not in ("receiver", "sender"):
            raise DataError(f"an alignment role is 'receiver' or 'sender', got {role!r}")
        side = PsiReceiver if role == "receiver" else PsiSender
        self.psi = side(_ids(table, id_column), kind=kind, mode=Mode.TO_BOTH, workers=workers)

    def request_frames(self):
        """The receiver's first frames (receiver only)."""
        return self.psi.request_frames()

    def handle(self, frame: bytes) -> list[bytes]:
        """Consume one frame of the other side; return the frames to send back."""
        return self.psi.handle(frame)

    def rows(self) -> np.ndarray:
        """Row positions of the shared customers in the common order (after the run)."""
        return aligned_rows(self.psi.result())


def align_local(
    table_a: pd.DataFrame,
    id_a: str,
    table_b: pd.DataFrame,
    id_b: str,
    *,
    kind: str = "id",
    workers: Workers | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions ``(rows_a, rows_b)``: ``table_a.iloc[rows_a[i]]`` and
    ``table_b.iloc[rows_b[i]]`` are the same customer, for every ``i``."""
    a = AlignmentSide(table_a, id_a, "receiver", kind=kind, workers=workers)
    b = AlignmentSide(table_b, id_b, "sender", kind=kind, workers=workers)
    exchange(a.psi, b.psi)
    return a.rows(), b.rows()
