"""The coded vertical scheme between two peer daemons: what each side computes (no transport here).

The daemons (:mod:`fedsilo.peers.daemon.roles.vertical`) carry the messages over mTLS;
this module holds the parts both the network job and its tests call, so that the
network runs the simulation's mechanism (:mod:`fedsilo.peers.vertical.coded`):

* :func:`release_plan`: which shared positions the label holder trains on and which it
  holds out. It depends on the number of shared customers and the job's public seed
  only, **never on a label** (the simulation's stratified split would make the held-out
  positions a function of the labels, and the feature party sees them): every byte the
  feature party receives is therefore the same whatever the labels are.
* :func:`order_digest`: the digest of the PSI order both sides compute from their
  both-sides PSI result (as :mod:`fedsilo.peers.vertical.alignment` does in simulation).
* :class:`BankRelease`: the feature party's per-job state on disk (its source rows in the
  PSI order, the order's digest, and every code it released, by source row, each once),
  written atomically so that a crash never leaves half a release.
* :func:`train_broker`: the label holder's model over its own columns and the one-hot
  codes, trained as :mod:`fedsilo.simulations.vertical_coded` trains it
  (:class:`~fedsilo.peers.vertical.parties.LabelHolder`, :func:`~fedsilo.peers.vertical.training.train`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsilo.errors import DataError
from fedsilo.peers.data.bank import TEST, TRAIN
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.vertical.coded import DELINQUENCY_K, one_hot
from fedsilo.peers.vertical.parties import LabelHolder, SplitSpec
from fedsilo.peers.vertical.training import EpochStats, train
from fedsilo.privacy.audit.roc import roc
from fedsilo.privacy.psi import PsiResult

__all__ = ["BankRelease", "BrokerModel", "ScoringReleases", "order_digest", "release_plan", "train_broker"]

_PLAN_STREAM = 19  # the release plan's random stream (public, with the job's seed)


def release_plan(shared: int, test_fraction: float, seed: int) -> np.ndarray:
    """TRAIN or TEST for each of ``shared`` positions of the PSI order: round(test_fraction · shared)
    held out (at least one when shared ≥ 2), chosen by the job's public ``seed``; no label is an input."""
    if shared < 2:
        raise DataError(f"the parties share {shared} customer(s): a vertical job needs at least 2")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
    held = min(shared - 1, max(1, round(test_fraction * shared)))
    sides = np.full(shared, TRAIN, dtype=np.int8)
    sides[np.random.default_rng([seed, _PLAN_STREAM]).permutation(shared)[:held]] = TEST
    return sides


def order_digest(result: PsiResult) -> str:
    """SHA-256 of the shared doubly blinded elements in their common order: equal at both sides iff same order."""
    if result.shared_keys is None:
        raise DataError("the alignment needs a both-sides PSI result")
    keys = np.ascontiguousarray(result.shared_keys)
    ordered = keys[np.argsort(keys.view(np.dtype((np.void, keys.shape[1]))).ravel(), kind="stable")]
    return hashlib.sha256(ordered.tobytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class BankRelease:
    """The feature party's state of one vertical job, in ``directory`` (its ``state/vertical/JOB``).

    ``alignment.json``: its source rows in the PSI order and the order's digest;
    ``released.npy``: per source row, the one code released (−1: none yet).
    """

    def __init__(self, directory: Path, rows_in_source: int) -> None:
        self.directory = directory
        self.rows_in_source = rows_in_source

    @property
    def _alignment(self) -> Path:
        return self.directory / "alignment.json"

    @property
    def _released(self) -> Path:
        return self.directory / "released.npy"

    def save_alignment(self, rows: np.ndarray, digest: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._alignment, json.dumps({"rows": [int(r) for r in rows], "digest": digest}).encode())

    def alignment(self) -> tuple[np.ndarray, str] | None:
        """(source rows in the PSI order, digest), or None before the alignment."""
        if not self._alignment.is_file():
            return None
        data = json.loads(self._alignment.read_text())
        return np.asarray(data["rows"], dtype=np.int64), str(data["digest"])

    def released(self) -> np.ndarray:
        """Per source row, its released code (−1: not released)."""
        return _load_rows(self._released, np.full(self.rows_in_source, -1, dtype=np.int64), "codes")

    def save_released(self, released: np.ndarray) -> None:
        _save_rows(self._released, np.asarray(released, dtype=np.int64))


def _load_rows(path: Path, empty: np.ndarray, what: str) -> np.ndarray:
    """The per-source-row array stored at `path`, or `empty` before any release; DataError if its shape is not
    `empty`'s (the source changed since)."""
    if not path.is_file():
        return empty
    stored = np.load(path)
    if stored.shape != empty.shape:
        raise DataError(
            f"{path} holds {stored.shape[0]} rows, the source has {empty.shape[0]}: the source changed after "
            f"{what} were released; restore it"
        )
    return stored


def _save_rows(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` durably: a temporary file, fsynced, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.npy")
    with open(temporary, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class ScoringReleases:
    """A split job's feature party's releases for scoring, in ``directory`` (its ``state/vertical/JOB``).

    ``scoring.npy``: per source row, the one noised embedding released for scoring (NaN:
    none yet). Saved durably (written, fsynced, renamed) before the values leave, so a
    restart never draws a customer twice.
    """

    def __init__(self, directory: Path, rows_in_source: int, width: int) -> None:
        self.directory, self.rows_in_source, self.width = directory, rows_in_source, width

    @property
    def _path(self) -> Path:
        return self.directory / "scoring.npy"

    def load(self) -> np.ndarray:
        """Per source row, its released embedding (a row of NaN: not released)."""
        empty = np.full((self.rows_in_source, self.width), np.nan, dtype=np.float32)
        return _load_rows(self._path, empty, "embeddings")

    def save(self, released: np.ndarray) -> None:
        _save_rows(self._path, np.asarray(released, dtype=np.float32))


@dataclass
class BrokerModel:
    """The label holder's trained model, its encoder, its test AUC and its epochs."""

    holder: LabelHolder
    encoder: TabularEncoder
    auc: float
    history: list[EpochStats]


def train_broker(
    table: pd.DataFrame,
    label: str,
    id_column: str,
    rows: np.ndarray,
    sides: np.ndarray,
    codes: np.ndarray,
    spec: SplitSpec,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> BrokerModel:
    """Train on the shared customers (``rows``: the label holder's table rows in the PSI order, ``sides``
    from :func:`release_plan`, ``codes`` their released codes) over its own columns and the one-hot code.

    The encoder is fitted on the label holder's own rows only; AUC is on the held-out shared customers.
    """
    own = table.drop(columns=[id_column])
    encoder = TabularEncoder.fit_frames([own], label)
    x, y = encoder.transform(own)
    features = np.hstack([x[rows], one_hot(codes, DELINQUENCY_K)]).astype(np.float32)
    holder = LabelHolder("label holder", features, y[rows], np.arange(len(rows)), sides, [], spec, lr=lr, seed=seed + 2)
    history = train(holder, [], epochs, batch_size, seed)
    test = holder.test_index
    scores, truth = holder.predict(0, test, []), y[rows][test]
    auc = round(roc(scores[truth == 1], scores[truth == 0]).auc, 4) if 0 < truth.sum() < len(truth) else float("nan")
    return BrokerModel(holder, encoder, auc, history)
