"""A simulated population of institutions whose rows exist only once they are needed.

A `Population` knows, for every institution, the public facts a consortium would know
before a job (how many rows it holds, its dropout probability) and can produce one
institution's table on demand, without building any other. The simulation harness
pickles it to a file; each institution's table is written to disk by the institution
itself the first time it is sampled (`fedsilo.simulations.lazy_banks`), so with 10,000 banks
only the sampled ones ever exist.

- `SyntheticPopulation`: the embedded generator. Sizes are log-normal (heavy-tailed),
  each bank's default rate is drawn in a range ([3 %, 10 %] in `fedsilo simulate`), its
  customer mix differs; bank i's rows depend on (seed, i) and its profile only.
- `TablePopulation`: a user's table (or the pooled synthetic one, with `--partition`)
  split by a partitioner into row-index lists; the table is stored once and read by a
  worker when it first needs one of its banks.
- `FramesPopulation`: a handful of already built tables (the transfer scenarios).

Per-institution dropout probabilities: with a mean dropout F and a concentration κ > 0,
bank i vanishes in a round with probability pᵢ ~ Beta(κF, κ(1 − F)), drawn from
(seed, i); κ = 0 gives every bank pᵢ = F.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError
from fedsilo.simulations.data.synthetic import BankProfile, generate_bank

_DROPOUT_STREAM = 0xD0D0


def bank_name(index: int) -> str:
    return f"bank-{index:05d}"


def dropout_probability(seed: int, bank: int, mean: float, concentration: float) -> float:
    """Bank `bank`'s probability of vanishing in a round (see module docstring)."""
    if mean <= 0:
        return 0.0
    if concentration <= 0:
        return mean
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(bank), _DROPOUT_STREAM]))
    return float(rng.beta(concentration * mean, concentration * (1.0 - mean)))


@dataclass
class Population:
    """Base class: `size(i)` rows of bank i (public) and `frame(i)` its table."""

    seed: int

    @property
    def n_banks(self) -> int:
        raise NotImplementedError

    def sizes(self) -> np.ndarray:
        raise NotImplementedError

    def frame(self, index: int) -> pd.DataFrame:
        raise NotImplementedError

    def title(self, index: int) -> str:
        """The institution's display name (its own where it has one)."""
        return bank_name(index)

    def save(self, path: Path) -> Path:
        path.write_bytes(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))
        return path


@dataclass
class SyntheticPopulation(Population):
    profiles: list[BankProfile] = field(default_factory=list)

    @property
    def n_banks(self) -> int:
        return len(self.profiles)

    def sizes(self) -> np.ndarray:
        return np.array([p.size for p in self.profiles], dtype=np.int64)

    def frame(self, index: int) -> pd.DataFrame:
        return generate_bank(self.profiles[index], self.seed, index)


@dataclass
class TablePopulation(Population):
    """Banks are row-index lists of one table stored at `table_path` (Parquet)."""

    table_path: str = ""
    parts: list[np.ndarray] = field(default_factory=list)
    # a user's file: the label mapping, the columns left out and the warnings (loader.LoadedTable)
    load_report: dict = field(default_factory=dict)

    @property
    def n_banks(self) -> int:
        return len(self.parts)

    def sizes(self) -> np.ndarray:
        return np.array([len(p) for p in self.parts], dtype=np.int64)

    def frame(self, index: int) -> pd.DataFrame:
        return _read_table(self.table_path).iloc[self.parts[index]].reset_index(drop=True)


@dataclass
class FramesPopulation(Population):
    frames: list[pd.DataFrame] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)

    @property
    def n_banks(self) -> int:
        return len(self.frames)

    def sizes(self) -> np.ndarray:
        return np.array([len(f) for f in self.frames], dtype=np.int64)

    def frame(self, index: int) -> pd.DataFrame:
        return self.frames[index]

    def title(self, index: int) -> str:
        return self.titles[index] if self.titles else bank_name(index)


@lru_cache(maxsize=2)
def _read_table(path: str) -> pd.DataFrame:
    return pd.read_parquet(path)


@lru_cache(maxsize=4)
def load_population(path: str) -> Population:
    """The population pickled at `path` by the harness (cached per worker process)."""
    try:
        population = pickle.loads(Path(path).read_bytes())
    except (OSError, pickle.UnpicklingError) as error:
        raise ConfigError(f"cannot read the simulated population at {path}: {error}") from None
    if not isinstance(population, Population):
        raise ConfigError(f"{path} does not hold a simulated population")
    return population


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 over a table's rows (values and column names), order-sensitive."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def yardstick_sample(n_banks: int, limit: int, seed: int) -> list[int]:
    """The banks whose held-out rows score the global model and train the yardsticks.

    All banks when there are at most `limit`; otherwise `limit` banks drawn without
    replacement from the seed, in index order.
    """
    if n_banks <= limit:
        return list(range(n_banks))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A4D]))
    return sorted(int(i) for i in rng.choice(n_banks, size=limit, replace=False))
