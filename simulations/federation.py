"""One federated job over simulated banks on Flower's Simulation Engine.

`run_federation` is the part every setup shares: it writes the encoder (one for all
banks in the horizontal setup, one per bank in the transfer setup) and the pickled
population where the banks' ClientApps read them, runs the job host and the peers on
the engine, and commits what each bank's accountant says it spent. Each bank writes
its own table and reserves the job's planned (ε, δ) in its ledger the first time it is
sampled (`fedsilo.simulations.lazy_banks`); a bank never sampled is never built and never
appears in the ledger. A bank's spending is accounted per participation: a bank
sampled in fewer rounds commits fewer mechanisms (no amplification by the host's
sampling is claimed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from fedsilo.errors import FedsiloError
from fedsilo.peers.client.app import build_client_app
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.job import JobConfig
from fedsilo.peers.server.host import EvaluateFn, HostedRun, JobHost, server_app
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.ledger import SQLiteLedger
from fedsilo.simulations.engine import EngineSettings, run_flower_simulation
from fedsilo.simulations.faults import DROPOUT_CONCENTRATION_KEY, DROPOUT_KEY, dropout_mod
from fedsilo.simulations.lazy_banks import LEDGER_KEY, POPULATION_KEY, facts_path, ledger_mod, materialize_mod
from fedsilo.simulations.population import Population, bank_name
from fedsilo.simulations.progress import Progress


@dataclass
class FederationRun:
    """A finished job: the job as run, the host's outcome, what each bank ran (by index),
    each participating bank's ledger status (by name), and where the banks' tables and
    facts files are (until the harness's work directory is deleted)."""

    job: JobConfig
    outcome: HostedRun
    spent: dict[int, list[Mechanism]]
    ledger_status: dict[str, Any]
    banks_dir: Path

    def facts(self, index: int) -> dict[str, Any] | None:
        """Bank `index`'s facts file (rows, default rate, fingerprint) if it was ever sampled."""
        path = facts_path(self.banks_dir, index)
        return json.loads(path.read_text()) if path.exists() else None


def fedsilo_version() -> str:
    try:
        return metadata.version("fedsilo")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def run_federation(
    job: JobConfig,
    population: Population,
    encoders: list[TabularEncoder],
    work: Path,
    ledger_path: Path,
    progress: Progress,
    dropout: float = 0.0,
    dropout_concentration: float = 0.0,
    evaluate_fn: EvaluateFn | None = None,
    title: str = "Training",
    engine: EngineSettings = EngineSettings(),
    private_dir: Path | None = None,
) -> FederationRun:
    """Run `job` (its data paths are filled in here) over `population`; see the module docstring.

    In transfer setups each bank keeps its private weights in `private_dir` (default
    `work/private`), one safetensors file per bank that trained, rewritten every round.
    """
    banks_dir = work / "banks"
    banks_dir.mkdir(parents=True, exist_ok=True)
    if len(encoders) == 1:
        encoder_path = work / "encoder.json"
        encoder_path.write_text(encoders[0].to_json())
        encoder_template = str(encoder_path)
    else:
        for index, encoder in enumerate(encoders):
            (banks_dir / f"{bank_name(index)}.encoder.json").write_text(encoder.to_json())
        encoder_template = str(banks_dir / "{bank}.encoder.json")
    private = Path(private_dir) if private_dir is not None else work / "private"
    if job.shared:
        private.mkdir(parents=True, exist_ok=True)
    job = replace(job, encoder_path=encoder_template, banks_dir=str(banks_dir), private_dir=str(private))
    population_path = population.save(work / "population.pickle")

    host = JobHost(job, evaluate_fn=evaluate_fn, on_round=progress.round_callback(job.train.rounds))
    host.initial_weights()  # a bad `model.base` fails here, before any ledger entry or engine start
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    SQLiteLedger(ledger_path).close()  # the file exists before any bank reserves in it
    per_round = f", {job.sample} sampled per round" if job.sample < job.peers else ""
    progress.stage(
        f"{title}: {job.peers} banks × {job.train.rounds} rounds{per_round} on Flower's Simulation Engine"
        + (f" (Ray cluster {engine.ray_address})" if engine.ray_address else "")
    )
    progress.start_rounds(job.train.rounds)
    client_app = build_client_app([dropout_mod, materialize_mod, ledger_mod])
    run_config = {
        **job.to_run_config(),
        DROPOUT_KEY: dropout,
        DROPOUT_CONCENTRATION_KEY: dropout_concentration,
        POPULATION_KEY: str(population_path),
        LEDGER_KEY: str(ledger_path) if job.dp.private else "",
    }
    try:
        run_flower_simulation(
            server_app(host), client_app, job.peers, run_config, work / "app", fedsilo_version(), engine
        )
    finally:
        progress.finish_rounds()
    outcome = _check_outcome(host.outcome)
    spent = _spent_per_bank(outcome)
    status: dict[str, Any] = {}
    if job.dp.private:
        ledger = SQLiteLedger(ledger_path)
        try:
            status = _commit(ledger, job, spent)
        finally:
            ledger.close()
    return FederationRun(job, outcome, spent, status, banks_dir)


def _check_outcome(outcome: HostedRun | None) -> HostedRun:
    """Refuse to report a run in which no bank's update was ever aggregated."""
    if outcome is None:
        raise FedsiloError("the job host did not finish: run again with FEDSILO_VERBOSE=1 to see Flower's log")
    if not any(outcome.strategy.train.values()):
        first = next((e for errors in outcome.strategy.errors.values() for e in errors), "no reply")
        raise FedsiloError(f"no bank returned a usable update in any round; first failure: {first}")
    return outcome


def _commit(ledger: SQLiteLedger, job: JobConfig, spent: dict[int, list[Mechanism]]) -> dict[str, Any]:
    """Every bank that reserved commits what it ran (per participation) or releases; their status."""
    status = {}
    for name in ledger.sources():
        index = int(name.rsplit("-", 1)[1])
        if spent.get(index):
            ledger.commit(name, job.job_id, spent[index])
        else:
            ledger.release(name, job.job_id)
        status[name] = asdict(ledger.status(name))
    return status


def _spent_per_bank(outcome: HostedRun) -> dict[int, list[Mechanism]]:
    """The mechanisms each bank reports having run, round by round."""
    spent: dict[int, list[Mechanism]] = {}
    for server_round in sorted(outcome.strategy.train):
        for metrics in outcome.strategy.train[server_round]:
            if metrics.get("dp-steps", 0) > 0:
                spent.setdefault(int(metrics["bank"]), []).append(
                    Mechanism(float(metrics["dp-noise"]), float(metrics["dp-sample-rate"]), int(metrics["dp-steps"]))
                )
    return spent
