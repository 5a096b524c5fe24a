"""Scoring new rows with a finished model: `fedsilo score` and `fedsilo.load_run(...).score(df)`.

A model folder is either a simulation's run folder (`fedsilo simulate`) or a model
pulled from the network (`fedsilo model pull`). Both hold `model_card.json`, the model
(`model.safetensors`) and its feature encoder (`encoder.json`); the card states each
file's SHA-256. `load_run` checks both hashes before it reads either file, so a model
or encoder altered after the card was written is refused (`IntegrityError`). A pulled
folder also carries the host's signature of its card (`model_card.sig`): with
`identity=` (your identity directory) that signature is checked against your
consortium too, as `model pull` did, which also catches a card rewritten to match an
altered file.

The rows to score must have exactly the columns the encoder was fitted on, plus
optionally the run's label column (ignored) and an id column (kept out of the
features, written next to each score). A missing or an unknown column is refused,
naming them. Values are encoded as in training (`fedsilo.peers.data.encoding`): a category
the encoder never saw becomes all zeros in its one-hot block, as it would in training;
`ScoreResult.unseen` counts such rows per column so that they can be reported.

Scores are the model's probability of the event (the sigmoid of its logit), one per
row, in the rows' order.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError, DataError
from fedsilo.peers.data.encoding import CategoricalColumn, TabularEncoder
from fedsilo.peers.errors import IntegrityError
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.peers.provenance import file_hash
from fedsilo.privacy.crypto_suite import HASH_LABELS, get_suite

CARD = "model_card.json"
SCORE_COLUMN = "score"


@dataclass(frozen=True)
class ScoreResult:
    """Scores (probability of the event) in row order, and the rows with an unseen category per column."""

    scores: pd.Series
    unseen: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoringModel:
    """A verified model and its encoder, ready to score rows (see the module docstring)."""

    folder: Path
    card: dict[str, Any]
    encoder: TabularEncoder
    model: Any  # torch.nn.Module in eval mode, or a GBDTModel (--model gbdt)
    id_column: str | None = None  # the id column the run's data named, if any

    @property
    def label(self) -> str:
        return self.encoder.label

    @property
    def features(self) -> list[str]:
        """The input columns a table to score must have."""
        return self.encoder.input_columns

    @property
    def left_out(self) -> list[str]:
        """Columns the run's data had but training left out (its id column, id-like ones): ignored here too."""
        return list((self.card.get("data") or {}).get("columns_left_out") or {})

    def score(self, rows: pd.DataFrame, id_column: str | None = None) -> pd.Series:
        """The probability of the event for each row of `rows` (a Series named "score", same index)."""
        return self.score_rows(rows, id_column).scores

    def score_rows(self, rows: pd.DataFrame, id_column: str | None = None) -> ScoreResult:
        """`score`, with the count of rows per column whose category the encoder never saw."""
        id_column = id_column if id_column is not None else (self.id_column if self.id_column in rows.columns else None)
        self.check_columns(rows, id_column)
        x = self.encoder.transform_features(rows)
        if isinstance(self.model, GBDTModel):
            logits = self.model.predict_margin(x.astype(np.float64))
        else:
            import torch

            with torch.no_grad():
                logits = self.model(torch.from_numpy(x)).squeeze(-1).double().numpy()
        scores = pd.Series(1.0 / (1.0 + np.exp(-logits)), index=rows.index, name=SCORE_COLUMN)
        return ScoreResult(scores, _unseen_categories(self.encoder, x))

    def check_columns(self, rows: pd.DataFrame, id_column: str | None = None) -> None:
        """Raise DataError naming the missing feature columns, or the columns the model does not know."""
        present = [str(c) for c in rows.columns]
        if id_column is not None and id_column not in present:
            raise DataError(
                f"id column {id_column!r} is not in the table (columns: {_few(present)}): "
                "pass --id-column with one of them"
            )
        if id_column is not None and id_column in self.features:
            raise DataError(f"id column {id_column!r} is one of the model's features: name the row id column")
        missing = [c for c in self.features if c not in present]
        if missing:
            raise DataError(
                f"the table lacks column(s) {_few(missing)} that the model was trained on: "
                f"add them (the model needs {len(self.features)} columns: {_few(self.features)})"
            )
        allowed = {*self.features, self.label, *([id_column] if id_column else []), *self.left_out}
        extra = [c for c in present if c not in allowed]
        if extra:
            raise DataError(
                f"the table has column(s) {_few(extra)} that the model was not trained on: drop them, "
                "or name the row id column with --id-column"
            )

    def score_file(self, data: str | Path, out: str | Path, id_column: str | None = None) -> ScoreResult:
        """Score a CSV or Parquet file; write `out` (.csv or .parquet): the id column if any, then `score`."""
        from fedsilo.peers.data.bank import read_table

        out = Path(out)
        writer = _writer(out)
        rows = read_table(data)
        rows.columns = [str(c) for c in rows.columns]
        result = self.score_rows(rows, id_column)
        id_column = id_column if id_column is not None else (self.id_column if self.id_column in rows.columns else None)
        table = pd.DataFrame({SCORE_COLUMN: result.scores.to_numpy()})
        if id_column is not None:
            table.insert(0, id_column, rows[id_column].to_numpy())
        _write_atomically(out, table, writer)
        return result


def load_run(folder: str | Path, identity: str | Path | None = None) -> ScoringModel:
    """The verified model of a run folder or a pulled model folder (see the module docstring)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from fedsilo.peers.models import ModelSpec, build_model, set_weights

    folder = Path(folder)
    card = read_card(folder)
    if card.get("setup") == "vertical":
        raise ConfigError(
            f"{folder} is a vertical run: each party keeps its own part, and a customer's score needs the "
            "feature party's release for that customer (a two-party step: fedsilo.simulations.vertical_gbdt."
            "score_with_codes, fedsilo.peers.vertical.training.score); fedsilo score scores horizontal runs"
        )
    files = artifact_files(card, folder)
    if identity is not None:
        _verify_signature(folder, Path(identity))
    for role, (name, suite, digest) in files.items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(f"{folder} lacks {name}, the {role} its model card lists")
        if file_hash(path, suite) != digest:
            raise IntegrityError(
                f"{path} does not match the {get_suite(suite).hash_algorithm} in {CARD}: the {role} file was altered "
                "after the run; restore it or pull the model again"
            )
    encoder = TabularEncoder.load(folder / files["encoder"][0])
    job = card.get("job") or {}
    model_spec = job.get("model") or {}
    data = card.get("data") or {}
    id_column = data.get("id_column") if isinstance(data, dict) else None
    id_column = id_column if isinstance(id_column, str) else None
    if isinstance(model_spec, dict) and model_spec.get("kind") == "gbdt":
        gbdt = GBDTModel.load(folder / files["model"][0])
        if gbdt.layout.n_features != encoder.n_features:
            raise IntegrityError(
                f"{folder}: the gbdt model reads {gbdt.layout.n_features} encoded columns, "
                f"the encoder makes {encoder.n_features}"
            )
        return ScoringModel(folder, card, encoder, gbdt, id_column)
    try:
        spec = ModelSpec(kind=str(model_spec["kind"]), hidden=tuple(int(h) for h in model_spec.get("hidden", ())))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f"{folder / CARD} does not say which model it holds (job.model.kind): is it a fedsilo model card?"
        ) from None
    model = build_model(spec, encoder.n_features)
    try:
        set_weights(model, load_file(str(folder / files["model"][0])))
    except SafetensorError as error:
        raise IntegrityError(f"{folder / files['model'][0]} is not a readable safetensors file ({error})") from None
    model.eval()
    data = card.get("data") or {}
    id_column = data.get("id_column") if isinstance(data, dict) else None
    return ScoringModel(folder, card, encoder, model, id_column if isinstance(id_column, str) else None)


def read_card(folder: Path) -> dict[str, Any]:
    """The folder's model card, or ConfigError saying what the folder is missing."""
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} is not a directory: give a run folder (fedsilo simulate) or a pulled "
            "model folder (fedsilo model pull)"
        )
    path = folder / CARD
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no {CARD}: give a run folder (fedsilo simulate) or a pulled model "
            "folder (fedsilo model pull)"
        )
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IntegrityError(f"{path} is not valid JSON: the card was altered or truncated") from None
    if not isinstance(card, dict):
        raise IntegrityError(f"{path} is not a model card (a JSON object)")
    return card


def artifact_files(card: dict[str, Any], folder: Path) -> dict[str, tuple[str, str, str]]:
    """{"model": (file, suite, digest), "encoder": (file, suite, digest)} from either card layout.

    A run folder's card lists `artifacts.model` and `artifacts.encoder` with `file` and
    `sha256`; a pulled model's card lists artefacts by file name (`model.safetensors`,
    `encoder.json`; a gbdt job's model is `model.json`) with `bytes` and the hash keyed by its
    algorithm: `sha256`, or `sm3` when the consortium uses the gm suite (`suite` is the crypto
    suite whose hash that is).
    """
    artifacts = card.get("artifacts")
    if not isinstance(artifacts, dict):
        raise IntegrityError(f"{folder / CARD} lists no artefacts: it cannot vouch for a model file")
    if isinstance(artifacts.get("encoder"), str):
        raise ConfigError(
            f"{folder} is a transfer run: each institution keeps its own encoder and model head, "
            "so there is no one model to score with; score horizontal runs"
        )
    found: dict[str, tuple[str, str, str]] = {}
    model_spec = (card.get("job") or {}).get("model") if isinstance(card.get("job"), dict) else None
    gbdt = isinstance(model_spec, dict) and model_spec.get("kind") == "gbdt"
    for role, default in (("model", "model.json" if gbdt else "model.safetensors"), ("encoder", "encoder.json")):
        entry = artifacts.get(role) if isinstance(artifacts.get(role), dict) else None
        name = entry.get("file") if entry else default
        entry = entry or artifacts.get(default)
        suite = next(
            (s for s, label in HASH_LABELS.items() if isinstance(entry, dict) and isinstance(entry.get(label), str)),
            None,
        )
        if not isinstance(entry, dict) or suite is None or not isinstance(name, str):
            raise IntegrityError(
                f"{folder / CARD} states no SHA-256 (or SM3) for the {role} ({default}): it cannot vouch for the file"
            )
        if Path(name).name != name:
            raise IntegrityError(f"{folder / CARD} names {role} file {name!r} outside the folder")
        found[role] = (name, suite, entry[HASH_LABELS[suite]])
    return found


def _verify_signature(folder: Path, identity_dir: Path) -> None:
    """A pulled model's card signature, checked against the consortium as `model pull` does."""
    from fedsilo.peers.daemon.model_store import SIGNATURE, verify_artifact
    from fedsilo.peers.identity.consortium import Identity

    if not (folder / SIGNATURE).is_file():
        raise IntegrityError(
            f"{folder} has no {SIGNATURE}: only a pulled model's card is signed; leave out --identity for a run folder"
        )
    identity = Identity.load(identity_dir)
    verify_artifact(folder, identity.current_manifest(), identity.ca_certificate)


def _unseen_categories(encoder: TabularEncoder, x: np.ndarray) -> dict[str, int]:
    """Rows per categorical column whose one-hot block is all zeros: a value the encoder never saw.

    A missing value has its own category when training saw missing values; otherwise it
    is all zeros too and is counted here, as training would have encoded it.
    """
    unseen: dict[str, int] = {}
    start = 0
    for column in encoder.columns:
        if isinstance(column, CategoricalColumn):
            count = int((x[:, start : start + column.width].sum(axis=1) == 0).sum())
            if count:
                unseen[column.name] = count
        start += column.width
    return unseen


def _writer(out: Path) -> str:
    name = out.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise ConfigError(f"--out {out}: give a .csv or .parquet file for the scores")


def _write_atomically(out: Path, table: pd.DataFrame, kind: str) -> None:
    """Write next to `out` and rename, so a failed write never leaves a half-written scores file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    try:
        if kind == "csv":
            table.to_csv(partial, index=False)
        else:
            table.to_parquet(partial, index=False)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _few(columns: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")
