"""What a simulated institution does when it is first sampled: client mods.

- `materialize_mod`: the first message a bank receives makes it write its own table
  (`banks-dir/bank-NNNNN.parquet`, from the pickled `Population`) and a small facts
  file next to it (rows, train/test rows, default rate, SHA-256 of the rows, and the
  positions of its training and held-out rows for the privacy self-audit). Until
  then the bank's rows do not exist anywhere: a bank that is never sampled is never
  built.
- `ledger_mod`: before a bank's first training work in a job, it sets its budget and
  reserves the job's planned mechanism in its privacy ledger (the run's SQLite file,
  shared by all simulated banks; the ledger's transactions make concurrent workers
  safe). A bank that is never sampled never touches the ledger; the harness commits
  what each bank actually ran after the job (per participation).

Both mods do nothing when the run config lacks their key, so a real peer's ClientApp
is unchanged.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedsilo.errors import FedsiloError, LedgerError
from fedsilo.peers.client.app import bank_data, bank_index
from fedsilo.peers.data.bank import split_rows
from fedsilo.peers.job import JobConfig, parameter_count, plan_distributed_dp, plan_dp
from fedsilo.privacy.ledger import SQLiteLedger
from fedsilo.simulations.population import bank_name, fingerprint, load_population

POPULATION_KEY = "sim.population"
LEDGER_KEY = "sim.ledger"
RESERVED_STATE_KEY = "fedsilo.sim.reserved"
ERROR_CODE_LEDGER = 4200


def facts_path(banks_dir: Path, index: int) -> Path:
    return banks_dir / f"{bank_name(index)}.json"


def materialize(population_path: str, banks_dir: Path, index: int, label: str, test_fraction: float, seed: int) -> Path:
    """Write bank `index`'s table and facts file once (atomically); return the table's path."""
    table = banks_dir / f"{bank_name(index)}.parquet"
    if table.exists():
        return table
    population = load_population(population_path)
    frame = population.frame(index)
    train, test = split_rows(frame, label, test_fraction, seed)
    facts = {
        "name": bank_name(index),
        "title": population.title(index),
        "rows": len(frame),
        "rows_train": len(train),
        "rows_test": len(test),
        "default_rate": round(float(frame[label].mean()), 4),
        "data_sha256": fingerprint(frame),
        "train_positions": train.tolist(),
        "test_positions": test.tolist(),
    }
    partial = table.with_suffix(f".{os.getpid()}.partial")
    frame.to_parquet(partial, index=False)
    facts_path(banks_dir, index).write_text(json.dumps(facts))
    os.replace(partial, table)
    return table


def materialize_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod: build this bank's table the first time it is asked for anything."""
    population = context.run_config.get(POPULATION_KEY)
    if population:
        config = context.run_config
        materialize(
            str(population),
            Path(str(config["data.banks-dir"])),
            bank_index(context),
            str(config["data.label"]),
            float(config["train.test-fraction"]),
            int(config["train.seed"]),
        )
    return call_next(msg, context)


@lru_cache(maxsize=2)
def _ledger(path: str) -> SQLiteLedger:
    return SQLiteLedger(path)


def planned_mechanisms(job: JobConfig, n_train: int) -> list:
    """What a bank reserves for a job: every round it could be sampled in."""
    if job.dp.mode == "distributed":
        return [plan_distributed_dp(job, parameter_count(job)).per_round] * job.train.rounds
    return [plan_dp(job, n_train).whole_job]


def reserve(ledger: SQLiteLedger, job: JobConfig, name: str, n_train: int) -> None:
    """Set `name`'s budget to the job's (ε, δ) and reserve the job's plan on it."""
    ledger.set_budget(name, job.dp.epsilon, job.dp.delta, accountant=job.dp.accountant)
    ledger.reserve(name, job.job_id, planned_mechanisms(job, n_train))


def ledger_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod: reserve in the bank's ledger before its first training work in the job."""
    path = context.run_config.get(LEDGER_KEY)
    if not path or msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    job = JobConfig.from_run_config(context.run_config)
    done = context.state.get(RESERVED_STATE_KEY)
    if job.dp.private and not (isinstance(done, ConfigRecord) and done.get("job") == job.job_id):
        try:
            reserve(_ledger(str(path)), job, bank_name(bank_index(context)), bank_data(job, context).n_train)
        except LedgerError as error:
            if "already" not in str(error):
                return Message(Error(code=ERROR_CODE_LEDGER, reason=f"ledger refused: {error}"), reply_to=msg)
        except FedsiloError as error:
            return Message(Error(code=ERROR_CODE_LEDGER, reason=f"ledger refused: {error}"), reply_to=msg)
        context.state[RESERVED_STATE_KEY] = ConfigRecord({"job": job.job_id})
    return call_next(msg, context)
