"""A user's own table (CSV or Parquet) as features plus a binary label.

`load_table` reads the file, drops the id column if one is named, and checks the
label. Every problem a user can cause is a one-line `DataError` (or `ConfigError`
for contradictory arguments) that names the problem and the fix.

The label must be binary:

- 0/1 values (integers, floats equal to 0.0/1.0, or booleans) are kept as they are;
- any other two distinct numeric values are mapped in sorted order, the smaller to 0
  and the larger to 1 (so {1, 2} becomes {0, 1} and {-1, 1} becomes {0, 1});
- text labels, a single value, or more than two values are refused: map them to 0/1
  yourself, with 1 for the event to predict (e.g. default), since which of two words
  is the "positive" one cannot be guessed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from peers.data.bank import read_table
from privacy.errors import ConfigError, DataError

def _few(columns: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def _missing_column(kind: str, name: str, path: Path, columns: list[str], flag: str) -> DataError:
    near = [c for c in columns if c.lower() == name.lower()]
    hint = f"did you mean {near[0]!r}?" if near else f"pass {flag} with one of them"
    return DataError(f"{kind} column {name!r} is not in {path.name} (columns: {_few(columns)}): {hint}")


def binary_label(values: pd.Series, name: str) -> np.ndarray:
    """The label as int64 0/1 (see the module docstring for the mapping)."""
    missing = int(values.isna().sum())
    if missing:
        raise DataError(f"label column {name!r} has {missing} missing values: drop or fill those rows first")
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy().astype(np.int64)
    if not pd.api.types.is_numeric_dtype(values):
        seen = _few([str(v) for v in pd.unique(values)], 4)
        raise DataError(f"label column {name!r} is not numeric (values {seen}): map it to 0/1 first, "
                        f"with 1 for the event to predict")
    array = values.to_numpy(dtype=np.float64)
    distinct = np.unique(array)
    if len(distinct) != 2:
        what = f"only the value {distinct[0]:g}" if len(distinct) == 1 else f"{len(distinct)} distinct values"
        raise DataError(f"label column {name!r} has {what}, not 2: give a binary label "
                        f"(0/1, 1 for the event to predict)")
    return (array == distinct[1]).astype(np.int64)


def load_table(path: str | Path, label: str, id_column: str | None = None) -> pd.DataFrame:
    """Features and the binary label (named `label`, int64 0/1) from a CSV or Parquet file.

    The id column, if named, is dropped; the other columns keep their order and dtypes.
    """
    if not label:
        raise ConfigError("no label column given: pass --label with the name of the 0/1 target column")
    if id_column is not None and id_column == label:
        raise ConfigError(f"the label and the id column are both {label!r}: name two different columns")
    path = Path(path)
    frame = read_table(path)
    frame.columns = [str(c) for c in frame.columns]
    columns = list(frame.columns)
    if label not in frame.columns:
        raise _missing_column("label", label, path, columns, "--label")
    if id_column is not None:
        if id_column not in frame.columns:
            raise _missing_column("id", id_column, path, columns, "--id-column")
        frame = frame.drop(columns=[id_column])
    features = [c for c in frame.columns if c != label]
    if not features:
        dropped = f" and id {id_column!r}" if id_column else ""
        raise DataError(f"{path.name} has no feature columns besides label {label!r}{dropped}: "
                        f"give a table with at least one feature column")
    frame = frame.copy()
    frame[label] = binary_label(frame[label], label)
    return frame.reset_index(drop=True)
