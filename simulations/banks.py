"""The banks of a simulation: their raw tables, from the generator or a user's file.

Every bank is checked before anything is trained or written: a bank with too few rows
or a single class stops the run with a `DataError` naming the bank and the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from privacy.errors import DataError
from simulations.config import SimulationConfig
from simulations.data.loader import load_table
from simulations.data.partition import parse_partitioner
from simulations.data.synthetic import generate_consortium

MIN_ROWS_PER_BANK = 20


@dataclass(frozen=True)
class Bank:
    """One simulated institution and its private table (features and label)."""

    index: int
    frame: pd.DataFrame
    title: str = ""

    @property
    def name(self) -> str:
        return f"bank-{self.index:05d}"

    @property
    def display_name(self) -> str:
        """The institution's own name where it has one (transfer scenarios), else `name`."""
        return self.title or self.name

    def fingerprint(self) -> str:
        """SHA-256 over the bank's rows (values and column names), order-sensitive."""
        digest = hashlib.sha256(",".join(map(str, self.frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()


def prepare_banks(config: SimulationConfig) -> list[Bank]:
    """Build and check every bank's table for `config`."""
    label = config.label_column
    if config.data is None:
        frames = generate_consortium(config.banks, seed=config.seed, total_customers=config.customers)
        if config.partition:
            frames = _repartition(pd.concat(frames, ignore_index=True), label, config)
    else:
        table = load_table(config.data, label=label, id_column=config.id_column)
        if len(table) < config.banks:
            raise DataError(f"{config.data} has {len(table)} rows for {config.banks} banks: use fewer banks")
        frames = _repartition(table, label, config)
    banks = [Bank(i, frame.reset_index(drop=True)) for i, frame in enumerate(frames)]
    for bank in banks:
        check_bank(bank, label)
    return banks


def _repartition(table: pd.DataFrame, label: str, config: SimulationConfig) -> list[pd.DataFrame]:
    partitioner = parse_partitioner(config.partition or "iid")
    parts = partitioner.split(table[label].to_numpy(), config.banks, config.seed)
    return [table.iloc[np.sort(rows)] for rows in parts]


def check_bank(bank: Bank, label: str) -> None:
    """Refuse a bank that cannot train and be evaluated on its own rows."""
    rows = len(bank.frame)
    if rows < MIN_ROWS_PER_BANK:
        raise DataError(f"{bank.name} has {rows} rows (at least {MIN_ROWS_PER_BANK} needed): "
                        "use fewer banks or a larger partition alpha")
    classes = bank.frame[label].nunique()
    if classes < 2:
        raise DataError(f"{bank.name} has only one class of '{label}': use fewer banks or a larger dirichlet alpha")
