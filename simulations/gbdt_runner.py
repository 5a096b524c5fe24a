"""`fedsilo simulate --model gbdt`: N banks boost one histogram GBDT under SecAgg+ and DP.

The flow mirrors `fedsilo.simulations.runner` (the neural models):
1. build every bank's table and fit the encoder from per-bank summaries (no pooled row);
2. the public bin layout from the encoder (`fedsilo.peers.gbdt.bins`);
3. each bank's ledger reserves the job's planned releases (`fedsilo.privacy.gbdt`);
4. the host boosts ``trees`` trees level by level (`fedsilo.peers.gbdt.federation`):
   every level's histograms and every tree's leaf totals are one SecAgg+ round over the
   banks (the real protocol of `fedsilo.privacy.secagg`, each bank with its own
   consortium identity and, in distributed DP, its own noise share). By default
   (``--engine in-process``) the banks are objects of this process that the host calls (a
   run costs no Ray start); ``--engine flower`` runs the peers' own ServerApp/ClientApp
   pair on Flower's Simulation Engine instead (`fedsilo.simulations.gbdt_engine`): the
   same trees without DP, at many times the cost (docs/gbdt.md);
5. each bank's ledger commits the releases that contained its input (on the engine:
   the releases the bank itself recorded);
6. yardsticks: a centralized non-private histogram GBDT (scikit-learn's
   HistGradientBoostingClassifier) on the pooled training rows, and each bank alone
   with the same DP (its own Gaussian noise at the same multiplier);
7. the run folder: ``model.json`` (`fedsilo.peers.gbdt.model_file`), ``encoder.json``,
   ``model_card.json``, ``metrics.json``, ``ledger.sqlite``; `fedsilo score` reads it.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsilo.errors import ConfigError
from fedsilo.peers.data.bank import encode_bank
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.evaluation import roc_auc
from fedsilo.peers.gbdt import GBDTBank, layout_from_encoder
from fedsilo.peers.gbdt.federation import BoostResult, BoostSettings, boost, local_sigmas, secure_configs
from fedsilo.peers.gbdt.job import GBDTJob
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.privacy.accounting import epsilon_spent
from fedsilo.privacy.accounting.compose import accounting_note
from fedsilo.privacy.gbdt import leaf_sensitivity, level_sensitivity, plan_releases
from fedsilo.privacy.ledger import SQLiteLedger
from fedsilo.privacy.secagg import Ed25519Directory, Ed25519Identity
from fedsilo.simulations.banks import build_population
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.population import bank_name
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.report.card import build_card, write_card
from fedsilo.simulations.report.scores import final_scores
from fedsilo.simulations.run_folder import RunFolder
from fedsilo.simulations.runner import LOCAL_ONLY_BANKS, RunSummary
from fedsilo.strategies.gbdt import TreeParams

MODEL_FILE = "model.json"


def settings_of(config: SimulationConfig, job_id: str) -> BoostSettings:
    return BoostSettings(
        trees=config.trees,
        params=TreeParams(depth=config.depth),
        learning_rate=config.lr,
        dp_mode=config.dp_mode,
        secure=config.secure_aggregation == "on",
        dropout_fraction=config.secagg_dropout_fraction,
        collusion_fraction=config.secagg_collusion_fraction,
        session_id=job_id.encode(),
        features_per_tree=config.features_per_tree,
        random_splits=config.splits == "random",
    )


def simulate_gbdt(config: SimulationConfig, progress: Progress) -> RunSummary:
    """One boosting run end to end; raises `FedsiloError` on bad input, before writing."""
    if config.dp_mode == "distributed" and config.secure_aggregation != "on":
        raise ConfigError("--dp-mode distributed needs secure aggregation on")
    if config.runs_on == "flower" and config.secure_aggregation != "on":
        raise ConfigError(
            "--engine flower runs the peers' boosting app pair, which releases only through secure aggregation: "
            "use --secure-aggregation on, or --engine in-process"
        )
    with tempfile.TemporaryDirectory(prefix="fedsilo-banks-") as work_dir:
        return _simulate(config, progress, Path(work_dir))


def _simulate(config: SimulationConfig, progress: Progress, work: Path) -> RunSummary:
    label = config.label_column
    on_engine = config.runs_on == "flower"
    progress.stage(f"Preparing {config.banks} banks")
    population = build_population(config, work / "source")
    frames = {i: population.frame(i) for i in range(population.n_banks)}
    encoder = TabularEncoder.fit([BankSummary.from_frame(f, label) for f in frames.values()], label)
    tensors = {i: encode_bank(frames[i], encoder, config.test_fraction, config.seed) for i in frames}
    if not on_engine:
        frames = {}
    layout = layout_from_encoder(encoder, config.bins)
    private = config.dp_mode != "off"
    plan = (
        plan_releases(
            config.epsilon, config.delta, config.trees, config.depth, config.accountant, config.splits == "random"
        )
        if private
        else None
    )
    row_bound = max(t.n_train for t in tensors.values())  # public: from the banks' sizes, as the runner's bounds
    names = {i: bank_name(i) for i in tensors}
    x_test = np.concatenate([t.x_test.numpy() for t in tensors.values()]).astype(np.float64)
    y_test = np.concatenate([t.y_test.numpy() for t in tensors.values()])
    with RunFolder(config.out) as folder:
        settings = settings_of(config, folder.name)
        ledger = SQLiteLedger(folder.path / "ledger.sqlite")
        try:
            if plan is not None:
                for name in names.values():
                    ledger.set_budget(name, config.epsilon, config.delta, accountant=config.accountant)
                    ledger.reserve(name, folder.name, [plan.whole_job])
            curve: list[dict[str, float]] = []

            def on_tree(t: int, model: GBDTModel) -> None:
                curve.append({"tree": t + 1, "auc": _auc(y_test, model.predict_margin(x_test))})

            where = "on Flower's Simulation Engine" if on_engine else "in this process"
            progress.stage(
                f"Boosting {config.trees} trees of depth {config.depth} over {len(names)} banks {where}"
                + (f" (Ray cluster {config.ray_address})" if on_engine and config.ray_address else "")
            )
            if on_engine:
                result = _boost_on_engine(config, folder.name, frames, encoder, row_bound, work, on_tree)
            else:
                result = _boost_in_process(config, settings, tensors, names, layout, plan, row_bound, on_tree)
            status = {}
            for name in names.values():
                if plan is not None:
                    ledger.commit(name, folder.name, result.spent[name])
                    status[name] = asdict(ledger.status(name))
        finally:
            ledger.close()
        yardsticks = _yardsticks(config, tensors, layout, settings, plan, row_bound, x_test, y_test, progress)
        progress.stage("Writing the run folder")
        result.model.save(folder.path / MODEL_FILE)
        (folder.path / "encoder.json").write_text(encoder.to_json())
        summary = _write(folder, config, result, status, yardsticks, curve, x_test, y_test, encoder, plan, settings)
    return replace(summary, run_dir=str(folder.final))


def _boost_in_process(config, settings, tensors, names, layout, plan, row_bound, on_tree) -> BoostResult:
    """The banks as objects of this process, each with its own consortium identity (module docstring, step 4)."""
    identities = {n: Ed25519Identity(n, Ed25519PrivateKey.generate()) for n in names.values()}
    directory = Ed25519Directory({n: s.public_key() for n, s in identities.items()})
    configs = secure_configs(settings, layout, len(tensors), row_bound, plan) if settings.secure else None
    local_sigma = local_sigmas(plan, settings, layout)
    banks = [
        _bank(names[i], i, tensors[i], layout, row_bound, configs, identities, directory, settings, local_sigma)
        for i in sorted(tensors)
    ]
    verifier = directory if settings.secure else None
    return boost(banks, layout, settings, plan, row_bound, verifier=verifier, configs=configs, on_tree=on_tree)


def _boost_on_engine(config, job_id, frames, encoder, row_bound, work, on_tree) -> BoostResult:
    """The peers' app pair on Flower's Simulation Engine (`fedsilo.simulations.gbdt_engine`).

    Each bank's ledger then commits what that bank itself recorded as spent (its own accountant)."""
    from fedsilo.simulations.engine import EngineSettings  # Flower and Ray: only when they run
    from fedsilo.simulations.gbdt_engine import boost_on_engine

    terms = GBDTJob(
        session=job_id,
        banks=len(frames),
        row_bound=row_bound,
        trees=config.trees,
        depth=config.depth,
        bins=config.bins,
        learning_rate=config.lr,
        features_per_tree=config.features_per_tree,
        splits=config.splits,
        dp_mode=config.dp_mode,
        epsilon=config.epsilon,
        delta=config.delta,
        accountant=config.accountant,
        dropout_fraction=config.secagg_dropout_fraction,
        collusion_fraction=config.secagg_collusion_fraction,
    )
    job = replace(config.job(), job_id=job_id)
    engine = EngineSettings(config.ray_address, config.cpus_per_bank)
    result, recorded = boost_on_engine(job, terms, frames, encoder, work / "engine", engine, on_tree)
    plan = terms.plan()
    per_release = [] if plan is None else [plan.per_release]
    result.spent = {name: per_release * count for name, count in sorted(recorded.items())}
    return result


def _bank(name, index, data, layout, row_bound, configs, identities, directory, settings, local_sigma) -> GBDTBank:
    x = data.x_train.numpy().astype(np.float64)
    return GBDTBank(
        name,
        1000 + index,
        layout.bin_rows(x),
        data.y_train.numpy(),
        layout,
        row_bound,
        secagg=configs,
        signer=identities[name] if configs else None,
        verifier=directory if configs else None,
        local_sigma=local_sigma if settings.dp_mode == "local" else (0.0, 0.0),
    )


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc(labels, scores))


def _yardsticks(config, tensors, layout, settings, plan, row_bound, x_test, y_test, progress) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "centralized" in config.yardsticks:
        progress.stage("Yardstick: centralized non-private histogram GBDT (scikit-learn) on the pooled rows")
        try:
            from sklearn.ensemble import HistGradientBoostingClassifier
        except ImportError:
            raise ConfigError(
                "the centralized gbdt yardstick needs scikit-learn: pip install 'fedsilo[gbdt]', "
                "or leave it out with --compare local"
            ) from None

        x = np.concatenate([t.x_train.numpy() for t in tensors.values()])
        y = np.concatenate([t.y_train.numpy() for t in tensors.values()])
        model = HistGradientBoostingClassifier(random_state=config.seed).fit(x, y)
        probabilities = model.predict_proba(x_test)[:, 1]
        out["centralized"] = {"auc": _auc(y_test, probabilities), "probabilities": probabilities}
    if "local" in config.yardsticks:
        alone = sorted(tensors)[:LOCAL_ONLY_BANKS]
        progress.stage(f"Yardstick: {len(alone)} banks alone, each with its own noise at the same ε")
        alone_settings = replace(settings, secure=False, dp_mode="local" if plan else "off")
        sigma = local_sigmas(plan, settings, layout)
        out["local"] = {}
        for i in alone:
            bank = _bank(bank_name(i), i, tensors[i], layout, row_bound, None, {}, None, alone_settings, sigma)
            model = boost([bank], layout, alone_settings, plan, tensors[i].n_train).model
            out["local"][bank_name(i)] = model.predict_proba(x_test)
    return out


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def _write(folder, config, result, status, yardsticks, curve, x_test, y_test, encoder, plan, settings) -> RunSummary:
    path = folder.path
    probabilities = result.model.predict_proba(x_test)
    central = yardsticks.get("centralized")
    local = yardsticks.get("local")
    scores = final_scores(
        y_test, probabilities, central["probabilities"] if central else None, local or None, seed=config.seed
    )
    final_auc = _auc(y_test, probabilities)
    local_aucs = {name: _auc(y_test, p) for name, p in (local or {}).items()}
    (path / "metrics.json").write_text(
        json.dumps({"rounds": [], "trees": curve, "releases": result.releases, "final_pooled_test": scores}, indent=2)
        + "\n"
    )
    participants = []
    for name, spent in result.spent.items():
        participants.append(
            {
                "name": name,
                "releases": len(spent),
                "epsilon_spent": _finite(status[name]["spent_epsilon"]) if name in status else 0.0,
                "epsilon_spent_rdp": _finite(epsilon_spent(spent, config.delta, "rdp")) if spent else None,
                "delta": config.delta if plan else 0.0,
                "noise_multiplier": plan.noise_multiplier if plan else None,
                "local_only_auc_pooled_test": _finite(local_aucs.get(name)),
            }
        )
    epsilon_max = max((p["epsilon_spent"] or 0.0 for p in participants), default=0.0)
    privacy = {
        "mode": config.dp_mode,
        "mechanism": (
            "Gaussian mechanism on each tree's leaf totals; every split a public random draw, nothing released "
            "to choose it"
            if settings.random_splits
            else "Gaussian mechanism on each release of gradient/hessian histograms (per level) and leaf totals "
            "(per tree)"
        )
        + "; distributed: discrete Gaussian shares inside SecAgg+ (Kairouz et al. 2021)",
        "epsilon_target": config.epsilon if plan else None,
        "delta": config.delta if plan else None,
        "accountant": config.accountant if plan else None,
        "accounting": accounting_note(config.accountant, config.delta) if plan else None,
        "noise_multiplier": plan.noise_multiplier if plan else None,
        "releases_planned": plan.releases if plan else 0,
        "level_sensitivity": level_sensitivity(settings.groups_per_tree(result.model.layout)),
        "feature_groups_per_tree": settings.groups_per_tree(result.model.layout),
        "leaf_sensitivity": leaf_sensitivity(),
        "feature_groups": len(result.model.layout.groups),
        "epsilon_max_spent": epsilon_max,
        "secure_aggregation": settings.secure,
        "bins": "standard normal quantiles of the encoder's standardized columns: an edge reveals only the "
        "encoder's pooled mean and standard deviation",
    }
    card = build_card(
        run_name=folder.name,
        job={
            "model": {
                "kind": "gbdt",
                "trees": config.trees,
                "depth": config.depth,
                "bins": config.bins,
                "features_per_tree": config.features_per_tree,
                "splits": config.splits,
            },
            "train": {"learning_rate": config.lr, **asdict(result.params)},
            "engine": config.runs_on,  # where the banks ran: in-process objects or Flower's Simulation Engine
            "config": config.to_dict(),
        },
        data={
            "source": str(config.data) if config.data else "synthetic",
            "label": config.label_column,
            "id_column": config.id_column,
            "partition": config.partition or "iid",
            "features": encoder.feature_names,
        },
        participants=participants,
        privacy=privacy,
        metrics={
            "final_auc_pooled_test": _finite(final_auc),
            "centralized_auc": _finite(central["auc"]) if central else None,
            "local_only_auc_mean": _finite(float(np.mean(list(local_aucs.values())))) if local_aucs else None,
            "train_seconds": round(result.seconds, 2),
            "pooled_test": {k: v for k, v in scores.items() if k != "calibration"},
        },
        model_file=path / MODEL_FILE,
        encoder_file=path / "encoder.json",
        rounds=config.trees,
    )
    card["artifacts"]["model"]["format"] = "fedsilo.gbdt"
    write_card(path / "model_card.json", card)
    return RunSummary(
        run_dir=str(path),
        final_auc=round(final_auc, 4),
        centralized_auc=_finite(central["auc"]) if central else None,
        local_auc_mean=_finite(float(np.mean(list(local_aucs.values())))) if local_aucs else None,
        epsilon_max=round(epsilon_max, 4),
        delta=config.delta if plan else 0.0,
        banks=len(participants),
        rounds=config.trees,
        dp=config.dp_mode,
        secure_aggregation=config.secure_aggregation,
        scores={k: v for k, v in scores.items() if k != "calibration"},
    )
