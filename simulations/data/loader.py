"""A user's own table (CSV or Parquet) as features plus a binary label.

`read_table_for_training` reads the file, drops the id column if one is named and the
columns that look like row ids, and maps the label to 0/1; it returns the frame with
what it did (`LoadedTable`), for the model card. `load_table` returns the frame alone.
Every problem a user can cause is a one-line `DataError` (or `ConfigError` for
contradictory arguments) that names the problem and the fix.

The label must be binary:

- with `positive` (`--positive VALUE`), the rows holding that value are 1 and the
  rows holding the other value are 0; it is matched against the label's values as
  text (surrounding spaces ignored), numerically for a numeric label (`1` matches
  1.0) and case-insensitively for a boolean one (`true`);
- without it, 0/1 values (integers, floats equal to 0.0/1.0, or booleans) are kept as
  they are, and any other two distinct numeric values are mapped in sorted order, the
  smaller to 0 and the larger to 1 (so {1, 2} becomes {0, 1} and {-1, 1} becomes {0, 1});
- two text values without `positive` are refused, naming both values and the flag,
  since which word is the event to predict cannot be guessed; a single value, more
  than two values, or a missing label are refused.

Id-like columns: a feature column of a table with at least `ID_CHECK_MIN_ROWS` rows
whose values are text or whole numbers, none missing, and distinct on every row is
almost always a row id (UCI's `ID`, R exports' `rownames`, pandas' `Unnamed: 0`); it
is dropped with a warning naming it and the flags, unless it is listed in
`keep_columns` (`--keep-column NAME`). Fractional numbers are never treated as ids (a
continuous feature is often distinct on every row).

Text columns with more distinct values than the encoder one-hot encodes
(`fedsilo.peers.data.encoding.MAX_TEXT_LEVELS`: free text, dates, post codes) are left out with
a warning too, rather than stopping the run; to use one, encode it as numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError, DataError
from fedsilo.peers.data.bank import read_table
from fedsilo.peers.data.encoding import MAX_TEXT_LEVELS

ID_CHECK_MIN_ROWS = 100


def _few(columns: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def _missing_column(kind: str, name: str, path: Path, columns: list[str], flag: str) -> DataError:
    near = [c for c in columns if c.lower() == name.lower()]
    hint = f"did you mean {near[0]!r}?" if near else f"pass {flag} with one of them"
    return DataError(f"{kind} column {name!r} is not in {path.name} (columns: {_few(columns)}): {hint}")


@dataclass(frozen=True)
class LoadedTable:
    """A table ready for training, and what loading did to it (JSON-ready, for the model card).

    label_mapping: which original label value became 1 and which 0, and by what rule.
    dropped_columns: column -> why it is not a feature (the named id column, id-like ones).
    warnings: one line each, for the user (an id-like column dropped).
    """

    frame: pd.DataFrame
    label_mapping: dict[str, Any]
    dropped_columns: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _matches(value: Any, positive: str, numeric: bool, boolean: bool) -> bool:
    if boolean:
        return str(bool(value)).lower() == positive.strip().lower()
    if numeric:
        try:
            return float(positive) == float(value)
        except ValueError:
            return False
    return str(value).strip() == positive.strip()


def binary_label(values: pd.Series, name: str, positive: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The label as int64 0/1 and the mapping applied (see the module docstring for the rules)."""
    missing = int(values.isna().sum())
    if missing:
        raise DataError(f"label column {name!r} has {missing} missing values: drop or fill those rows first")
    boolean = pd.api.types.is_bool_dtype(values)
    numeric = boolean or pd.api.types.is_numeric_dtype(values)
    if numeric:
        array = values.to_numpy(dtype=np.float64)
        distinct: list[Any] = [bool(v) for v in np.unique(array)] if boolean else list(np.unique(array))
    else:
        stripped = values.astype(str).str.strip()
        array = stripped.to_numpy()
        distinct = sorted(pd.unique(stripped))
    shown = [_text(v) for v in distinct]
    if len(distinct) != 2:
        what = (
            f"only the value {shown[0]!r}"
            if len(distinct) == 1
            else f"{len(distinct)} distinct values ({_few(shown, 6)})"
        )
        raise DataError(
            f"label column {name!r} has {what}, not 2: give a binary label "
            f"(two values, e.g. 0/1 or 'good'/'bad', and --positive naming the event to predict)"
        )
    if positive is not None:
        hits = [v for v in distinct if _matches(v, str(positive), numeric, boolean)]
        if len(hits) != 1:
            raise DataError(
                f"--positive {positive!r} is not a value of label column {name!r} "
                f"(its values: {shown[0]!r}, {shown[1]!r}): pass one of them"
            )
        event = hits[0]
        rule = f"--positive {positive}"
    elif numeric:
        event = distinct[1]
        rule = "kept as 0/1" if [float(v) for v in distinct] == [0.0, 1.0] else "the larger value is 1"
    else:
        raise DataError(
            f"label column {name!r} holds the text values {shown[0]!r} and {shown[1]!r}: say which one "
            f"is the event to predict (e.g. default) with --positive {shown[0]!r} or "
            f"--positive {shown[1]!r} (TOML: [data] positive)"
        )
    other = distinct[0] if event == distinct[1] else distinct[1]
    y = (array == (float(event) if numeric else event)).astype(np.int64)
    return y, {"column": name, "1": _text(event), "0": _text(other), "rule": rule}


def id_like_columns(frame: pd.DataFrame, candidates: Iterable[str]) -> list[str]:
    """The `candidates` that look like row ids (see the module docstring); none below ID_CHECK_MIN_ROWS rows."""
    if len(frame) < ID_CHECK_MIN_ROWS:
        return []
    found = []
    for name in candidates:
        series = frame[name]
        if pd.api.types.is_bool_dtype(series) or series.isna().any():
            continue
        if pd.api.types.is_numeric_dtype(series):
            x = series.to_numpy(dtype=np.float64)
            if not np.array_equal(x, np.floor(x)):
                continue
        if series.nunique() == len(series):
            found.append(name)
    return found


def load_table(
    path: str | Path,
    label: str,
    id_column: str | None = None,
    positive: str | None = None,
    keep_columns: Iterable[str] = (),
) -> pd.DataFrame:
    """Features and the binary label (named `label`, int64 0/1) from a CSV or Parquet file.

    The frame of `read_table_for_training` (same arguments), without its report.
    """
    return read_table_for_training(path, label, id_column, positive, keep_columns).frame


def read_table_for_training(
    path: str | Path,
    label: str,
    id_column: str | None = None,
    positive: str | None = None,
    keep_columns: Iterable[str] = (),
) -> LoadedTable:
    """Features and the binary label (named `label`, int64 0/1), and what was done to get them.

    The id column, if named, and the id-like columns not in `keep_columns` are dropped;
    the other columns keep their order and dtypes.
    """
    if not label:
        raise ConfigError("no label column given: pass --label with the name of the 0/1 target column")
    if id_column is not None and id_column == label:
        raise ConfigError(f"the label and the id column are both {label!r}: name two different columns")
    keep = list(keep_columns)
    path = Path(path)
    frame = read_table(path)
    frame.columns = [str(c) for c in frame.columns]
    columns = list(frame.columns)
    if label not in frame.columns:
        raise _missing_column("label", label, path, columns, "--label")
    for name in keep:
        if name not in frame.columns:
            raise _missing_column("kept", name, path, columns, "--keep-column")
        if name in (label, id_column):
            raise ConfigError(
                f"--keep-column {name!r} is the {'label' if name == label else 'id column'}: keep only feature columns"
            )
    dropped: dict[str, str] = {}
    if id_column is not None:
        if id_column not in frame.columns:
            raise _missing_column("id", id_column, path, columns, "--id-column")
        dropped[id_column] = "the id column (--id-column)"
    candidates = [c for c in frame.columns if c != label and c not in dropped and c not in keep]
    id_like = id_like_columns(frame, candidates)
    warnings = tuple(
        f"column {c!r} has a distinct value on every row, like a row id: it is left out of the "
        f"features (name it with --id-column {c}, or pass --keep-column {c} to use it)"
        for c in id_like
    )
    dropped.update({c: "id-like: a distinct value on every row (--keep-column to use it)" for c in id_like})
    for c in candidates:
        series = frame[c]
        if c in dropped or pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        levels = series.nunique()
        if levels > MAX_TEXT_LEVELS:
            dropped[c] = f"{levels} distinct text values, more than the {MAX_TEXT_LEVELS} one-hot encoded"
            warnings += (
                f"column {c!r} has {levels} distinct text values (more than {MAX_TEXT_LEVELS}): it is left "
                f"out of the features (encode it as numbers, or group its values, to use it)",
            )
    frame = frame.drop(columns=list(dropped))
    features = [c for c in frame.columns if c != label]
    if not features:
        what = f" (left out: {_few(list(dropped))}; --keep-column NAME uses an id-like one)" if dropped else ""
        raise DataError(
            f"{path.name} has no feature columns besides label {label!r}{what}: "
            f"give a table with at least one feature column"
        )
    frame = frame.copy()
    y, mapping = binary_label(frame[label], label, positive)
    frame[label] = y
    return LoadedTable(frame.reset_index(drop=True), mapping, dropped, warnings)
