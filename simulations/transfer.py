"""`fedsilo simulate --setup transfer`: institutions with different customers and schemas.

Each institution holds its own columns (a bank: limits, bills, payments; a card
issuer: repayment status; a small broker: demographics and a few payments).
Columns that two or more institutions hold form the consortium's shared vocabulary:
each institution maps its own version of them (renamed, rescaled) to the canonical
name and unit, the scenario's data dictionary; a column it lacks is missing there.
The model's first layer is split (`fedsilo.peers.models.SplitInputMLP`): the shared
vocabulary goes through `shared_input`, aggregated like the rest of the shared part,
and the institution's own columns through `input`, which never leaves it. Encoders:
the shared-vocabulary part is fitted from every institution's summaries (aggregates),
the own part from the institution's own rows only.

Only the parameters the job declares shared (`model.shared`, by name prefix:
`shared_input,hidden,head` by default; leave out `head` to keep each institution's
head private) are ever sent: the ClientApp never puts a private tensor in a message,
and the host's guard refuses a reply carrying a parameter outside the shared set.

Why the released shared part keeps its DP guarantee: every parameter, private or
shared, is trained by the same DP-SGD steps (per-example clipping over the whole
gradient, Gaussian noise on every coordinate), so the whole training trajectory is
(ε, δ)-DP and the shared part, a function of it, is post-processing.

Yardsticks, per institution, on its own held-out rows: the same model trained alone
(`local`), and a horizontal federation restricted to the columns every institution
has (`common`), which is what a consortium could do without transfer learning.

Shared customers (a scenario's `overlap` > 0): a customer who is a client of several
institutions is held out at all of them or at none, so that no institution is tested
on a customer the federated model trained on elsewhere. The institutions agree on it
by pairwise PSI alignment and pin frames (`fedsilo.peers.shared_holdout`); no raw id crosses
between them. The simulation's ids are stand-ins (`customer-ROW`, the customer's row
in the pooled table); the agreed side of every row goes into the institution's table
as `SPLIT_COLUMN`, which its ClientApp's split honours (`fedsilo.peers.data.bank.split_rows`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from fedsilo.errors import DataError
from fedsilo.peers.data.bank import BankTensors, encode_bank
from fedsilo.peers.data.encoding import SPLIT_COLUMN, BankSummary, TabularEncoder
from fedsilo.peers.data.vocabulary import own_encoder
from fedsilo.peers.job import plan_dp
from fedsilo.peers.shared_holdout import SharedHoldout, agree_holdout
from fedsilo.simulations import baselines
from fedsilo.simulations.banks import Bank, check_bank
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.data.loader import load_table
from fedsilo.simulations.data.schemas import (
    InstitutionSpec,
    TransferScenario,
    load_scenario_toml,
    synthetic_scenario,
    synthetic_transfer_table,
    uci_scenario,
)
from fedsilo.simulations.engine import EngineSettings
from fedsilo.simulations.federation import FederationRun, run_federation
from fedsilo.simulations.population import FramesPopulation
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.report.card import build_card, write_card
from fedsilo.simulations.report.plots import plot_institutions, plot_rounds
from fedsilo.simulations.report.privacy import privacy_section
from fedsilo.simulations.run_folder import RunFolder
from fedsilo.simulations.runner import RunSummary


def resolve_scenario(config: SimulationConfig) -> tuple[TransferScenario, pd.DataFrame]:
    """The institutions' declaration and the pooled source table they split."""
    if config.scenario in (None, "synthetic"):
        scenario = synthetic_scenario()
    elif config.scenario == "uci":
        scenario = uci_scenario()
    else:
        scenario = load_scenario_toml(config.scenario)
    if config.data is None:
        table = synthetic_transfer_table(seed=config.seed, customers=config.customers)
    else:
        table = load_table(
            config.data,
            label=scenario.label,
            id_column=config.id_column,
            positive=config.positive,
            keep_columns=config.keep_columns,
        )
    if config.overlap is not None:
        scenario = replace(scenario, overlap=config.overlap)
    scenario.validate(table.columns)
    return scenario, table


def align_shared_customers(
    scenario: TransferScenario,
    table: pd.DataFrame,
    tables: list[pd.DataFrame],
    config: SimulationConfig,
    progress: Progress,
) -> tuple[SharedHoldout, dict[str, int]]:
    """The agreed split of every institution's rows (`tables`, in `split` order) and the pairs' shared counts."""
    parts = scenario.split_rows(table, config.seed)
    ids = [[f"customer-{row}" for row in rows] for rows in parts]  # stand-ins for each institution's own ids
    progress.stage("Aligning shared customers by PSI, pairwise (no raw id exchanged)")
    agreement = agree_holdout(
        ids, [t[scenario.label].to_numpy() for t in tables], config.test_fraction, config.seed, kind="customer"
    )
    names = scenario.names
    return agreement, {f"{names[p.low]} & {names[p.high]}": p.shared for p in agreement.pairs}


def _institutions(frames: list[pd.DataFrame], names: list[str], label: str) -> list[Bank]:
    banks = [Bank(i, frame.reset_index(drop=True), title=name) for i, (frame, name) in enumerate(zip(frames, names))]
    for bank in banks:
        check_bank(bank, label)
    return banks


def _population(banks: list[Bank], seed: int) -> FramesPopulation:
    """The institutions' tables, handed to the engine (each writes its own when first sampled)."""
    return FramesPopulation(seed=seed, frames=[b.frame for b in banks], titles=[b.display_name for b in banks])


def shared_vocabulary(scenario: TransferScenario) -> list[str]:
    """Source columns held by two or more institutions, in first-seen order."""
    counts: dict[str, int] = {}
    for spec in scenario.institutions:
        for column in spec.columns:
            counts[column.source] = counts.get(column.source, 0) + 1
    return [source for source, count in counts.items() if count >= 2]


def institution_view(
    frame: pd.DataFrame, spec: InstitutionSpec, vocabulary: list[str], label: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(shared-vocabulary columns under canonical names and units, NaN where absent; own columns + label)."""
    by_source = {c.source: c for c in spec.columns}
    shared = pd.DataFrame(index=frame.index)
    for source in vocabulary:
        column = by_source.get(source)
        if column is None:
            shared[source] = np.nan
        elif column.scale == 1.0:
            shared[source] = frame[column.name]
        else:
            shared[source] = frame[column.name] / column.scale
    own_names = [c.name for c in spec.columns if c.source not in vocabulary]
    clash = sorted(set(own_names) & set(vocabulary))
    if clash:
        raise DataError(f"{spec.name}: own columns {clash} carry the name of a shared-vocabulary column: rename them")
    return shared, frame[own_names + [label]]


def _final_own_auc(run: FederationRun) -> dict[int, float]:
    """Each institution's AUC on its own held-out rows after the last round (its own evaluation)."""
    rounds = sorted(run.outcome.strategy.evaluate)
    if not rounds:
        return {}
    return {int(m["bank"]): float(m["auc"]) for m in run.outcome.strategy.evaluate[rounds[-1]]}


def simulate_transfer(config: SimulationConfig, progress: Progress) -> RunSummary:
    """Run a transfer-learning simulation end to end (checks every input before writing)."""
    scenario, table = resolve_scenario(config)
    label = scenario.label
    progress.stage(f"Preparing {len(scenario.institutions)} institutions: {', '.join(scenario.names)}")
    names = scenario.names
    vocabulary = shared_vocabulary(scenario)
    views = [
        institution_view(frame, spec, vocabulary, label)
        for frame, spec in zip(scenario.split(table, config.seed), scenario.institutions)
    ]
    tables = [pd.concat(v, axis=1) for v in views]
    shared_customers: dict[str, int] | None = None
    sides: list[np.ndarray] | None = None
    if scenario.overlap > 0:
        agreement, shared_customers = align_shared_customers(scenario, table, tables, config, progress)
        sides = agreement.sides
        tables = [t.assign(**{SPLIT_COLUMN: s}) for t, s in zip(tables, sides)]
    banks = _institutions(tables, names, label)
    shared_encoder = TabularEncoder.fit(
        [BankSummary.from_frame(pd.concat([s, b.frame[[label]]], axis=1), label) for (s, _), b in zip(views, banks)],
        label,
    )
    encoders = [TabularEncoder(label, shared_encoder.columns + own_encoder(own, label).columns) for _, own in views]
    tensors = [encode_bank(b.frame, e, config.test_fraction, config.seed) for b, e in zip(banks, encoders)]
    wants_common = "common" in config.yardsticks
    common_banks = []
    if wants_common:
        common = scenario.common_frames(table, config.seed)
        common_banks = _institutions(
            common if sides is None else [f.assign(**{SPLIT_COLUMN: s}) for f, s in zip(common, sides)], names, label
        )
    config = replace(config, banks=len(banks), label=label)
    job_template = config.job()
    if job_template.dp.mode == "local":
        for data in tensors:
            plan_dp(job_template, data.n_train)

    with tempfile.TemporaryDirectory(prefix="fedsilo-transfer-") as work_dir, RunFolder(config.out) as folder:
        work = Path(work_dir)
        job = config.job(
            job_id=folder.name,
            max_weight=float(max(t.n_train for t in tensors)),
            public_rows=sum(t.n_train for t in tensors),
            shared_features=shared_encoder.n_features,
        )
        run = run_federation(
            job,
            _population(banks, config.seed),
            encoders,
            work / "transfer",
            folder.path / "ledger.sqlite",
            progress,
            dropout=config.dropout,
            dropout_concentration=config.dropout_concentration,
            title="Transfer training",
            engine=EngineSettings(config.ray_address, config.cpus_per_bank),
            private_dir=folder.path / "private",
        )
        federated = _final_own_auc(run)
        local: dict[int, float] = {}
        if "local" in config.yardsticks:
            progress.stage(f"Yardstick: each of {len(banks)} institutions alone")
            alone = replace(
                run.job,
                shared=(),
                dp=replace(run.job.dp, mode="local"),
                model=replace(run.job.model, shared_features=0),
            )
            for i, data in enumerate(tensors):
                local[i] = baselines.local_only(alone, i, data, data.x_test, data.y_test).auc_own
        common: dict[int, float] = {}
        if wants_common:
            common = _horizontal_on_common(config, common_banks, work / "common", folder.name, progress)
        progress.stage("Writing the run folder")
        summary = _write_outputs(
            folder, config, scenario, run, banks, tensors, encoders, federated, local, common, shared_customers
        )
    return replace(summary, run_dir=str(folder.final), shared_customers=shared_customers)


def _horizontal_on_common(
    config: SimulationConfig, banks: list[Bank], work: Path, run_name: str, progress: Progress
) -> dict[int, float]:
    """A horizontal federation on the columns all institutions share (the yardstick)."""
    label = config.label_column
    encoder = TabularEncoder.fit([BankSummary.from_frame(b.frame, label) for b in banks], label)
    tensors = [encode_bank(b.frame, encoder, config.test_fraction, config.seed) for b in banks]
    horizontal = replace(config, setup="horizontal", shared=(), compare=(), overlap=None)
    job = horizontal.job(
        job_id=f"{run_name}-common",
        max_weight=float(max(t.n_train for t in tensors)),
        public_rows=sum(t.n_train for t in tensors),
    )
    work.mkdir(parents=True, exist_ok=True)
    run = run_federation(
        job,
        _population(banks, config.seed),
        [encoder],
        work,
        work / "ledger.sqlite",
        progress,
        dropout=config.dropout,
        dropout_concentration=config.dropout_concentration,
        title="Yardstick: horizontal on common columns",
        engine=EngineSettings(config.ray_address, config.cpus_per_bank),
    )
    return _final_own_auc(run)


def _write_outputs(
    folder: RunFolder,
    config: SimulationConfig,
    scenario: TransferScenario,
    run: FederationRun,
    banks: list[Bank],
    tensors: list[BankTensors],
    encoders: list[TabularEncoder],
    federated: dict[int, float],
    local: dict[int, float],
    common: dict[int, float],
    shared_customers: dict[str, int] | None,
) -> RunSummary:
    path, job = folder.path, run.job
    model_file = path / "model.safetensors"
    save_file(
        {k: np.ascontiguousarray(v) for k, v in run.outcome.weights.items()},
        str(model_file),
        metadata={"fedsilo.run": folder.name, "fedsilo.part": "shared", "fedsilo.shared": ",".join(job.shared)},
    )
    (path / "scenario.toml").write_text(scenario.to_toml())

    rounds = sorted(run.outcome.strategy.evaluate)
    mean_auc = [float(np.nanmean([m["auc"] for m in run.outcome.strategy.evaluate[r]])) for r in rounds]
    eps_curve, running = [], {}
    for r in rounds:
        running.update({int(m["bank"]): float(m["epsilon"]) for m in run.outcome.strategy.train.get(r, [])})
        eps_curve.append(max(running.values(), default=0.0))
    plot_rounds(
        path / "rounds.png",
        rounds,
        mean_auc,
        eps_curve,
        job.dp.epsilon if job.dp.private else None,
        auc_title="Federated transfer, mean over institutions (own rows)",
    )
    per_institution = {
        bank.display_name: {
            "federated": federated.get(bank.index),
            "local_only": local.get(bank.index),
            "horizontal_common": common.get(bank.index),
        }
        for bank in banks
    }
    plot_institutions(path / "comparison.png", per_institution)
    (path / "metrics.json").write_text(
        json.dumps(
            {
                "rounds": [
                    {
                        "round": r,
                        "train": run.outcome.strategy.train.get(r, []),
                        "evaluate": run.outcome.strategy.evaluate[r],
                        "errors": run.outcome.strategy.errors.get(r, []),
                    }
                    for r in rounds
                ]
            },
            indent=2,
        )
        + "\n"
    )

    participants = []
    for bank, data, encoder in zip(banks, tensors, encoders):
        status = run.ledger_status.get(bank.name, {})
        participants.append(
            {
                "name": bank.display_name,
                "peer": bank.name,
                "columns": scenario.institutions[bank.index].column_names,
                "encoded_features": encoder.n_features,
                "rows_train": data.n_train,
                "rows_test": data.n_test,
                "default_rate": round(float(bank.frame[job.label].mean()), 4),
                "data_sha256": bank.fingerprint(),
                "epsilon_spent": status.get("spent_epsilon", 0.0),
                "delta": job.dp.delta if job.dp.private else 0.0,
                **{f"auc_{k}": v for k, v in per_institution[bank.display_name].items()},
            }
        )
    epsilon_max = max((p["epsilon_spent"] or 0.0 for p in participants), default=0.0)
    card = build_card(
        run_name=folder.name,
        job={
            "setup": "transfer",
            "strategy": job.strategy,
            "shared_parameters": list(job.shared),
            "private_parameters": "each institution's encoder (first layer)"
            + ("" if "head" in job.shared else " and head"),
            "model": {"kind": job.model.kind, "hidden": list(job.model.hidden)},
            "train": asdict(job.train),
            "config": config.to_dict(),
        },
        data={
            "source": "synthetic" if config.data is None else str(config.data),
            "scenario": scenario.to_dict(),
            "common_columns": scenario.common_sources(),
            **(
                {
                    "shared_customers": {
                        "per_pair": shared_customers,
                        "aligned_by": "pairwise both-sides PSI "
                        "(peers.shared_holdout); each on the same train/test side everywhere",
                    }
                }
                if shared_customers is not None
                else {}
            ),
        },
        participants=participants,
        privacy={
            **privacy_section(job, run.outcome, run.ledger_status, epsilon_max),
            "shared_part": "private layers are trained by the same DP-SGD steps as the shared ones, so the "
            "released shared weights are post-processing of a DP trajectory",
        },
        metrics={"per_institution": per_institution},
        model_file=model_file,
        encoder_file=None,
        rounds=job.train.rounds,
    )
    write_card(path / "model_card.json", card)
    values = [v for v in federated.values() if v == v]
    local_values = [v for v in local.values() if v == v]
    return RunSummary(
        run_dir=str(folder.final),
        final_auc=round(float(np.mean(values)), 4) if values else float("nan"),
        centralized_auc=None,
        local_auc_mean=round(float(np.mean(local_values)), 4) if local_values else None,
        epsilon_max=round(epsilon_max, 4),
        delta=job.dp.delta if job.dp.private else 0.0,
        banks=len(banks),
        rounds=job.train.rounds,
        dp=job.dp.mode,
        secure_aggregation=job.secagg.mode,
        setup="transfer",
        institutions={
            name: {k: (round(v, 4) if v is not None else None) for k, v in aucs.items()}
            for name, aucs in per_institution.items()
        },
    )
