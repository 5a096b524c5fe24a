"""Splitting one table's rows among simulated banks, IID or non-IID.

Specs (`parse_partitioner`):

- `iid`: rows shuffled and dealt out in near-equal parts;
- `dirichlet:ALPHA`: label skew, as in flwr-datasets' DirichletPartitioner: for each
  class, the shares of that class's rows going to each bank are drawn from
  Dirichlet(ALPHA, …, ALPHA); small ALPHA (0.1) gives very different default rates,
  large ALPHA (100) is close to IID;
- `quantity:ALPHA`: quantity skew: bank sizes are shares drawn from Dirichlet(ALPHA)
  over banks; labels are spread IID within those sizes.

Every split is disjoint and covers all rows. A split that leaves a bank with fewer
than `min_rows` rows or with a single class is redrawn with a seed derived from
(seed, attempt), a bounded number of times (as flwr-datasets does), and then refused
with a `DataError` naming the bank and suggesting a larger ALPHA or fewer banks.

This is plain numpy on a label array: flwr-datasets' partitioners work on Hugging
Face `datasets` objects, and we chose not to depend on `datasets` for this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ConfigError, DataError

MIN_ROWS = 20
MAX_ATTEMPTS = 10
VALID_FORMS = "iid, dirichlet:ALPHA or quantity:ALPHA with ALPHA > 0 (e.g. dirichlet:0.5)"


@dataclass(frozen=True, kw_only=True)
class Partitioner:
    """Base class: `split(labels, n_banks, seed)` → one array of row indices per bank."""

    min_rows: int = MIN_ROWS
    max_attempts: int = MAX_ATTEMPTS

    @property
    def spec(self) -> str:
        raise NotImplementedError

    def _draw(self, labels: np.ndarray, n_banks: int, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError

    def split(self, labels: np.ndarray, n_banks: int, seed: int) -> list[np.ndarray]:
        """Disjoint, covering, sorted row-index arrays, one per bank, deterministic in `seed`."""
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise DataError(f"labels must be one-dimensional (got shape {labels.shape}): pass the label column")
        if not isinstance(n_banks, (int, np.integer)) or isinstance(n_banks, bool) or n_banks < 1:
            raise ConfigError(f"the number of banks must be a positive integer (got {n_banks!r})")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer (got {seed!r})")
        n_rows = len(labels)
        if n_banks * self.min_rows > n_rows:
            raise DataError(
                f"{n_rows} rows cannot give {n_banks} banks {self.min_rows} rows each: "
                f"use at most {n_rows // self.min_rows} banks or a larger table"
            )
        if len(np.unique(labels)) < 2:
            raise DataError("the label has a single class: every bank needs both classes; check the label column")
        problem = ""
        for attempt in range(self.max_attempts):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), attempt]))
            parts = [np.sort(p) for p in self._draw(labels, n_banks, rng)]
            problem = self._problem(parts, labels)
            if not problem:
                return parts
        raise DataError(
            f"{self.spec} over {n_banks} banks left {problem} in all {self.max_attempts} attempts: "
            f"use {self._advice()} or fewer banks"
        )

    def _problem(self, parts: list[np.ndarray], labels: np.ndarray) -> str:
        for bank, part in enumerate(parts):
            if len(part) < self.min_rows:
                return f"bank {bank} with {len(part)} rows (fewer than {self.min_rows})"
            classes = np.unique(labels[part])
            if len(classes) < 2:
                return f"bank {bank} with only class {classes[0].tolist()!r} in its {len(part)} rows"
        return ""

    def _advice(self) -> str:
        return "a larger table"


@dataclass(frozen=True, kw_only=True)
class IidPartitioner(Partitioner):
    """Shuffle, then deal out near-equal parts."""

    @property
    def spec(self) -> str:
        return "iid"

    def _draw(self, labels: np.ndarray, n_banks: int, rng: np.random.Generator) -> list[np.ndarray]:
        return np.array_split(rng.permutation(len(labels)), n_banks)


def _cut(rows: np.ndarray, shares: np.ndarray) -> list[np.ndarray]:
    """Cut `rows` into consecutive pieces with sizes proportional to `shares`."""
    bounds = np.round(np.cumsum(shares) / shares.sum() * len(rows)).astype(np.int64)
    bounds[-1] = len(rows)
    return np.split(rows, bounds[:-1])


@dataclass(frozen=True, kw_only=True)
class DirichletPartitioner(Partitioner):
    """Label skew: each class is shared among banks by Dirichlet(alpha) proportions."""

    alpha: float = 0.5

    def __post_init__(self) -> None:
        _check_alpha(self.alpha, "dirichlet")

    @property
    def spec(self) -> str:
        return f"dirichlet:{self.alpha:g}"

    def _draw(self, labels: np.ndarray, n_banks: int, rng: np.random.Generator) -> list[np.ndarray]:
        pieces: list[list[np.ndarray]] = [[] for _ in range(n_banks)]
        for value in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == value))
            shares = rng.dirichlet(np.full(n_banks, self.alpha))
            for bank, piece in enumerate(_cut(rows, shares)):
                pieces[bank].append(piece)
        return [np.concatenate(p) for p in pieces]

    def _advice(self) -> str:
        return f"a larger alpha (e.g. dirichlet:{_larger(self.alpha):g})"


@dataclass(frozen=True, kw_only=True)
class QuantityPartitioner(Partitioner):
    """Quantity skew: bank sizes ∝ Dirichlet(alpha) shares; rows (and labels) dealt IID."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        _check_alpha(self.alpha, "quantity")

    @property
    def spec(self) -> str:
        return f"quantity:{self.alpha:g}"

    def _draw(self, labels: np.ndarray, n_banks: int, rng: np.random.Generator) -> list[np.ndarray]:
        shares = rng.dirichlet(np.full(n_banks, self.alpha))
        return _cut(rng.permutation(len(labels)), shares)

    def _advice(self) -> str:
        return f"a larger alpha (e.g. quantity:{_larger(self.alpha):g})"


def _larger(alpha: float) -> float:
    return float(f"{max(alpha * 5, 1.0):.2g}")


def _check_alpha(alpha: float, kind: str) -> None:
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"{kind} alpha must be a number > 0 (got {alpha!r}): e.g. {kind}:0.5")


def parse_partitioner(spec: str, min_rows: int = MIN_ROWS) -> Partitioner:
    """Build a partitioner from `iid`, `dirichlet:ALPHA` or `quantity:ALPHA`."""
    if not isinstance(spec, str):
        raise ConfigError(f"partitioner must be a string (got {spec!r}): use {VALID_FORMS}")
    if not isinstance(min_rows, int) or min_rows < 1:
        raise ConfigError(f"min_rows must be a positive integer (got {min_rows!r})")
    text = spec.strip().lower()
    kind, sep, arg = text.partition(":")
    if kind == "iid" and not sep:
        return IidPartitioner(min_rows=min_rows)
    if kind in ("dirichlet", "quantity") and sep:
        try:
            alpha = float(arg)
        except ValueError:
            raise ConfigError(f"partitioner {spec!r}: {arg!r} is not a number; use {VALID_FORMS}") from None
        if not math.isfinite(alpha) or alpha <= 0:
            raise ConfigError(f"partitioner {spec!r}: alpha must be > 0 (got {arg}); e.g. {kind}:0.5")
        cls = DirichletPartitioner if kind == "dirichlet" else QuantityPartitioner
        return cls(min_rows=min_rows, alpha=alpha)
    raise ConfigError(f"partitioner {spec!r} is not understood: use {VALID_FORMS}")
