"""The coded scheme of vertical learning: the bank releases each shared customer's code once, nothing comes back.

The split scheme (:mod:`.parties`) releases a noisy embedding of every training row
twice per epoch and gradients back; at ε = 3 per party its noise drowns the bank's
signal. The coded scheme releases each shared row's information **once**, as a
low-cardinality code through k-ary randomized response
(:class:`fedsilo.privacy.vertical.CodeRelease`, pure ε-DP per row):

1. the feature party (the bank) computes, for each of its shared customers, a code
   ``c = q(f(x))`` in 0 … k−1 from its own raw columns. Here ``f`` is the
   **delinquency rule** :func:`delinquency_codes` (k = 4): 0 never late in the six
   repayment statuses, 1 late in an earlier month but not in the latest, 2 one month
   late in the latest status, 3 two or more months late in the latest. The rule is
   fixed before any data is seen (credit-risk practice, not fitted), so ``f`` spends
   ε₁ = 0 and the whole budget goes to the code;
2. the label holder (the broker) asks once for the codes of the shared training
   customers (a :class:`~.messages.BatchRequest`); the bank answers with
   :class:`~.messages.Codes`, each row drawn once by k-RR at its ε and stored: any
   later request for that row gets the stored code (post-processing, no further ε);
3. the broker trains its model on its own columns and the one-hot code, on its own
   machine; it releases nothing (no gradient, no label), so its labels and columns
   need no DP against the bank: the bank receives batch positions only, which do
   not depend on any label;
4. scoring a shared held-out (or a new) customer: the broker asks for her code, which
   the bank releases once at the same ε (charged to her row).

Each party's ledger holds exactly its mechanisms: the bank one
:class:`~fedsilo.privacy.accounting.mechanism.PureMechanism` (ε, 1 release) for its
worst row (every released row is released once); the broker none. What is not
covered: the broker's model and scores are not released to anyone (if it published
them, its own columns would need DP-SGD); the bank's choice of rule is public.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsilo.errors import BudgetExceeded, ConfigError, DataError, ProtocolError
from fedsilo.peers.data.bank import TEST
from fedsilo.peers.vertical.messages import BatchRequest, Codes, check_codes
from fedsilo.privacy.accounting import PureMechanism, epsilon_spent
from fedsilo.privacy.noise_source import NoiseSource
from fedsilo.privacy.vertical import CodeRelease

__all__ = [
    "DELINQUENCY_COLUMNS",
    "DELINQUENCY_K",
    "CodeBudget",
    "CodedParty",
    "CodesReceived",
    "delinquency_codes",
    "one_hot",
]

#: The repayment statuses (months: September back to April); > 0 means that many months late.
DELINQUENCY_COLUMNS = ("pay_0", "pay_2", "pay_3", "pay_4", "pay_5", "pay_6")
#: Codes: 0 never late, 1 late earlier but not in the latest status, 2 one month late now, 3 two or more now.
DELINQUENCY_K = 4


def delinquency_codes(frame: pd.DataFrame) -> np.ndarray:
    """Each row's code in 0 … 3 from its six repayment statuses (> 0: that many months late).

    3 if the latest status ``pay_0`` is ≥ 2, 2 if it is 1, else 1 if any earlier status
    is late, else 0. Fixed before any data is seen (no parameter is fitted): a function
    of the row alone. A missing status counts as not late. DataError if a column is absent.
    """
    missing = [c for c in DELINQUENCY_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"the delinquency code needs the repayment-status columns {missing}")
    status = {c: pd.to_numeric(frame[c], errors="coerce").fillna(0).to_numpy() for c in DELINQUENCY_COLUMNS}
    ever_late = np.any([status[c] > 0 for c in DELINQUENCY_COLUMNS], axis=0)
    latest = status[DELINQUENCY_COLUMNS[0]]
    return np.select([latest >= 2, latest == 1, ever_late], [3, 2, 1], 0).astype(np.int64)


@dataclass(frozen=True)
class CodeBudget:
    """A party's budget for the coded scheme: ε per row's one code (k-RR), within (``epsilon``, ``delta``)."""

    release_epsilon: float
    epsilon: float
    delta: float
    accountant: str = "prv"


class CodedParty:
    """A feature party of the coded scheme: its shared customers' codes, each released at most once.

    ``codes[p]`` is the true code of the customer at position ``p`` of the agreed order,
    ``sides[p]`` her side, ``digest`` the order's. ``budget`` None: the codes are sent
    in the clear (the no-DP yardstick). ``noise`` gives the k-RR coins (SecureNoise).
    """

    def __init__(
        self,
        name: str,
        codes: np.ndarray,
        sides: np.ndarray,
        digest: str,
        k: int,
        budget: CodeBudget | None = None,
        noise: NoiseSource | None = None,
    ) -> None:
        codes = np.asarray(codes)
        if len(codes) != len(sides):
            raise DataError(f"{name}: {len(codes)} codes for {len(sides)} sides")
        self.name, self.k, self.digest, self.budget, self.noise = name, k, digest, budget, noise
        self.codes = check_codes(codes, len(codes), k, name)
        self.sides = np.asarray(sides)
        self.release = CodeRelease(k, budget.release_epsilon) if budget else None
        if budget is not None and noise is None:
            raise ConfigError(f"{name}: a private release of codes needs a noise source (SecureNoise)")
        self.released = np.full(len(codes), -1, dtype=np.int64)  # position → its one released code, −1: not yet

    def hello(self) -> dict:
        """What the label holder checks before asking: the order's digest, its size, the number of codes."""
        return {"party": self.name, "shared": len(self.codes), "digest": self.digest, "k": self.k}

    def answer(self, request: BatchRequest) -> Codes:
        """The released codes of the requested rows: new rows drawn once (charged first), repeats as stored."""
        positions = np.asarray(request.positions, dtype=np.int64)
        if positions.ndim != 1 or positions.size == 0:
            raise DataError(f"{self.name}: a request lists at least one position")
        if positions.min() < 0 or positions.max() >= len(self.codes):
            raise DataError(
                f"{self.name}: position {int(positions.max())} is outside the agreed 0 … {len(self.codes) - 1}: refused"
            )
        if len(np.unique(positions)) != len(positions):
            raise DataError(f"{self.name}: a request lists a position twice: refused")
        if request.training and (self.sides[positions] == TEST).any():
            raise DataError(f"{self.name}: a training request asks for held-out customers: refused")
        new = positions[self.released[positions] < 0]
        if new.size:
            if self.release is not None:
                spent = self._epsilon([PureMechanism(self.release.epsilon, 1)])
                if spent > self.budget.epsilon:
                    raise BudgetExceeded(
                        f"{self.name}: one code per customer spends ε = {spent:.3f} > its budget "
                        f"ε = {self.budget.epsilon:g}; nothing was released"
                    )
                self.released[new] = self.release.apply(self.codes[new], self.noise)
            else:
                self.released[new] = self.codes[new]
        return Codes(self.name, request.batch, self.k, self.released[positions].copy())

    def _epsilon(self, mechanisms: list) -> float:
        return epsilon_spent(mechanisms, self.budget.delta, self.budget.accountant)

    def mechanisms(self) -> list[PureMechanism]:
        """What its ledger commits: one k-RR release of its worst row (none if nothing was released)."""
        if self.release is None or not (self.released >= 0).any():
            return []
        return [PureMechanism(self.release.epsilon, 1)]

    def spent(self) -> float:
        """ε of its worst row (every released row is released exactly once)."""
        mechanisms = self.mechanisms()
        return self._epsilon(mechanisms) if mechanisms else 0.0


class CodesReceived:
    """The label holder's side: asks for codes, checks each answer against what it asked, keeps them by position.

    ``shared``/``digest``/``k`` are what the alignment agreed with ``party``; an answer
    from another party, for a batch not asked, of the wrong shape, NaN or out of range
    is refused (nothing is kept from it).
    """

    def __init__(self, party: str, shared: int, digest: str, k: int) -> None:
        self.party, self.shared, self.digest, self.k = party, shared, digest, k
        self.codes = np.full(shared, -1, dtype=np.int64)
        self.asked: dict[int, np.ndarray] = {}

    def connect(self, hello: dict) -> None:
        """Refuse a party whose alignment or number of codes is not the agreed one."""
        if hello.get("party") != self.party:
            raise ProtocolError(f"expected party {self.party!r}, {hello.get('party')!r} answered")
        if hello.get("shared") != self.shared or hello.get("digest") != self.digest:
            raise ProtocolError(
                f"{self.party}: its alignment ({hello.get('shared')} customers) is not the one agreed: re-run the "
                "alignment"
            )
        if hello.get("k") != self.k:
            raise ProtocolError(f"{self.party}: codes in 0 … {hello.get('k')}, the model takes {self.k} codes")

    def request(self, batch: int, positions: np.ndarray, training: bool) -> BatchRequest:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.shared):
            raise DataError(f"{self.party}: position outside the agreed 0 … {self.shared - 1}: not asked")
        self.asked[batch] = positions
        return BatchRequest(batch, positions, training)

    def receive(self, message: Codes) -> np.ndarray:
        """The codes of an asked batch, checked, in the order asked (and kept by position)."""
        positions = self.asked.get(message.batch)
        if message.party != self.party or positions is None:
            raise ProtocolError(f"{message.party}: codes for batch {message.batch}, which was not asked: refused")
        if message.k != self.k:
            raise DataError(f"{message.party} sent codes in 0 … {message.k - 1}; the model takes {self.k}: refused")
        codes = check_codes(message.codes, len(positions), self.k, message.party)
        del self.asked[message.batch]
        self.codes[positions] = codes
        return codes


def one_hot(codes: np.ndarray, k: int) -> np.ndarray:
    """Codes as float32 one-hot rows (the broker's extra input columns)."""
    return np.eye(k, dtype=np.float32)[np.asarray(codes, dtype=np.int64)]
