"""`fedsilo simulate`: N banks train one model on Flower's Simulation Engine.

The flow (DESIGN.md, flow 1):
1. build and check every bank's table, before anything is written;
2. fit the feature encoder from per-bank summaries (aggregates only, no pooled rows);
3. each bank's ledger reserves the job's planned (ε, δ) before the job starts;
4. Flower's Simulation Engine runs the peers' ClientApp, one virtual SuperNode per
   bank, and the job host's strategy;
5. each bank's ledger commits what its accountant says it actually spent;
6. the yardsticks (centralized, local-only) are trained in the same run if asked;
7. the run folder gets the model (safetensors), its encoder, the model card, per-round
   metrics, the final scores with bootstrap intervals (`simulations/report/scores.py`)
   and plots, and appears only when all of it is written; with it, for the
   privacy self-audit only, each bank's member/non-member split as row positions
   (`membership_split.json`, see `simulations/privacy_audit.py`).

The banks' tables sit in a temporary directory while the engine runs (each virtual
bank reads only its own file) and are deleted afterwards; they are never put in the
run folder.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from fedsilo.peers.data.bank import BankTensors, encode_bank
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.evaluation import evaluate, predict_proba
from fedsilo.peers.job import JobConfig, dp_plan_is_cached, plan_dp
from fedsilo.peers.models import build_model, set_weights
from fedsilo.privacy.accounting import epsilon_spent
from fedsilo.privacy.accounting.planning import grid_sample_rate
from fedsilo.simulations import baselines
from fedsilo.simulations.banks import build_population
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.data.synthetic import SIMULATE_RATE_RANGE, simulate_total_customers
from fedsilo.simulations.engine import EngineSettings
from fedsilo.simulations.federation import FederationRun, run_federation
from fedsilo.simulations.population import bank_name, yardstick_sample
from fedsilo.simulations.privacy_audit import SPLIT_FILE, write_membership_split
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.report.card import build_card, sha256_file, write_card
from fedsilo.simulations.report.plots import plot_calibration, plot_comparison, plot_rounds
from fedsilo.simulations.report.privacy import privacy_section
from fedsilo.simulations.report.scores import final_scores
from fedsilo.simulations.run_folder import RunFolder
from fedsilo.strategies.guard import ReplyGuard
from fedsilo.strategies.secagg import SecureAggregation
from fedsilo.strategies.wrapper import find_wrapper


@dataclass(frozen=True)
class RunSummary:
    """The figures `--json` prints; NaN-free where defined, None where not measured."""

    run_dir: str
    final_auc: float
    centralized_auc: float | None
    local_auc_mean: float | None
    epsilon_max: float
    delta: float
    banks: int
    rounds: int
    dp: str
    secure_aggregation: str
    setup: str = "horizontal"
    institutions: dict[str, dict[str, float | None]] | None = None
    shared_customers: dict[str, int] | None = None  # transfer with overlap: per pair of institutions
    scores: dict[str, Any] | None = None  # horizontal: final_scores on the pooled held-out rows, no calibration
    vertical: dict[str, Any] | None = None  # vertical: AUCs, each party's ε, measured leakage

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def simulate(config: SimulationConfig, progress: Progress) -> RunSummary:
    """Run one simulation end to end; raises `FedsiloError` on bad input, before writing."""
    label = config.label_column
    progress.stage(f"Preparing {config.banks} banks")
    with tempfile.TemporaryDirectory(prefix="fedsilo-banks-") as work_dir:
        work = Path(work_dir)
        population = build_population(config, work / "source")
        load_report = getattr(population, "load_report", {})
        for warning in load_report.get("warnings", []):
            progress.warn(warning)
        sizes = population.sizes()
        sample = yardstick_sample(population.n_banks, config.yardstick_banks, config.seed)
        frames = {i: population.frame(i) for i in sample}
        encoder = TabularEncoder.fit([BankSummary.from_frame(frames[i], label) for i in sample], label)
        tensors = {i: encode_bank(frames[i], encoder, config.test_fraction, config.seed) for i in sample}
        del frames
        job_template = config.job()
        if job_template.dp.mode == "local":
            _warm_dp_plans(job_template, sizes, config.test_fraction, progress)  # in parallel, on a cold cache
            for data in tensors.values():
                plan_dp(job_template, data.n_train)  # fails early on an unusable bank
        everyone = baselines.pooled(list(tensors.values()))
        with RunFolder(config.out) as folder:
            (folder.path / "encoder.json").write_text(encoder.to_json())
            # Public bounds from the banks' sizes only: a bank's training rows are below its rows.
            job = config.job(
                job_id=folder.name,
                max_weight=float(sizes.max()),
                public_rows=int(round((1 - config.test_fraction) * int(sizes.sum()))),
            )
            engine = EngineSettings(ray_address=config.ray_address, cpus_per_bank=config.cpus_per_bank)
            run = run_federation(
                job,
                population,
                [encoder],
                work / "federation",
                folder.path / "ledger.sqlite",
                progress,
                dropout=config.dropout,
                dropout_concentration=config.dropout_concentration,
                evaluate_fn=_pooled_evaluator(job, everyone, encoder.n_features),
                engine=engine,
            )
            yardsticks = _yardsticks(config, run.job, tensors, everyone, progress)
            progress.stage("Writing the run folder")
            summary = _write_outputs(folder, config, run, encoder, sample, yardsticks, everyone, load_report)
    return RunSummary(**{**asdict(summary), "run_dir": str(folder.final)})


def _warm_dp_plans(job: JobConfig, sizes: np.ndarray, test_fraction: float, progress: Progress) -> None:
    """Calibrate, before the engine starts, the noise of every sampling rate a bank may use.

    A bank's first round otherwise calibrates inside the secure-aggregation stage that
    first reaches it (seconds per rate, longer on a loaded machine), which can exceed
    the stage's timeout. Training rows are within one of size − round(test_fraction ·
    size), so the rates of n − 1, n and n + 1 cover every bank; results go to the
    shared disk cache (`fedsilo.privacy.accounting.cache`). The ε of one round at each rate (every
    sampled bank's first projection) and the per-step RDP of each (σ, q) (the card's RDP
    figure) are stored there too (`fedsilo.privacy.accounting.compose`), so no Ray worker or
    final report computes them again (a fraction of a second each, per process).
    """
    estimates = {int(n) - round(test_fraction * int(n)) for n in np.unique(sizes)}
    rows = {n + d for n in estimates for d in (-1, 0, 1) if n + d >= 1}
    by_rate = {grid_sample_rate(job.train.batch_size, n): n for n in sorted(rows)}
    missing = [n for n in by_rate.values() if not dp_plan_is_cached(job, n)]
    progress.stage(
        f"Calibrating DP noise for {len(by_rate)} sampling rates ({len(by_rate) - len(missing)} cached on disk)"
    )
    workers = min(len(missing), os.cpu_count() or 1)
    if workers > 1:  # each calibration is seconds of pure CPU: one process per core
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_warm_dp_plan, [job] * len(missing), missing))
    for n in by_rate.values():
        _warm_dp_plan(job, n)  # cache hits now; also fills this process's in-memory caches


def _warm_dp_plan(job: JobConfig, n_train: int) -> None:
    """Calibrate the noise for `n_train` rows into the disk cache, with the ε of one round
    (every sampled bank's first projection) and the per-step RDP (the card's RDP figure)."""
    plan = plan_dp(job, n_train)
    if job.dp.mode == "local":
        epsilon_spent([plan.per_round], job.dp.delta, job.dp.accountant)
        epsilon_spent([plan.per_round], job.dp.delta, "rdp")


def _pooled_evaluator(job: JobConfig, everyone: BankTensors, n_features: int):
    model = build_model(job.model, n_features)

    def evaluate_fn(server_round: int, weights: dict[str, np.ndarray]) -> dict[str, float]:
        set_weights(model, weights)
        return evaluate(model, everyone.x_test, everyone.y_test)

    return evaluate_fn


LOCAL_ONLY_BANKS = 20


def _yardsticks(
    config: SimulationConfig, job: JobConfig, tensors: dict[int, BankTensors], everyone: BankTensors, progress: Progress
) -> dict[str, Any]:
    """Centralized on the yardstick banks' pooled rows; local-only for the first 20 of them."""
    result: dict[str, Any] = {}
    if "centralized" in config.yardsticks:
        progress.stage(
            "Yardstick: centralized non-private model on the pooled rows"
            + (f" of {len(tensors)} banks" if len(tensors) < config.banks else "")
        )
        result["centralized"] = baselines.centralized(job, everyone, everyone.x_test, everyone.y_test)
    if "local" in config.yardsticks:
        alone_banks = sorted(tensors)[:LOCAL_ONLY_BANKS]
        progress.stage(f"Yardstick: {len(alone_banks)} local-only models, each bank alone")
        # Alone, a bank has no one to share noise with: its yardstick is local DP-SGD at the same ε.
        alone = replace(job, dp=replace(job.dp, mode="local")) if job.dp.mode == "distributed" else job
        result["local"] = [
            baselines.local_only(alone, i, tensors[i], everyone.x_test, everyone.y_test) for i in alone_banks
        ]
    return result


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _write_outputs(
    folder: RunFolder,
    config: SimulationConfig,
    run: FederationRun,
    encoder: TabularEncoder,
    yardstick_banks: list[int],
    yardsticks: dict[str, Any],
    everyone: BankTensors,
    load_report: dict[str, Any],
) -> RunSummary:
    """The run folder's files; the model card lists every bank that was sampled at least once."""
    path = folder.path
    job, outcome, spent, ledger_status = run.job, run.outcome, run.spent, run.ledger_status
    guard = find_wrapper(outcome.strategy, ReplyGuard)
    secure = find_wrapper(outcome.strategy, SecureAggregation)
    model_file = path / "model.safetensors"
    save_file(
        {k: np.ascontiguousarray(v) for k, v in outcome.weights.items()},
        str(model_file),
        metadata={"fedsilo.run": folder.name, "fedsilo.model": job.model.kind},
    )

    rounds = sorted(r for r in outcome.central_metrics if r > 0)
    epsilon_by_round: dict[int, dict[int, float]] = {}
    for r in sorted(outcome.strategy.train):
        for m in outcome.strategy.train[r]:
            epsilon_by_round.setdefault(r, {})[int(m["bank"])] = float(m["epsilon"])
    running: dict[int, float] = {}
    eps_max_curve = []
    for r in rounds:
        running.update(epsilon_by_round.get(r, {}))
        eps_max_curve.append(max(running.values(), default=0.0))
    per_round = [
        {
            "round": r,
            "pooled_test": outcome.central_metrics[r],
            "epsilon_max": eps_max_curve[i],
            "train": outcome.strategy.train.get(r, []),
            "evaluate": outcome.strategy.evaluate.get(r, []),
            "errors": outcome.strategy.errors.get(r, []),
            "secure_aggregation": None
            if secure is None
            else {
                "dropped": {str(k): v for k, v in secure.dropouts.get(r, {}).items()},
                "refused": {str(k): v for k, v in secure.refusals.get(r, {}).items()},
                "aborted": secure.aborted_rounds.get(r),
            },
        }
        for i, r in enumerate(rounds)
    ]
    central = yardsticks.get("centralized")
    local = yardsticks.get("local")
    final_model = build_model(job.model, encoder.n_features)
    set_weights(final_model, outcome.weights)
    scores = final_scores(
        everyone.y_test.numpy(),
        predict_proba(final_model, everyone.x_test),
        central["probabilities"] if central else None,
        {bank_name(lo.bank): lo.pooled_probabilities for lo in local} if local else None,
        seed=config.seed,
    )
    (path / "metrics.json").write_text(
        json.dumps(
            {"rounds": per_round, "initial": outcome.central_metrics.get(0), "final_pooled_test": scores}, indent=2
        )
        + "\n"
    )

    final_auc = float(outcome.central_metrics[rounds[-1]]["auc"]) if rounds else float("nan")
    final_eval = {int(m["bank"]): m for m in outcome.strategy.evaluate.get(job.train.rounds, [])}
    local_by_bank = {lo.bank: lo for lo in local} if local else {}
    participants, trained = [], []
    for index in range(job.peers):
        facts = run.facts(index)
        if facts is None:
            continue  # never sampled: never built, spent nothing
        trained.append((index, facts))
        name = facts["name"]
        entry = {
            "name": name,
            "rows_train": facts["rows_train"],
            "rows_test": facts["rows_test"],
            "default_rate": facts["default_rate"],
            "data_sha256": facts["data_sha256"],
            "rounds_trained": len(spent.get(index, [])),
            "epsilon_spent": _finite(ledger_status[name]["spent_epsilon"]) if name in ledger_status else 0.0,
            "epsilon_spent_rdp": (
                _finite(epsilon_spent(spent[index], job.dp.delta, "rdp"))
                if job.dp.private and spent.get(index)
                else None
            ),
            "delta": job.dp.delta if job.dp.private else 0.0,
            "noise_multiplier": spent[index][0].noise_multiplier if spent.get(index) else None,
            "federated_auc_own_test": _finite(final_eval.get(index, {}).get("auc", float("nan"))),
        }
        if index in local_by_bank:
            entry["local_only_auc_own_test"] = _finite(local_by_bank[index].auc_own)
            entry["local_only_auc_pooled_test"] = _finite(local_by_bank[index].auc_pooled)
        participants.append(entry)
    epsilon_max = max((p["epsilon_spent"] or 0.0 for p in participants), default=0.0)
    epsilon_max_rdp = max((p["epsilon_spent_rdp"] or 0.0 for p in participants), default=0.0)

    local_mean = float(np.mean([lo.auc_pooled for lo in local])) if local else None
    plot_rounds(
        path / "rounds.png",
        rounds,
        [outcome.central_metrics[r]["auc"] for r in rounds],
        eps_max_curve,
        job.dp.epsilon if job.dp.private else None,
    )
    auc_interval = {
        name: (v["roc_auc"]["low"], v["roc_auc"]["high"])
        for name, v in [
            ("federated", scores["federated"]),
            ("centralized", scores.get("centralized")),
            *scores.get("local_only", {}).items(),
        ]
        if v is not None
    }
    plot_comparison(
        path / "comparison.png",
        final_auc,
        central["auc"] if central else None,
        {bank_name(lo.bank): lo.auc_pooled for lo in local} if local else None,
        auc_interval,
    )
    plot_calibration(path / "calibration.png", scores["calibration"])

    data_info: dict[str, Any] = (
        {
            "source": "synthetic",
            "generator": "fedsilo.simulations.data.synthetic",
            "seed": config.seed,
            "customers": config.customers or simulate_total_customers(config.banks),
            "default_rate_range": list(SIMULATE_RATE_RANGE),
        }
        if config.data is None
        else {
            "source": str(config.data),
            "label": job.label,
            "id_column": config.id_column,
            "partition": config.partition or "iid",
            "label_mapping": load_report["label_mapping"],
            "columns_left_out": load_report["dropped_columns"],
        }
    )
    data_info["features"] = encoder.feature_names
    write_membership_split(path / SPLIT_FILE, trained, config.test_fraction, config.seed)
    data_info["population"] = {
        "banks": job.peers,
        "sampled_per_round": job.per_round,
        "banks_sampled_at_least_once": len(participants),
        "yardstick_banks": len(yardstick_banks),
        "note": "the encoder is fitted from, and the pooled test rows and centralized yardstick use, the "
        "yardstick banks (all banks when there are at most yardstick-banks of them)",
    }
    card = build_card(
        run_name=folder.name,
        job={
            "strategy": job.strategy,
            "model": {"kind": job.model.kind, "hidden": list(job.model.hidden)},
            "train": asdict(job.train),
            "config": config.to_dict(),
        },
        data=data_info,
        participants=participants,
        privacy=privacy_section(job, outcome, ledger_status, epsilon_max, epsilon_max_rdp),
        metrics={
            "final_auc_pooled_test": _finite(final_auc),
            "final_loss_pooled_test": _finite(outcome.central_metrics[rounds[-1]]["loss"]) if rounds else None,
            "centralized_auc": _finite(central["auc"]) if central else None,
            "local_only_auc_mean": _finite(local_mean) if local_mean is not None else None,
            "refused_updates": [asdict(r) for r in guard.refusals] if guard else [],
            "pooled_test": {k: v for k, v in scores.items() if k != "calibration"},
        },
        model_file=model_file,
        encoder_file=path / "encoder.json",
        rounds=job.train.rounds,
    )
    card["artifacts"]["membership_split"] = {
        "file": SPLIT_FILE,
        "format": "json",
        "sha256": sha256_file(path / SPLIT_FILE),
        "purpose": "privacy self-audit only: row positions, no row values",
    }
    write_card(path / "model_card.json", card)
    return RunSummary(
        run_dir=str(folder.final),
        final_auc=round(final_auc, 4),
        centralized_auc=round(central["auc"], 4) if central else None,
        local_auc_mean=round(local_mean, 4) if local_mean is not None else None,
        epsilon_max=round(epsilon_max, 4),
        delta=job.dp.delta if job.dp.private else 0.0,
        banks=job.peers,
        rounds=job.train.rounds,
        dp=job.dp.mode,
        secure_aggregation=job.secagg.mode,
        scores={k: v for k, v in scores.items() if k != "calibration"},
    )
