"""The banks of a simulation: their raw tables, from the generator or a user's file.

`build_population` describes every bank without building any bank's rows when it can
(the embedded generator without `--partition`); a user's table, or the pooled synthetic
table with `--partition`, is read once and split into row-index lists. Every bank's
public facts are checked before anything is trained or written: a bank with too few
rows or a single class stops the run with a `DataError` naming the bank and the fix
(the partitioners check this for tables; the generator guarantees it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsilo.errors import DataError
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.data.loader import read_table_for_training
from fedsilo.simulations.data.partition import parse_partitioner
from fedsilo.simulations.data.synthetic import (
    SIMULATE_RATE_RANGE,
    consortium_profiles,
    generate_consortium,
    simulate_total_customers,
)
from fedsilo.simulations.population import Population, SyntheticPopulation, TablePopulation, fingerprint

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
        return fingerprint(self.frame)


def build_population(config: SimulationConfig, work: Path) -> Population:
    """Every bank of `config`, lazily where possible; a table goes to `work/table.parquet`."""
    label = config.label_column
    customers = config.customers or simulate_total_customers(config.banks)  # small banks with few defaults
    if config.data is None and not config.partition:
        return SyntheticPopulation(
            seed=config.seed, profiles=consortium_profiles(config.banks, config.seed, customers, SIMULATE_RATE_RANGE)
        )
    if config.data is None:
        table = pd.concat(
            generate_consortium(config.banks, seed=config.seed, total_customers=customers, rates=SIMULATE_RATE_RANGE),
            ignore_index=True,
        )
    else:
        loaded = read_table_for_training(
            config.data,
            label=label,
            id_column=config.id_column,
            positive=config.positive,
            keep_columns=config.keep_columns,
        )
        table = loaded.frame
        if len(table) < config.banks:
            raise DataError(f"{config.data} has {len(table)} rows for {config.banks} banks: use fewer banks")
    parts = parse_partitioner(config.partition or "iid").split(table[label].to_numpy(), config.banks, config.seed)
    work.mkdir(parents=True, exist_ok=True)
    table_path = work / "table.parquet"
    table.to_parquet(table_path, index=False)
    report = (
        {}
        if config.data is None
        else {
            "label_mapping": loaded.label_mapping,
            "dropped_columns": loaded.dropped_columns,
            "warnings": list(loaded.warnings),
        }
    )
    return TablePopulation(
        seed=config.seed, table_path=str(table_path), parts=[np.sort(p) for p in parts], load_report=report
    )


def check_bank(bank: Bank, label: str) -> None:
    """Refuse a bank that cannot train and be evaluated on its own rows."""
    rows = len(bank.frame)
    if rows < MIN_ROWS_PER_BANK:
        raise DataError(
            f"{bank.name} has {rows} rows (at least {MIN_ROWS_PER_BANK} needed): "
            "use fewer banks or a larger partition alpha"
        )
    classes = bank.frame[label].nunique()
    if classes < 2:
        raise DataError(f"{bank.name} has only one class of '{label}': use fewer banks or a larger dirichlet alpha")
