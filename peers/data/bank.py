"""Reading one bank's table from its own disk and splitting it for training and testing.

A bank's raw rows are read here, next to where they live, and never leave the peer.
The split is deterministic in the job's seed and stratified by label, so that the
simulation harness (which evaluates on every bank's test rows as a yardstick) and the
peer's ClientApp agree on which rows are held out without exchanging row ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedsilo.errors import DataError
from fedsilo.peers.data.encoding import SPLIT_COLUMN, TabularEncoder

if TYPE_CHECKING:  # torch is imported where tensors are made: reading a table (a daemon, a boosting bank) needs none
    import torch

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else exc.__class__.__name__
    return line if len(line) <= 160 else line[:157] + "..."


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file, by its extension."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"data file {path} does not exist: check the path")
    if not path.is_file():
        raise DataError(f"{path} is not a file: give the path of a .csv or .parquet file")
    if name.endswith(CSV_SUFFIXES):
        kind, reader = "CSV", pd.read_csv
    elif name.endswith(PARQUET_SUFFIXES):
        kind, reader = "Parquet", pd.read_parquet
    else:
        raise DataError(f"{path.name} has an unknown extension {path.suffix!r}: give a .csv or .parquet file")
    try:
        frame = reader(path)
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        raise DataError(
            f"cannot read {path} as {kind} ({exc.__class__.__name__}: {_first_line(exc)}): "
            f"check that the file is a valid {kind} file"
        ) from None
    if frame.empty:
        raise DataError(f"{path} has no rows: give a file with data in it")
    return frame


FREE, TRAIN, TEST = -1, 0, 1  # a row's pinned side in SPLIT_COLUMN (FREE: the split decides)


def split_train_test(
    labels: np.ndarray, test_fraction: float, seed: int, pinned: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of row positions into (train, test), deterministic in `seed`.

    Each class keeps round(test_fraction · count) rows for testing, at least one when
    the class has two or more rows, so both splits see both classes where possible.

    `pinned` (optional, one of FREE, TRAIN, TEST per row) fixes some rows' side, e.g.
    customers an institution shares with others, whose side the institutions agreed on
    (`fedsilo.peers.shared_holdout`). Pinned rows keep their side; each class's free rows make up
    its test count towards the same target, as far as they can. Without pins (or with
    every row FREE) the split is exactly the unpinned one.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
    if pinned is not None:
        pinned = np.asarray(pinned)
        if pinned.shape != (len(labels),) or not np.isin(pinned, (FREE, TRAIN, TEST)).all():
            raise DataError(
                f"the pinned sides must be one of {FREE} (free), {TRAIN} (train), {TEST} (test) per row, "
                f"for all {len(labels)} rows"
            )
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        n_test = int(round(test_fraction * len(rows)))
        if len(rows) >= 2:
            n_test = min(max(n_test, 1), len(rows) - 1)
        if pinned is not None:
            side = pinned[rows]
            test_parts.append(rows[side == TEST])
            train_parts.append(rows[side == TRAIN])
            n_test = max(0, n_test - int((side == TEST).sum()))
            rows = rows[side == FREE]
            n_test = min(n_test, len(rows))
        rng.shuffle(rows)
        test_parts.append(rows[:n_test])
        train_parts.append(rows[n_test:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def split_rows(frame: pd.DataFrame, label: str, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`split_train_test` of a bank's table, honouring the sides pinned in its SPLIT_COLUMN if it has one."""
    pinned = frame[SPLIT_COLUMN].to_numpy() if SPLIT_COLUMN in frame.columns else None
    return split_train_test(frame[label].to_numpy(), test_fraction, seed, pinned)


@dataclass(frozen=True)
class BankTensors:
    """A bank's encoded training and test rows."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def encode_split(
    frame: pd.DataFrame, encoder: TabularEncoder, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A bank's raw rows encoded and split as numpy arrays: (features, labels, train rows, test rows)."""
    encoder.check_columns(frame)
    features, labels = encoder.transform(frame)
    pinned = frame[SPLIT_COLUMN].to_numpy() if SPLIT_COLUMN in frame.columns else None
    train, test = split_train_test(labels, test_fraction, seed, pinned)
    return features, labels, train, test


def encode_bank(frame: pd.DataFrame, encoder: TabularEncoder, test_fraction: float, seed: int) -> BankTensors:
    """Encode a bank's raw rows and split them (see `split_train_test`; sides pinned in SPLIT_COLUMN kept)."""
    import torch

    features, labels, train, test = encode_split(frame, encoder, test_fraction, seed)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    return BankTensors(x[train], y[train], x[test], y[test])


def load_training_arrays(
    data_path: str, encoder_path: str, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A bank's encoded training rows and labels as numpy arrays (the split `load_bank` makes), without torch."""
    encoder = TabularEncoder.from_json(Path(encoder_path).read_text())
    features, labels, train, _ = encode_split(read_table(data_path), encoder, test_fraction, seed)
    return features[train], labels[train]


LOADED_BANKS_KEPT = 1024


@lru_cache(maxsize=LOADED_BANKS_KEPT)
def load_bank(data_path: str, encoder_path: str, test_fraction: float, seed: int) -> BankTensors:
    """Read, encode and split the bank's table; cached per worker process.

    A Flower ClientApp is called several times per round (secure aggregation's stages,
    evaluation) and again in later rounds; the cache keeps the encoded tensors in the
    worker instead of re-reading and re-encoding the file every time. It holds up to
    `LOADED_BANKS_KEPT` banks, more than a simulation samples per round, so a bank is
    encoded once per worker (about 25 MB at the synthetic banks' mean of 200 rows).
    """
    encoder = TabularEncoder.from_json(Path(encoder_path).read_text())
    return encode_bank(read_table(data_path), encoder, test_fraction, seed)
