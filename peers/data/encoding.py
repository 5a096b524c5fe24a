"""Turning a bank's raw table into model inputs, fitted without pooling raw data.

The encoder is fitted from per-bank *summaries*, never from rows. Each bank computes a
`BankSummary` of its own table (per column: counts, the power sums Σx, Σx², Σx³ of the
values and of their signed log, and, for low-cardinality columns, the set of values
seen) and only these aggregates leave the bank. `TabularEncoder.fit` adds the sums up
across banks, which gives exactly the pooled mean, standard deviation and skewness that
one would compute on the concatenated tables, and takes the union of the value sets.
This is what makes the fit federated-safe: no row, and no per-row value of a numeric
column, is ever shared. (What is shared: each bank's row count, missing counts, the
power sums, and which values of a low-cardinality column occur at the bank. Those can
be secure-aggregated or noised later without changing this interface.)

Encoding rules, decided from the aggregates:

- categorical = a non-numeric column, or an integer-valued numeric column with at most
  12 distinct values over all banks; one-hot over the union of values, sorted (numbers
  numerically, text lexicographically); a value not seen at fit time maps to all
  zeros; a missing value is its own category if any bank had missing values there;
- numeric = everything else; if the pooled skewness |γ| > 2, the signed log
  s = sign(x)·log1p(|x|) is used instead of x; then standardized with the pooled
  mean and population standard deviation (a zero standard deviation becomes 1); a
  missing value becomes 0 after standardizing and, if any bank had missing values in
  the column, a `<col>__missing` 0/1 indicator column is added.

The fitted encoder is a small JSON document (`to_json`/`from_json`), so that a job can
carry it as a file path and every peer encodes its rows identically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError, DataError

MAX_INTEGER_LEVELS = 12  # integer-valued columns with at most this many values are categorical
MAX_TEXT_LEVELS = 64  # more distinct text values than this is refused
SKEW_THRESHOLD = 2.0
MISSING_CATEGORY = "__missing__"
FORMAT = "fedsilo.tabular-encoder"
FORMAT_VERSION = 1

NUMERIC, TEXT, EMPTY = "numeric", "text", "empty"

# A column no encoder reads: a row's side of the train/test split when it was agreed with
# other institutions (see `fedsilo.peers.data.bank.split_rows`); never a feature.
SPLIT_COLUMN = "fedsilo_split"


def signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x)·log1p(|x|): a log that keeps the sign and is defined at 0."""
    return np.sign(x) * np.log1p(np.abs(x))


def _power_sums(x: np.ndarray) -> tuple[float, float, float]:
    x2 = x * x
    return float(x.sum()), float(x2.sum()), float((x2 * x).sum())


@dataclass(frozen=True)
class ColumnSummary:
    """One column at one bank: the aggregates the encoder fit needs, and nothing else.

    kind is "numeric", "text" (a non-numeric dtype) or "empty" (no non-missing value).
    `values` is the sorted set of values seen (ints for numeric, str for text) when the
    column is low-cardinality here, else None (too many, or not integer-valued).
    """

    name: str
    kind: str
    n: int
    missing: int
    sums: tuple[float, float, float] = (0.0, 0.0, 0.0)
    log_sums: tuple[float, float, float] = (0.0, 0.0, 0.0)
    values: tuple[Any, ...] | None = ()

    @classmethod
    def from_series(cls, name: str, series: pd.Series) -> ColumnSummary:
        mask = series.isna().to_numpy()
        missing = int(mask.sum())
        n = len(series) - missing
        if n == 0:
            return cls(name, EMPTY, 0, missing)
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            x = series.to_numpy(dtype=np.float64, na_value=np.nan)[~mask]
            if not np.isfinite(x).all():
                raise DataError(f"column {name!r} has infinite values: replace them (e.g. with NaN) first")
            values: tuple[Any, ...] | None = None
            if np.array_equal(x, np.floor(x)):
                distinct = np.unique(x)
                if len(distinct) <= MAX_INTEGER_LEVELS:
                    values = tuple(int(v) for v in distinct)
            return cls(name, NUMERIC, n, missing, _power_sums(x), _power_sums(signed_log(x)), values)
        distinct_text = pd.unique(series[~mask].astype(str))
        values = tuple(sorted(str(v) for v in distinct_text)) if len(distinct_text) <= MAX_TEXT_LEVELS else None
        return cls(name, TEXT, n, missing, values=values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "n": self.n,
            "missing": self.missing,
            "sums": list(self.sums),
            "log_sums": list(self.log_sums),
            "values": None if self.values is None else list(self.values),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnSummary:
        values = data.get("values", [])
        return cls(
            str(data["name"]),
            str(data["kind"]),
            int(data["n"]),
            int(data["missing"]),
            tuple(float(v) for v in data.get("sums", (0.0, 0.0, 0.0))),
            tuple(float(v) for v in data.get("log_sums", (0.0, 0.0, 0.0))),
            None if values is None else tuple(values),
        )


@dataclass(frozen=True)
class BankSummary:
    """A bank's per-column aggregates (see the module docstring); JSON-safe."""

    label: str
    n_rows: int
    columns: tuple[ColumnSummary, ...]

    @classmethod
    def from_frame(cls, df: pd.DataFrame, label: str) -> BankSummary:
        if label not in df.columns:
            raise DataError(f"label column {label!r} is not in the table: pass the name of the 0/1 target column")
        names = [str(c) for c in df.columns if c != label and c != SPLIT_COLUMN]
        if not names:
            raise DataError(f"the table has no feature columns besides the label {label!r}: add features")
        return cls(label, len(df), tuple(ColumnSummary.from_series(name, df[name]) for name in names))

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "n_rows": self.n_rows, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BankSummary:
        try:
            return cls(
                str(data["label"]), int(data["n_rows"]), tuple(ColumnSummary.from_dict(c) for c in data["columns"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"malformed bank summary ({exc.__class__.__name__}: {exc}): re-create it with BankSummary.from_frame"
            ) from None


@dataclass(frozen=True)
class NumericColumn:
    name: str
    log: bool
    mean: float
    std: float
    missing_indicator: bool

    @property
    def width(self) -> int:
        return 1 + int(self.missing_indicator)

    @property
    def feature_names(self) -> list[str]:
        return [self.name] + ([f"{self.name}__missing"] if self.missing_indicator else [])


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    categories: tuple[Any, ...]  # ints (numeric column) or str (text column), sorted
    text: bool
    missing_category: bool

    @property
    def width(self) -> int:
        return len(self.categories) + int(self.missing_category)

    @property
    def feature_names(self) -> list[str]:
        return [f"{self.name}={v}" for v in self.categories] + (
            [f"{self.name}={MISSING_CATEGORY}"] if self.missing_category else []
        )


def _pooled_moments(n: int, sums: np.ndarray) -> tuple[float, float, float]:
    """(mean, population std, skewness) from n and the summed Σx, Σx², Σx³."""
    if n == 0:
        return 0.0, 0.0, 0.0
    m1, m2, m3 = sums / n
    var = m2 - m1 * m1
    if var <= 1e-12 * m2:  # constant, up to the rounding of E[x²] − E[x]²
        return float(m1), 0.0, 0.0
    std = math.sqrt(var)
    central3 = m3 - 3 * m1 * m2 + 2 * m1**3
    return float(m1), std, float(central3 / std**3)


def _fit_column(name: str, parts: list[ColumnSummary]) -> NumericColumn | CategoricalColumn:
    kinds = {p.kind for p in parts} - {EMPTY}
    any_missing = any(p.missing > 0 for p in parts)
    if kinds == {NUMERIC, TEXT}:
        text_at = [i for i, p in enumerate(parts) if p.kind == TEXT]
        raise DataError(
            f"column {name!r} holds numbers at some banks but text at bank(s) {text_at[:5]}: "
            f"clean it (e.g. 'N/A' strings) so that it has one type at every bank"
        )
    if kinds == {TEXT}:
        if any(p.values is None for p in parts):
            raise DataError(
                f"column {name!r} has more than {MAX_TEXT_LEVELS} distinct text values: "
                f"drop it or encode it as numbers before training"
            )
        union = sorted({v for p in parts for v in p.values})  # type: ignore[union-attr]  # None refused above
        if len(union) > MAX_TEXT_LEVELS:
            raise DataError(
                f"column {name!r} has {len(union)} distinct text values over all banks "
                f"(more than {MAX_TEXT_LEVELS}): drop it or encode it as numbers before training"
            )
        return CategoricalColumn(name, tuple(union), True, any_missing)
    numeric = [p for p in parts if p.kind == NUMERIC]
    if numeric and all(p.values is not None for p in numeric):
        union = sorted({int(v) for p in numeric for v in p.values})  # type: ignore[union-attr]  # None ruled out above
        if len(union) <= MAX_INTEGER_LEVELS:
            return CategoricalColumn(name, tuple(union), False, any_missing)
    n = sum(p.n for p in numeric)
    _, _, skew = _pooled_moments(n, np.sum([p.sums for p in numeric], axis=0) if numeric else np.zeros(3))
    log = abs(skew) > SKEW_THRESHOLD
    sums = np.sum([p.log_sums if log else p.sums for p in numeric], axis=0) if numeric else np.zeros(3)
    mean, std, _ = _pooled_moments(n, sums)
    return NumericColumn(name, log, mean, std if std > 0 else 1.0, any_missing)


def _binary_labels(series: pd.Series, label: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise DataError(f"label column {label!r} is not numeric: map it to 0/1 first (1 = the event to predict)")
    y = series.to_numpy(dtype=np.float32)
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        raise DataError(
            f"label column {label!r} has values other than 0/1 (e.g. {y[bad][0]:g}): "
            f"map it to 0/1 first and drop rows with a missing label"
        )
    return y


@dataclass(frozen=True)
class TabularEncoder:
    """A fitted encoder: raw table → (float32 features, float32 0/1 labels)."""

    label: str
    columns: tuple[NumericColumn | CategoricalColumn, ...]
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets = np.cumsum([0] + [c.width for c in self.columns])
        object.__setattr__(self, "_offsets", tuple(int(o) for o in offsets))

    # fitting ---------------------------------------------------------------
    @classmethod
    def fit(cls, summaries: Sequence[BankSummary], label: str) -> TabularEncoder:
        """Fit from the banks' summaries alone (aggregates; see the module docstring)."""
        if not summaries:
            raise DataError("no bank summaries to fit the encoder on: give at least one bank's summary")
        names = summaries[0].column_names
        for i, s in enumerate(summaries):
            if s.label != label:
                raise DataError(
                    f"bank {i}'s summary is for label {s.label!r}, not {label!r}: "
                    f"summarize every bank with the job's label"
                )
            if set(s.column_names) != set(names):
                lacks = sorted(set(names) - set(s.column_names))
                extra = sorted(set(s.column_names) - set(names))
                raise DataError(
                    f"bank {i} has different columns from bank 0 (lacks {lacks[:5]}, extra {extra[:5]}): "
                    f"give every bank the same feature columns"
                )
        by_bank = [{c.name: c for c in s.columns} for s in summaries]
        return cls(label, tuple(_fit_column(name, [b[name] for b in by_bank]) for name in names))

    @classmethod
    def fit_frames(cls, frames: Sequence[pd.DataFrame], label: str) -> TabularEncoder:
        """Convenience: summarize each frame, then `fit` (each frame still only yields aggregates)."""
        return cls.fit([BankSummary.from_frame(f, label) for f in frames], label)

    # shape -----------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [name for c in self.columns for name in c.feature_names]

    @property
    def n_features(self) -> int:
        return self._offsets[-1]

    @property
    def input_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    # transforming -------------------------------------------------------------
    def check_columns(self, df: pd.DataFrame, require_label: bool = True) -> None:
        """Raise DataError naming the columns the encoder needs that `df` lacks."""
        needed = self.input_columns + ([self.label] if require_label else [])
        present = {str(c) for c in df.columns}
        missing = [c for c in needed if c not in present]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:8]) + (
                f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            )
            raise DataError(
                f"the table lacks column(s) {shown} that the encoder was fitted on: "
                f"give this bank the same columns as the others"
            )

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(features float32 (n, n_features), labels float32 (n,))."""
        self.check_columns(df)
        return self.transform_features(df), _binary_labels(df[self.label], self.label)

    def transform_features(self, df: pd.DataFrame) -> np.ndarray:
        """The features alone (for scoring rows without a label)."""
        self.check_columns(df, require_label=False)
        n = len(df)
        out = np.zeros((n, self.n_features), dtype=np.float32)
        for column, start in zip(self.columns, self._offsets):
            series = df[column.name]
            if isinstance(column, NumericColumn):
                self._numeric(column, series, out, start)
            else:
                self._categorical(column, series, out, start)
        return out

    @staticmethod
    def _as_numbers(column_name: str, series: pd.Series) -> np.ndarray:
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            return series.to_numpy(dtype=np.float64, na_value=np.nan)
        coerced = pd.to_numeric(series, errors="coerce")
        bad = coerced.isna() & series.notna()
        if bad.any():
            raise DataError(
                f"column {column_name!r} has non-numeric values (e.g. {series[bad].iloc[0]!r}) "
                f"but the encoder expects numbers: clean the column"
            )
        return coerced.to_numpy(dtype=np.float64, na_value=np.nan)

    def _numeric(self, column: NumericColumn, series: pd.Series, out: np.ndarray, start: int) -> None:
        x = self._as_numbers(column.name, series)
        if column.log:
            x = signed_log(x)
        z = (x - column.mean) / column.std
        missing = np.isnan(z)
        out[:, start] = np.where(missing, 0.0, z)
        if column.missing_indicator:
            out[:, start + 1] = missing

    def _categorical(self, column: CategoricalColumn, series: pd.Series, out: np.ndarray, start: int) -> None:
        n_cat = len(column.categories)
        if column.text:
            missing = series.isna().to_numpy()
            if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
                x = series.to_numpy(dtype=np.float64, na_value=np.nan)
                whole = ~missing & (x == np.floor(x))
                keys = np.where(whole, np.nan_to_num(x).astype(np.int64).astype(str), x.astype(str))
            else:
                keys = series.astype(str).to_numpy()
            codes = pd.Index(list(column.categories), dtype=object).get_indexer(keys).astype(np.int64)
            codes[missing] = -1
        else:
            x = self._as_numbers(column.name, series)
            missing = np.isnan(x)
            cats = np.asarray(column.categories, dtype=np.float64)
            pos = np.searchsorted(cats, np.where(missing, cats[0], x))
            pos_clipped = np.minimum(pos, n_cat - 1)
            codes = np.where(~missing & (cats[pos_clipped] == x), pos_clipped, -1)
        if column.missing_category:
            codes = np.where(missing, n_cat, codes)
        rows = np.flatnonzero(codes >= 0)
        out[rows, start + codes[rows]] = 1.0

    # persistence -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        cols = []
        for c in self.columns:
            if isinstance(c, NumericColumn):
                cols.append(
                    {
                        "name": c.name,
                        "type": "numeric",
                        "log": c.log,
                        "mean": c.mean,
                        "std": c.std,
                        "missing_indicator": c.missing_indicator,
                    }
                )
            else:
                cols.append(
                    {
                        "name": c.name,
                        "type": "categorical",
                        "categories": list(c.categories),
                        "text": c.text,
                        "missing_category": c.missing_category,
                    }
                )
        return {"format": FORMAT, "version": FORMAT_VERSION, "label": self.label, "columns": cols}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularEncoder:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError("the encoder file is not a fedsilo tabular encoder: re-create it with TabularEncoder.fit")
        if data.get("version") != FORMAT_VERSION:
            raise ConfigError(
                f"encoder format version {data.get('version')!r} is not supported "
                f"(this fedsilo reads {FORMAT_VERSION}): re-fit the encoder"
            )
        try:
            columns: list[NumericColumn | CategoricalColumn] = []
            for c in data["columns"]:
                if c["type"] == "numeric":
                    columns.append(
                        NumericColumn(
                            str(c["name"]),
                            bool(c["log"]),
                            float(c["mean"]),
                            float(c["std"]),
                            bool(c["missing_indicator"]),
                        )
                    )
                elif c["type"] == "categorical":
                    text = bool(c["text"])
                    cats = tuple(str(v) for v in c["categories"]) if text else tuple(int(v) for v in c["categories"])
                    columns.append(CategoricalColumn(str(c["name"]), cats, text, bool(c["missing_category"])))
                else:
                    raise ValueError(f"unknown column type {c['type']!r}")
            return cls(str(data["label"]), tuple(columns))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"the encoder file is malformed ({exc.__class__.__name__}: {exc}): re-create it with TabularEncoder.fit"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TabularEncoder:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"the encoder file is not valid JSON ({exc}): re-create it with TabularEncoder.fit"
            ) from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> TabularEncoder:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"encoder file {path} does not exist: check the job's data.encoder path")
        return cls.from_json(path.read_text())
