"""Institutions with different customers *and* different feature schemas (the transfer setup).

A `TransferScenario` names a label column and a few institutions. Each institution
(`InstitutionSpec`) holds a share of the customers and its own columns: each
`ColumnSpec` reads one canonical column of the source table (`source`), under the
institution's own name (`name`), possibly rescaled (`value * scale`, e.g. amounts in
thousands). So one institution's `credit_line` may be another's `limit_bal` in
different units, and most columns are known to one or two institutions only.

`split(table, seed)` deals the table's customers (rows) out at random, disjointly, in
proportion to the shares (shares are relative weights: 0.6/0.3/0.1 and 6/3/1 split
alike, and every row goes to some institution), and gives each institution a frame
with exactly its own columns (renamed, rescaled) plus the label. With `overlap` p > 0
some customers are clients of several institutions, as in a real group: each customer
is, besides her own institution's, a client of one more with probability p, of a
second more with probability p², and so on (each further institution drawn in
proportion to the shares among those she is not yet a client of); each of them holds
its own columns for her, and the label is hers everywhere. Such customers must sit
on the same side of every institution's train/test split (`fedsilo.peers.shared_holdout`). `common_frames`
uses the same rows but keeps only the source columns every institution has, under
their canonical names and units: the "horizontal FL on the common columns" yardstick.

The TOML form (`load_scenario_toml`, `TransferScenario.to_toml`):

    label = "default"
    overlap = 0.2          # optional: customers shared between institutions (default 0)

    [[institution]]
    name = "bank"
    share = 0.6
    columns = ["limit_bal", "bill_amt1", {source = "pay_amt1", name = "repaid_last_month", scale = 0.001}]

A plain string column means source = name and scale 1.

Mistakes in a scenario (a duplicate name, an institution without columns, a share
that is not > 0, an overlap outside [0, 1), an unknown key) are `ConfigError`s raised when it is built; a table
that does not fit it (an unknown source column, too few rows for an institution) and
an institution frame that does not match its declared columns are `DataError`s.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError, DataError
from fedsilo.peers.toml_file import read_toml
from fedsilo.simulations.data.loader import load_table
from fedsilo.simulations.data.synthetic import (
    BILL_COLUMNS,
    DEFAULT_TOTAL_CUSTOMERS,
    FEATURES,
    LABEL,
    PAY_AMT_COLUMNS,
    PAY_COLUMNS,
    generate_consortium,
)

MIN_INSTITUTION_ROWS = 50
TRANSFER_SOURCE_BANKS = 3  # synthetic banks pooled into the transfer table (a mix of customer profiles)
UCI_LABEL = "Y"
UCI_ID = "ID"
# The UCI file's X1 … X23, in the order of the synthetic generator's FEATURES (see the README beside the UCI file).
UCI_SOURCES = dict(zip(FEATURES, [f"X{i}" for i in range(1, 24)]))

_SPLIT_STREAM = 7
_OVERLAP_STREAM = 8
_COLUMN_KEYS = ("source", "name", "scale")
_INSTITUTION_KEYS = ("name", "share", "columns")
_SCENARIO_KEYS = ("label", "overlap", "institution")


def _few(items: Iterable[Any], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(repr(c) for c in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _unknown_keys(data: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"unknown key(s) {_few(unknown)} in {where}: valid keys are {', '.join(valid)}")


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string (got {value!r})")
    return value


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{what} must be a number > 0 (got {value!r})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a finite number > 0 (got {value!r})")
    return value


@dataclass(frozen=True)
class ColumnSpec:
    """One column of an institution: the source table's `source` column, called `name`, times `scale`."""

    source: str
    name: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_name(self.source, "a column's source")
        _check_name(self.name, f"the name of column {self.source!r}")
        scale = _check_number(self.scale, f"the scale of column {self.name!r}")
        object.__setattr__(self, "scale", scale)

    @classmethod
    def parse(cls, value: Any, where: str = "a column") -> ColumnSpec:
        """A plain string (source = name, scale 1) or a table {source, name?, scale?}."""
        if isinstance(value, str):
            return cls(value, value)
        if isinstance(value, ColumnSpec):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a column name or a table {{source, name, scale}} (got {value!r})")
        _unknown_keys(value, _COLUMN_KEYS, where)
        if "source" not in value:
            raise ConfigError(f"{where} has no 'source': name the column of the source table it reads")
        source = _check_name(value["source"], f"the source of {where}")
        return cls(source, value.get("name", source), value.get("scale", 1.0))

    def to_value(self) -> str | dict[str, Any]:
        """The TOML form: a plain string when neither renamed nor rescaled."""
        if self.name == self.source and self.scale == 1.0:
            return self.source
        out: dict[str, Any] = {"source": self.source, "name": self.name}
        if self.scale != 1.0:
            out["scale"] = self.scale
        return out


@dataclass(frozen=True)
class InstitutionSpec:
    """An institution: its name, its own columns, and its share of the customers (a relative weight)."""

    name: str
    columns: tuple[ColumnSpec, ...]
    share: float

    def __post_init__(self) -> None:
        _check_name(self.name, "an institution's name")
        if isinstance(self.columns, (str, bytes)) or not isinstance(self.columns, Iterable):
            raise ConfigError(f"institution {self.name!r}: columns must be a list of columns (got {self.columns!r})")
        columns = tuple(ColumnSpec.parse(c, f"a column of institution {self.name!r}") for c in self.columns)
        if not columns:
            raise ConfigError(f"institution {self.name!r} has no columns: give it at least one column")
        for attr, what in (("name", "column name"), ("source", "source column")):
            values = [getattr(c, attr) for c in columns]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ConfigError(
                    f"institution {self.name!r} has the {what}(s) {_few(repeated)} more than once: list each once"
                )
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "share", _check_number(self.share, f"the share of institution {self.name!r}"))

    @property
    def sources(self) -> list[str]:
        return [c.source for c in self.columns]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstitutionSpec:
        if not isinstance(data, Mapping):
            raise ConfigError(f"an [[institution]] must be a table with {', '.join(_INSTITUTION_KEYS)} (got {data!r})")
        where = f"institution {data.get('name', '?')!r}"
        _unknown_keys(data, _INSTITUTION_KEYS, where)
        missing = [k for k in _INSTITUTION_KEYS if k not in data]
        if missing:
            raise ConfigError(
                f"{where} lacks {', '.join(missing)}: give every [[institution]] {', '.join(_INSTITUTION_KEYS)}"
            )
        return cls(data["name"], data["columns"], data["share"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "share": self.share, "columns": [c.to_value() for c in self.columns]}


@dataclass(frozen=True)
class TransferScenario:
    """Institutions with different customers and different columns, over one source table.

    `overlap` in [0, 1): how often a customer is also a client of another institution
    (see the module docstring); 0 deals every customer to exactly one.
    """

    label: str
    institutions: tuple[InstitutionSpec, ...]
    overlap: float = 0.0

    def __post_init__(self) -> None:
        _check_name(self.label, "the scenario's label")
        if (
            isinstance(self.overlap, bool)
            or not isinstance(self.overlap, (int, float, np.integer, np.floating))
            or not 0.0 <= float(self.overlap) < 1.0
        ):
            raise ConfigError(
                f"the scenario's overlap must be a number in [0, 1) (got {self.overlap!r}): the "
                f"probability that a customer is also a client of another institution"
            )
        object.__setattr__(self, "overlap", float(self.overlap))
        institutions = tuple(
            i if isinstance(i, InstitutionSpec) else InstitutionSpec.from_dict(i) for i in self.institutions
        )
        if not institutions:
            raise ConfigError("the scenario has no institutions: add at least one [[institution]]")
        names = [i.name for i in institutions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(
                f"institution name(s) {_few(repeated)} appear more than once: give each institution a distinct name"
            )
        for inst in institutions:
            if self.label in inst.sources:
                raise ConfigError(
                    f"institution {inst.name!r} reads the label column {self.label!r} as a feature: "
                    f"remove it from its columns"
                )
            if self.label in inst.column_names:
                raise ConfigError(
                    f"institution {inst.name!r} names a column {self.label!r}, like the label: rename that column"
                )
        object.__setattr__(self, "institutions", institutions)

    # structure ---------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [i.name for i in self.institutions]

    @property
    def shares(self) -> np.ndarray:
        """The shares normalized to sum to 1."""
        raw = np.array([i.share for i in self.institutions], dtype=np.float64)
        return raw / raw.sum()

    def common_sources(self) -> list[str]:
        """The source columns every institution has, in the first institution's order."""
        others = [set(i.sources) for i in self.institutions[1:]]
        return [s for s in self.institutions[0].sources if all(s in o for o in others)]

    def validate(self, table_columns: Iterable[Any]) -> None:
        """Check the scenario against a source table's columns (a DataError for a mismatch).

        The scenario's own consistency (names, shares, non-empty columns) was checked
        when it was built; this re-checks it, then checks that the label and every
        source column are in the table.
        """
        TransferScenario(self.label, self.institutions, self.overlap)
        columns = [str(c) for c in table_columns]
        present = set(columns)
        if self.label not in present:
            raise DataError(
                f"label column {self.label!r} is not in the table (columns: {_few(columns)}): "
                f"set the scenario's label to the table's 0/1 target column"
            )
        for inst in self.institutions:
            for source in inst.sources:
                if source not in present:
                    near = difflib.get_close_matches(source, columns, n=1)
                    hint = f"did you mean {near[0]!r}?" if near else "fix its columns or pass the right table"
                    raise DataError(
                        f"institution {inst.name!r} reads column {source!r}, which the table lacks "
                        f"(columns: {_few(columns)}): {hint}"
                    )

    # splitting ----------------------------------------------------------------
    def split_rows(self, table: pd.DataFrame, seed: int) -> list[np.ndarray]:
        """Sorted row positions per institution, covering the table.

        Without overlap the parts are disjoint, sizes ∝ shares. With overlap each part
        also holds the customers dealt to other institutions who are its clients too.
        """
        self.validate(table.columns)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer (got {seed!r}): pass e.g. seed=0")
        n = len(table)
        sizes = _sizes(n, self.shares)
        order = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_STREAM])).permutation(n)
        parts = [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]
        if self.overlap > 0:
            parts = [np.union1d(own, extra) for own, extra in zip(parts, self._also_clients(parts, n, int(seed)))]
        labels = table[self.label].to_numpy()
        for inst, share, rows in zip(self.institutions, self.shares, parts):
            if len(rows) < MIN_INSTITUTION_ROWS:
                need = math.ceil(MIN_INSTITUTION_ROWS / share)
                raise DataError(
                    f"institution {inst.name!r} gets {len(rows)} of {n} rows (at least "
                    f"{MIN_INSTITUTION_ROWS} needed): raise its share or give a table of at least "
                    f"{need} rows"
                )
            classes = np.unique(labels[rows])
            if len(classes) < 2:
                only = classes[0].tolist()
                raise DataError(
                    f"institution {inst.name!r} gets only class {only!r} of {self.label!r} "
                    f"in its {len(rows)} rows: raise its share, use another seed or a larger table"
                )
        return parts

    def _also_clients(self, parts: list[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
        """Per institution, the rows dealt to others whose customers are its clients too."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, _OVERLAP_STREAM]))
        count = len(self.institutions)
        home = np.empty(n, dtype=np.int64)
        for index, rows in enumerate(parts):
            home[rows] = index
        more = (
            np.cumprod(rng.random((n, count - 1)) < self.overlap, axis=1).sum(axis=1)
            if count > 1
            else np.zeros(n, dtype=np.int64)
        )
        extra: list[list[int]] = [[] for _ in range(count)]
        for row in np.flatnonzero(more):
            others = np.array([j for j in range(count) if j != home[row]])
            weights = self.shares[others] / self.shares[others].sum()
            for j in rng.choice(others, size=int(more[row]), replace=False, p=weights):
                extra[int(j)].append(int(row))
        return [np.array(e, dtype=np.int64) for e in extra]

    def split(self, table: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
        """One frame per institution: its rows, only its own columns (renamed, rescaled) and the label."""
        frames = []
        for inst, rows in zip(self.institutions, self.split_rows(table, seed)):
            part = table.iloc[rows]
            data: dict[str, Any] = {}
            for col in inst.columns:
                values = part[col.source]
                if col.scale != 1.0:
                    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                        raise DataError(
                            f"institution {inst.name!r} rescales column {col.source!r}, which is not "
                            f"numeric: drop its scale or convert the column to numbers"
                        )
                    values = values.astype(np.float64) * col.scale
                data[col.name] = values.to_numpy()
            data[self.label] = part[self.label].to_numpy()
            frames.append(pd.DataFrame(data, columns=[*inst.column_names, self.label]))
        return frames

    def common_frames(self, table: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
        """The rows of `split`, restricted to `common_sources()` under canonical names and units."""
        common = self.common_sources()
        if not common:
            raise ConfigError(
                f"the institutions {_few(self.names)} share no source column: give every institution "
                f"at least one common column for the horizontal yardstick"
            )
        keep = [*common, self.label]
        return [table.iloc[rows][keep].reset_index(drop=True) for rows in self.split_rows(table, seed)]

    # persistence ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferScenario:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a scenario must be a table with {', '.join(_SCENARIO_KEYS)} (got {data!r})")
        _unknown_keys(data, _SCENARIO_KEYS, "the scenario (top level)")
        if "label" not in data:
            raise ConfigError('the scenario has no label: add label = "<0/1 target column>" at the top level')
        institutions = data.get("institution")
        if institutions is not None and not isinstance(institutions, list):
            raise ConfigError(
                "'institution' must be an array of tables: write each one as [[institution]], not [institution]"
            )
        if not institutions:
            raise ConfigError("the scenario has no institutions: add at least one [[institution]] table")
        return cls(data["label"], tuple(InstitutionSpec.from_dict(i) for i in institutions), data.get("overlap", 0.0))

    def to_dict(self) -> dict[str, Any]:
        overlap = {"overlap": self.overlap} if self.overlap else {}
        return {"label": self.label, **overlap, "institution": [i.to_dict() for i in self.institutions]}

    def to_toml(self) -> str:
        """The scenario as TOML text (read back by `load_scenario_toml`)."""
        lines = [f"label = {_toml(self.label)}"] + ([f"overlap = {_toml(self.overlap)}"] if self.overlap else [])
        for inst in self.to_dict()["institution"]:
            lines += [
                "",
                "[[institution]]",
                f"name = {_toml(inst['name'])}",
                f"share = {_toml(inst['share'])}",
                "columns = [" + ", ".join(_toml(c) for c in inst["columns"]) + "]",
            ]
        return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _sizes(n: int, shares: np.ndarray) -> np.ndarray:
    """Integer sizes summing to n, proportional to shares (largest remainder)."""
    raw = n * shares
    sizes = np.floor(raw).astype(np.int64)
    remainder = n - int(sizes.sum())
    if remainder:
        sizes[np.argsort(-(raw - sizes), kind="stable")[:remainder]] += 1
    return sizes


def check_schema(frame: pd.DataFrame, spec: InstitutionSpec, label: str) -> None:
    """Refuse an institution frame whose columns are not exactly its declared columns plus the label."""
    expected = [*spec.column_names, label]
    present = [str(c) for c in frame.columns]
    missing = [c for c in expected if c not in present]
    unexpected = [c for c in present if c not in expected]
    repeated = sorted({c for c in present if present.count(c) > 1})
    if missing or unexpected or repeated:
        problems = [
            f"{what} {_few(cols)}"
            for what, cols in (("missing", missing), ("unexpected", unexpected), ("repeated", repeated))
            if cols
        ]
        raise DataError(
            f"institution {spec.name!r}'s table does not match its declared columns "
            f"({'; '.join(problems)}): give it exactly its declared columns plus the label {label!r}"
        )


def load_scenario_toml(path: str | Path) -> TransferScenario:
    """Read a scenario from a TOML file (top-level `label`, `[[institution]]` tables)."""
    path = Path(path)
    document = read_toml(path, "scenario file")
    try:
        return TransferScenario.from_dict(document)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# ready scenarios ---------------------------------------------------------------


def _canonical_institutions() -> tuple[InstitutionSpec, ...]:
    """Three institutions on the canonical (synthetic) column names.

    Shared by all: limit_bal (as limit_bal, credit_line in thousands, limit_10k in tens
    of thousands) and age. Shared by a few: education (card issuer, broker), pay_amt1
    and pay_amt2 (bank, broker; renamed at the broker). Private: bill_amt1-6 and
    pay_amt3-6 (bank), the repayment statuses pay_0, pay_2-6 (card issuer), sex and
    marriage (broker).
    """
    return (
        InstitutionSpec("bank", ("limit_bal", "age", *BILL_COLUMNS, *PAY_AMT_COLUMNS), 0.55),
        InstitutionSpec(
            "card-issuer",
            (*PAY_COLUMNS, ColumnSpec("limit_bal", "credit_line", 0.001), "education", ColumnSpec("age", "holder_age")),
            0.35,
        ),
        InstitutionSpec(
            "broker",
            (
                "age",
                "sex",
                "education",
                "marriage",
                "pay_amt1",
                ColumnSpec("pay_amt2", "paid_prev_month"),
                ColumnSpec("limit_bal", "limit_10k", 0.0001),
            ),
            0.10,
        ),
    )


def synthetic_scenario() -> TransferScenario:
    """A bank (55%), a card issuer (35%) and a small broker (10%) on the synthetic generator's columns."""
    return TransferScenario(LABEL, _canonical_institutions())


def uci_scenario() -> TransferScenario:
    """`synthetic_scenario()` on the UCI file: sources X1 … X23 and label Y, institutions' own names unchanged.

    So the institutions' frames have the same column names (and units) on both tables.
    Load the file with `uci_transfer_table(path)`.
    """
    return TransferScenario(
        UCI_LABEL,
        tuple(
            InstitutionSpec(
                inst.name, tuple(ColumnSpec(UCI_SOURCES[c.source], c.name, c.scale) for c in inst.columns), inst.share
            )
            for inst in _canonical_institutions()
        ),
    )


def uci_transfer_table(path: str | Path) -> pd.DataFrame:
    """The UCI credit-card file (passed by path, never copied) as X1 … X23 and the 0/1 label Y."""
    return load_table(path, label=UCI_LABEL, id_column=UCI_ID)


def synthetic_transfer_table(seed: int = 0, customers: int | None = None) -> pd.DataFrame:
    """The pooled synthetic table the scenario splits: a few generated banks' customers, concatenated.

    `customers` defaults to the generator's 20,000; the institutions' customers come
    from `TransferScenario.split`, so the broker's 10% needs at least 500 customers.
    """
    total = DEFAULT_TOTAL_CUSTOMERS if customers is None else customers
    return pd.concat(generate_consortium(TRANSFER_SOURCE_BANKS, seed=seed, total_customers=total), ignore_index=True)
