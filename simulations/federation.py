"""One federated job over simulated banks on Flower's Simulation Engine.

`run_federation` is the part every setup shares: it puts each bank's table (and its
encoder: one for all banks in the horizontal setup, one per bank in the transfer
setup) where that bank's ClientApp reads it, has each bank's ledger reserve the job's
planned (ε, δ), runs the job host and the peers on the engine, and commits what each
bank's accountant says it spent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from peers.client.app import app as default_client_app
from peers.client.app import build_client_app
from peers.data.bank import BankTensors
from peers.data.encoding import TabularEncoder
from peers.job import JobConfig, parameter_count, plan_distributed_dp, plan_dp
from peers.server.host import EvaluateFn, HostedRun, JobHost, server_app
from privacy.accounting import Mechanism
from privacy.errors import FedsiloError
from privacy.ledger import SQLiteLedger
from simulations.banks import Bank
from simulations.engine import run_flower_simulation
from simulations.faults import DROPOUT_KEY, dropout_mod
from simulations.progress import Progress


@dataclass
class FederationRun:
    job: JobConfig
    outcome: HostedRun
    spent: dict[int, list[Mechanism]]
    ledger_status: dict[str, Any]


def fedsilo_version() -> str:
    try:
        return metadata.version("fedsilo")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def run_federation(job: JobConfig, banks: list[Bank], encoders: list[TabularEncoder], tensors: list[BankTensors],
                   work: Path, ledger_path: Path, progress: Progress, dropout: float = 0.0,
                   evaluate_fn: EvaluateFn | None = None, title: str = "Training") -> FederationRun:
    """Run `job` (its data paths are filled in here) over `banks`; see the module docstring."""
    banks_dir = work / "banks"
    banks_dir.mkdir(parents=True, exist_ok=True)
    for bank in banks:
        bank.frame.to_parquet(banks_dir / f"{bank.name}.parquet", index=False)
    if len(encoders) == 1:
        encoder_path = work / "encoder.json"
        encoder_path.write_text(encoders[0].to_json())
        encoder_template = str(encoder_path)
    else:
        for bank, encoder in zip(banks, encoders):
            (banks_dir / f"{bank.name}.encoder.json").write_text(encoder.to_json())
        encoder_template = str(banks_dir / "{bank}.encoder.json")
    job = replace(job, encoder_path=encoder_template, banks_dir=str(banks_dir))

    host = JobHost(job, evaluate_fn=evaluate_fn, on_round=progress.round_callback(job.train.rounds))
    host.initial_weights()  # a bad `model.base` fails here, before any ledger entry or engine start
    ledger = SQLiteLedger(ledger_path)
    try:
        if job.dp.private:
            _reserve(ledger, job, banks, tensors)
        progress.stage(f"{title}: {len(banks)} banks × {job.train.rounds} rounds on Flower's Simulation Engine")
        progress.start_rounds(job.train.rounds)
        client_app = build_client_app([dropout_mod]) if dropout > 0 else default_client_app
        try:
            run_flower_simulation(server_app(host), client_app, len(banks),
                                  {**job.to_run_config(), DROPOUT_KEY: dropout}, work / "app", fedsilo_version())
        finally:
            progress.finish_rounds()
        outcome = _check_outcome(host.outcome)
        spent = _spent_per_bank(outcome)
        if job.dp.private:
            _commit(ledger, job, banks, spent)
        status = {b.name: asdict(ledger.status(b.name)) for b in banks} if job.dp.private else {}
    finally:
        ledger.close()
    return FederationRun(job, outcome, spent, status)


def _check_outcome(outcome: HostedRun | None) -> HostedRun:
    """Refuse to report a run in which no bank's update was ever aggregated."""
    if outcome is None:
        raise FedsiloError("the job host did not finish: run again with FEDSILO_VERBOSE=1 to see Flower's log")
    if not any(outcome.strategy.train.values()):
        first = next((e for errors in outcome.strategy.errors.values() for e in errors), "no reply")
        raise FedsiloError(f"no bank returned a usable update in any round; first failure: {first}")
    return outcome


def _reserve(ledger: SQLiteLedger, job: JobConfig, banks: list[Bank], tensors: list[BankTensors]) -> None:
    """Each bank's ledger reserves the whole job's mechanism before the job starts."""
    distributed = plan_distributed_dp(job, parameter_count(job)) if job.dp.mode == "distributed" else None
    for bank, data in zip(banks, tensors):
        ledger.set_budget(bank.name, job.dp.epsilon, job.dp.delta, accountant=job.dp.accountant)
        planned = [distributed.per_round] * job.train.rounds if distributed else [plan_dp(job, data.n_train).whole_job]
        ledger.reserve(bank.name, job.job_id, planned)


def _commit(ledger: SQLiteLedger, job: JobConfig, banks: list[Bank], spent: dict[int, list[Mechanism]]) -> None:
    for bank in banks:
        if spent.get(bank.index):
            ledger.commit(bank.name, job.job_id, spent[bank.index])
        else:
            ledger.release(bank.name, job.job_id)


def _spent_per_bank(outcome: HostedRun) -> dict[int, list[Mechanism]]:
    """The mechanisms each bank reports having run, round by round."""
    spent: dict[int, list[Mechanism]] = {}
    for server_round in sorted(outcome.strategy.train):
        for metrics in outcome.strategy.train[server_round]:
            if metrics.get("dp-steps", 0) > 0:
                spent.setdefault(int(metrics["bank"]), []).append(Mechanism(
                    float(metrics["dp-noise"]), float(metrics["dp-sample-rate"]), int(metrics["dp-steps"])))
    return spent
