"""`fedsilo audit-privacy RUN_DIR`: measure what a finished run's model leaks.

Three measurements, all run in this process against the run's own model and data
(`fedsilo.privacy.audit` holds the attacks; this module only wires them to a run folder):

1. Membership inference against the final model, for every bank: members are a
   sample of the bank's training rows, non-members half of its held-out rows; the
   other half of the held-out rows (the bank's own non-member data) trains the
   reference models of the calibrated attack. Loss-threshold and LiRA-style offline
   attacks; AUC, TPR at 1 % and 0.1 % FPR, advantage against the (ε, δ) bound.
2. The one-run ε audit (Steinke, Nasr and Jagielski 2023) at one bank (the first):
   `canaries` random out-of-distribution rows with random labels, each added to the
   bank's training rows with probability ½; the bank's training is replayed once with
   the job's exact schedule and DP plan (`train_round`, the code its ClientApp runs:
   same rounds, epochs, batch, clipping, and a noise multiplier calibrated for the job's
   ε on the enlarged table), starting from the run's initial model (a fresh one if the
   run started from --base-model: the guarantee does not depend on the start). The canaries
   are not put into the released model: a replay at one bank is the mechanism whose ε
   the bank claims (its released updates), without the other banks' contributions.
   A lower bound above the claimed ε raises `PrivacyAuditFailed` after the card is written.
3. The mechanism check (`fedsilo.peers.mechanism_check`, local DP): one noisy step of the same
   bank replayed twice from the same inputs, and once more as the host would recompute
   it from the job's public values; the replays must differ by the planned noise scale
   √2·lr·σ·C/n (χ² interval) and the host's guess by as much. A canary audit of the
   model cannot see noise that the host could regenerate; this check can. A failure
   raises `PrivacyAuditFailed` after the card is written.
4. The aggregator's view: batch-size-1 gradients of a few member rows on the final
   model, attacked (closed form on the first layer, DLG-style matching) as plaintext
   single-peer updates (the control), as the masked uploads of one real SecAgg+ round,
   as that round's unmasked average, and (local DP) as the unmasked average of one
   DP-SGD step per peer with the run's noise multiplier.

What the run folder keeps for this (written by `fedsilo simulate`, `membership_split.json`):
per bank, its name, the SHA-256 fingerprint of its table, and the positions of its
training and held-out rows in that table. No row, feature or label is copied; the audit
rebuilds the banks from the run's data source (the synthetic generator's seed, or the
data file, which must still be readable and unchanged: the fingerprints are checked).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from fedsilo.errors import DataError, PrivacyAuditFailed
from fedsilo.peers.client.local_training import limit_threads, train_round
from fedsilo.peers.data.bank import BankTensors
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.job import JobConfig, plan_dp
from fedsilo.peers.mechanism_check import check_mechanism
from fedsilo.peers.models import build_model, get_weights, set_weights
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.audit import membership, one_run, reconstruction
from fedsilo.privacy.audit.roc import advantage_bound
from fedsilo.privacy.secagg import SecAggConfig
from fedsilo.simulations.banks import build_population
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.population import bank_name, fingerprint
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.report.card import sha256_file, write_card
from fedsilo.simulations.report.plots import plot_privacy_audit

SPLIT_FILE = "membership_split.json"
PLOT_FILE = "privacy_audit.png"
SPLIT_SCHEMA = "fedsilo.membership-split/1"
REQUIRED_FILES = ("model_card.json", "model.safetensors", "encoder.json", SPLIT_FILE)


@dataclass(frozen=True)
class AuditSettings:
    """How hard the audit tries; the defaults run in about a minute on a laptop."""

    canaries: int = 1000
    reference_models: int = 4
    confidence: float = 0.95
    dlg_steps: int = 100
    reconstruction_peers: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.canaries < 20:
            raise DataError(f"--canaries must be ≥ 20 (got {self.canaries})")
        if self.reference_models < 1:
            raise DataError(f"--reference-models must be ≥ 1 (got {self.reference_models})")
        if not 0.5 <= self.confidence < 1:
            raise DataError(f"--confidence must be in [0.5, 1) (got {self.confidence})")
        if self.reconstruction_peers < 2:
            raise DataError(f"the aggregator view needs ≥ 2 peers (got {self.reconstruction_peers})")


@dataclass(frozen=True)
class BankSplit:
    """One bank's encoded members (training rows) and non-members (held-out rows)."""

    name: str
    x_members: torch.Tensor
    y_members: torch.Tensor
    x_nonmembers: torch.Tensor
    y_nonmembers: torch.Tensor


# --------------------------------------------------------------------------- the split file


def write_membership_split(
    path: Path, banks: list[tuple[int, dict[str, Any]]], test_fraction: float, seed: int
) -> None:
    """Record, for the banks that trained, which rows trained the model (no row values).

    `banks` pairs each such bank's index with its facts file, in which the bank wrote
    the split it made when it was built (`fedsilo.simulations.lazy_banks.materialize`).
    """
    entries = [
        {
            "index": index,
            "name": facts["name"],
            "data_sha256": facts["data_sha256"],
            "rows": facts["rows"],
            "train_rows": facts["train_positions"],
            "test_rows": facts["test_positions"],
        }
        for index, facts in banks
    ]
    path.write_text(
        json.dumps(
            {
                "schema": SPLIT_SCHEMA,
                "purpose": "privacy self-audit only (fedsilo audit-privacy): which rows of each bank's table trained the "
                "model (members) and which were held out (non-members); positions only, no row values",
                "test_fraction": test_fraction,
                "seed": seed,
                "banks": entries,
            }
        )
        + "\n"
    )


# --------------------------------------------------------------------------- reading a run


@dataclass(frozen=True)
class RunUnderAudit:
    path: Path
    card: dict[str, Any]
    config: SimulationConfig
    job: JobConfig
    model: torch.nn.Module
    splits: list[BankSplit]


def load_run(run_dir: str | Path) -> RunUnderAudit:
    """Read a finished run folder and rebuild its banks' members and non-members.

    Raises DataError naming what is missing or inconsistent, before anything is written.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"{path} is not a run folder: give the folder `fedsilo simulate` printed")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        hint = (
            " (runs made before the privacy audit existed do not keep it: run `fedsilo simulate` again)"
            if missing == [SPLIT_FILE]
            else ""
        )
        raise DataError(
            f"{path} lacks {', '.join(missing)}: it is not a finished horizontal `fedsilo simulate` run folder{hint}"
        )
    try:
        card = json.loads((path / "model_card.json").read_text())
        split = json.loads((path / SPLIT_FILE).read_text())
        config_values = dict(card["job"]["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: model_card.json or {SPLIT_FILE} is not readable ({exc}): "
            "the run folder was modified; run `fedsilo simulate` again"
        ) from None
    if split.get("schema") != SPLIT_SCHEMA:
        raise DataError(f"{path / SPLIT_FILE} has schema {split.get('schema')!r}, expected {SPLIT_SCHEMA}")
    for name, key in (("model.safetensors", "model"), ("encoder.json", "encoder")):
        recorded = card.get("artifacts", {}).get(key, {}).get("sha256")
        if recorded != sha256_file(path / name):
            raise DataError(
                f"{path / name} does not match the SHA-256 in model_card.json: the artefact was "
                "changed after the run; audit the run as it was released"
            )
    try:
        config = SimulationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config_values.items()})
    except TypeError as exc:
        raise DataError(
            f"{path}/model_card.json has a job configuration this fedsilo cannot read ({exc}): "
            "audit it with the fedsilo version that made it"
        ) from None
    if config.setup != "horizontal":
        raise DataError(
            f"the privacy audit supports horizontal runs (one model, one encoder); this run is a {config.setup} run"
        )
    if config.data is not None and not Path(config.data).is_file():
        raise DataError(
            f"the run's data file {config.data} is not found from {Path.cwd()}: the audit rebuilds each "
            "bank from it; run the audit from the directory the run was made in, with the file in place"
        )
    encoder = TabularEncoder.from_json((path / "encoder.json").read_text())
    splits = []
    with tempfile.TemporaryDirectory(prefix="fedsilo-audit-") as work:
        population = build_population(config, Path(work))
        for entry in split["banks"]:
            index = int(entry["index"])
            if not 0 <= index < population.n_banks:
                raise DataError(f"{SPLIT_FILE} names bank {index}, the run's data gives {population.n_banks} banks")
            frame = population.frame(index)
            if entry["data_sha256"] != fingerprint(frame):
                raise DataError(
                    f"{bank_name(index)}'s table rebuilt from {config.data or 'the synthetic generator'} "
                    "does not match its fingerprint in the run: the data changed since the run; audit "
                    "it with the data it was trained on"
                )
            features, labels = encoder.transform(frame)
            x, y = torch.from_numpy(features), torch.from_numpy(labels)
            train, test = (
                torch.as_tensor(entry["train_rows"], dtype=torch.long),
                torch.as_tensor(entry["test_rows"], dtype=torch.long),
            )
            splits.append(BankSplit(bank_name(index), x[train], y[train], x[test], y[test]))
    job = config.job(job_id=card.get("run", "audit"))
    model = build_model(job.model, encoder.n_features)
    set_weights(model, load_file(str(path / "model.safetensors")))
    return RunUnderAudit(path, card, config, job, model, splits)


# --------------------------------------------------------------------------- 1. membership inference


def _logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(x).squeeze(-1).double().numpy()


def train_locally(
    job: JobConfig, x: torch.Tensor, y: torch.Tensor, weights: dict[str, np.ndarray], bank_seed: int
) -> dict[str, np.ndarray]:
    """One bank's training over the job's schedule, alone (the code its ClientApp runs)."""
    data = BankTensors(x, y, x[:0], y[:0])
    history: list[Mechanism] = []
    for server_round in range(1, job.train.rounds + 1):
        result = train_round(job, data, weights, history, server_round, bank_seed)
        weights = result.weights
        if result.mechanism is not None:
            history.append(result.mechanism)
    return weights


def membership_inference(
    job: JobConfig,
    model: torch.nn.Module,
    splits: list[BankSplit],
    settings: AuditSettings,
    progress: Progress | None = None,
) -> tuple[membership.AttackResult, membership.AttackResult]:
    """Loss-threshold and calibrated attacks on every bank's rows, pooled (see the module docstring).

    Reference models are the job's model trained without DP (they are never released;
    they only estimate how hard each row is) on random halves of the bank's reference rows.
    """
    rng = np.random.default_rng(settings.seed)
    reference_job = replace(job, dp=replace(job.dp, mode="off"))
    scores: dict[str, list[np.ndarray]] = {"loss": [], "calibrated": [], "loss_out": [], "calibrated_out": []}
    for b, split in enumerate(splits):
        if progress:
            progress.stage(
                f"Membership inference: {split.name} ({b + 1}/{len(splits)}), "
                f"{settings.reference_models} reference models"
            )
        held_out = rng.permutation(split.x_nonmembers.shape[0])
        reference, evaluation = held_out[: len(held_out) // 2], held_out[len(held_out) // 2 :]
        if len(reference) < 2 or len(evaluation) < 1:
            continue
        members = rng.choice(
            split.x_members.shape[0], size=min(len(evaluation), split.x_members.shape[0]), replace=False
        )
        x = torch.cat([split.x_members[members], split.x_nonmembers[evaluation]])
        y = torch.cat([split.y_members[members], split.y_nonmembers[evaluation]])
        target = _logits(model, x)
        refs = []
        for k in range(settings.reference_models):
            half = rng.choice(reference, size=max(1, len(reference) // 2), replace=False)
            fresh = get_weights(build_model(job.model, x.shape[1], seed=job.train.seed + 1 + k))
            weights = train_locally(
                reference_job, split.x_nonmembers[half], split.y_nonmembers[half], fresh, bank_seed=1000 * (b + 1) + k
            )
            ref_model = build_model(job.model, x.shape[1])
            set_weights(ref_model, weights)
            refs.append(_logits(ref_model, x))
        loss = membership.loss_scores(target, y.numpy())
        calibrated = membership.calibrated_scores(target, np.stack(refs), y.numpy())
        n_in = len(members)
        scores["loss"].append(loss[:n_in])
        scores["loss_out"].append(loss[n_in:])
        scores["calibrated"].append(calibrated[:n_in])
        scores["calibrated_out"].append(calibrated[n_in:])
    if not scores["loss"]:
        raise DataError(
            "no bank has enough held-out rows for a membership attack (needs ≥ 3): "
            "raise --test-fraction or use larger banks"
        )
    return (
        membership.attack("loss threshold", np.concatenate(scores["loss"]), np.concatenate(scores["loss_out"])),
        membership.attack(
            "calibrated (LiRA-style, offline)",
            np.concatenate(scores["calibrated"]),
            np.concatenate(scores["calibrated_out"]),
        ),
    )


# --------------------------------------------------------------------------- 2. one-run canary audit

CANARY_SCALE = 32.0


def make_canaries(m: int, n_features: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`m` out-of-distribution rows (each feature N(0, 32²), far from any standardized row)
    with uniformly random 0/1 labels: a model only fits their labels by memorising them."""
    x = torch.from_numpy((CANARY_SCALE * rng.standard_normal((m, n_features))).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 2, m).astype(np.float32))
    return x, y


def canary_audit(
    job: JobConfig, x_train: torch.Tensor, y_train: torch.Tensor, settings: AuditSettings, bank_seed: int = 0
) -> one_run.OneRunAudit:
    """Replay one bank's training once with random canaries; return the ε lower bound.

    Does not raise on a violated claim: call `one_run.check_claim` on the result.
    A canary's score is how much more the audited model believes its (random) label
    than a reference model does, φ_audited − φ_reference. The reference model is the
    same training on the bank's rows without any canary, with its own sampling and
    noise (fresh secret draws; other seeds in a --reproducible run): it is independent of the coin flips and of the audited run's noise,
    so the scores are a valid post-processing of the audited model and the bound holds.
    """
    rng = np.random.default_rng(settings.seed + 7)
    x_c, y_c = make_canaries(settings.canaries, x_train.shape[1], rng)
    included = one_run.draw_inclusion(settings.canaries, rng)
    inside = torch.from_numpy(np.flatnonzero(included))
    start = get_weights(build_model(job.model, x_train.shape[1], seed=job.train.seed))
    audited = build_model(job.model, x_train.shape[1])
    set_weights(
        audited,
        train_locally(job, torch.cat([x_train, x_c[inside]]), torch.cat([y_train, y_c[inside]]), start, bank_seed),
    )
    reference = build_model(job.model, x_train.shape[1])
    set_weights(reference, train_locally(job, x_train, y_train, start, bank_seed + 104_729))
    labels = y_c.numpy()
    scores = membership.confidence(_logits(audited, x_c), labels) - membership.confidence(
        _logits(reference, x_c), labels
    )
    claimed = job.dp.epsilon if job.dp.mode == "local" else None
    return one_run.audit(scores, included, job.dp.delta if job.dp.private else 0.0, claimed, settings.confidence)


# --------------------------------------------------------------------------- 3. the aggregator's view


def aggregator_view(
    job: JobConfig,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: AuditSettings,
    noise_multiplier: float | None = None,
) -> dict[str, Any]:
    """Reconstruction attacks on batch-size-1 updates of the rows `x` (one peer each).

    Returns the best similarity (Pearson) to a true row per attack and per view. With a
    `noise_multiplier`, one more view: the unmasked average of one DP-SGD step per peer
    at batch size 1 (gradient clipped to the job's max_grad_norm C in L2, plus Gaussian
    noise of standard deviation noise_multiplier·C), what the sum looks like under DP.
    """
    first = next(model.parameters())
    n_out, n_in = int(first.shape[0]), int(first.shape[1])
    rows = [x[i : i + 1] for i in range(x.shape[0])]
    truths = [r.squeeze(0).double().numpy() for r in rows]
    updates = [reconstruction.flat_gradient(model, r, y[i : i + 1]) for i, r in enumerate(rows)]
    clip = job.secagg.clip
    clipped = [np.clip(u, -clip, clip) for u in updates]
    view = reconstruction.secagg_round_view(clipped, SecAggConfig(clip=clip, bits=job.secagg.bits, max_weight=1.0))

    def attack(update: np.ndarray, against: list[np.ndarray]) -> dict[str, float]:
        guess = reconstruction.gradient_matching(model, update, n_in, steps=settings.dlg_steps, seed=settings.seed)
        return {
            "closed_form": round(reconstruction.best_row_similarity(update, n_out, n_in, against), 4),
            "gradient_matching": round(max(reconstruction.similarity(guess, t) for t in against), 4),
        }

    views = {
        "plaintext_single_peer_update": attack(clipped[0], truths[:1]),
        "masked_secagg_upload": attack(view.masked_as_plain[0], truths[:1]),
        "unmasked_secagg_average": attack(view.average, truths),
    }
    if noise_multiplier is not None:
        c = job.dp.max_grad_norm
        rng = np.random.default_rng(settings.seed + 11)
        noisy = [
            u * min(1.0, c / max(float(np.linalg.norm(u)), 1e-12)) + rng.normal(0.0, noise_multiplier * c, u.size)
            for u in updates
        ]
        dp_view = reconstruction.secagg_round_view(
            [np.clip(u, -clip, clip) for u in noisy], SecAggConfig(clip=clip, bits=job.secagg.bits, max_weight=1.0)
        )
        views["unmasked_secagg_average_of_dp_steps"] = attack(dp_view.average, truths)
        views["unmasked_secagg_average_of_dp_steps"]["noise_multiplier"] = round(noise_multiplier, 4)
    for figures in views.values():
        figures["succeeded"] = (
            max(figures["closed_form"], figures["gradient_matching"]) >= reconstruction.SUCCESS_SIMILARITY
        )
    return {
        "peers": len(rows),
        "update": "one member row's batch-size-1 gradient of the final model per peer, clipped to ±secagg.clip",
        "similarity": "best Pearson correlation between a reconstruction and a true row (1 = exact)",
        "success_threshold": reconstruction.SUCCESS_SIMILARITY,
        "this_run": (
            "secure aggregation on: the aggregator held masked uploads and the round's average"
            if job.secagg.mode == "on"
            else "secure aggregation off: the aggregator held each bank's (DP-protected, multi-step) update"
        ),
        **views,
    }


# --------------------------------------------------------------------------- the whole audit


def audit_run(
    run_dir: str | Path, settings: AuditSettings | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Audit a finished run; write `measured_privacy` into its card and the PNG; return the section.

    Raises `PrivacyAuditFailed` (after writing) when the canary audit's lower bound
    exceeds the claimed ε.
    """
    settings = settings or AuditSettings()
    progress = progress or Progress(quiet=True)
    limit_threads()  # small models: one intra-op thread is the fastest
    from fedsilo.simulations.vertical_audit import audit_vertical_run, read_card  # vertical imports the runner

    vertical = read_card(Path(run_dir)) if Path(run_dir).is_dir() else None
    if vertical is not None:  # the split-learning attacks (simulations.vertical_audit)
        progress.stage(f"Privacy audit of {run_dir}: a vertical run (label inference and reconstruction)")
        return audit_vertical_run(Path(run_dir), vertical, progress)
    progress.stage(f"Privacy audit of {run_dir}: reading the run and rebuilding its banks")
    run = load_run(run_dir)
    job = run.job
    loss_attack, calibrated_attack = membership_inference(job, run.model, run.splits, settings, progress)

    audited = run.splits[0]
    canary: one_run.OneRunAudit | None = None
    if job.dp.mode == "distributed":
        canary_note = (
            "not run: with distributed DP no bank adds its noise alone, so one bank's replay does not "
            "carry the claimed guarantee"
        )
    else:
        progress.stage(f"One-run ε audit: {settings.canaries} canaries at {audited.name}, training replayed once")
        canary = canary_audit(job, audited.x_members, audited.y_members, settings)
        canary_note = (
            f"{audited.name}'s training replayed once with the job's schedule and DP plan, "
            "with canaries each included with probability 1/2"
        )

    mechanism = None
    if job.dp.mode == "local":
        progress.stage(f"Mechanism check: one noisy step at {audited.name} replayed twice, and as the host would")
        mechanism = check_mechanism(job, audited.x_members, audited.y_members, get_weights(run.model), bank_seed=0)

    progress.stage(
        f"Aggregator's view: {settings.reconstruction_peers} peers, one SecAgg+ round, "
        f"{settings.dlg_steps} gradient-matching steps"
    )
    rows = min(settings.reconstruction_peers, audited.x_members.shape[0])
    noise = plan_dp(job, audited.x_members.shape[0]).noise_multiplier if job.dp.mode == "local" else None
    aggregator = aggregator_view(job, run.model, audited.x_members[:rows], audited.y_members[:rows], settings, noise)

    epsilon = job.dp.epsilon if job.dp.private else None
    delta = job.dp.delta if job.dp.private else 0.0
    bound = advantage_bound(epsilon, delta) if epsilon is not None else 1.0
    attacks = [loss_attack.summary(), calibrated_attack.summary()]
    for entry in attacks:
        entry["advantage_bound"] = round(bound, 4)
        entry["within_bound"] = entry["advantage"] <= bound
    section = {
        "claimed": {"epsilon": epsilon, "delta": delta if job.dp.private else None, "dp_mode": job.dp.mode},
        "membership_inference": {
            "target": "the released final model; members: training rows, non-members: held-out rows, per bank, "
            "pooled over banks (as many members as non-members per bank)",
            "attacks": attacks,
            "reference_models_per_bank": settings.reference_models,
            "advantage_bound_formula": "(e^ε − 1 + 2δ)/(e^ε + 1)",
        },
        "one_run_epsilon_audit": {
            "method": "Steinke, Nasr and Jagielski (NeurIPS 2023), Theorem 5.2 with δ; guesses for k in "
            f"{list(one_run.GUESS_FRACTIONS)}·m per side, Bonferroni-corrected",
            "bank": audited.name,
            "note": canary_note,
            **(canary.summary() if canary else {}),
            "verdict": (
                None
                if canary is None
                else "FAILED: lower bound above the claimed ε"
                if canary.violates_claim
                else "passed: lower bound at or below the claimed ε"
                if canary.epsilon_claimed is not None
                else "no claim to check (no DP)"
            ),
        },
        "mechanism_check": (
            {"bank": audited.name, **mechanism.to_dict()}
            if mechanism is not None
            else {
                "verdict": None,
                "note": "not run: only local DP-SGD adds its noise at one peer"
                if job.dp.private
                else "no DP noise to check",
            }
        ),
        "aggregator_view": aggregator,
        "settings": {
            "canaries": settings.canaries,
            "reference_models": settings.reference_models,
            "confidence": settings.confidence,
            "dlg_steps": settings.dlg_steps,
            "seed": settings.seed,
        },
    }
    progress.stage("Writing measured_privacy into the model card, and privacy_audit.png")
    plot_privacy_audit(
        run.path / PLOT_FILE,
        [loss_attack, calibrated_attack],
        epsilon,
        canary.epsilon_lower_bound if canary else None,
        settings.confidence,
    )
    card = dict(run.card)
    card["measured_privacy"] = section
    card["artifacts"] = {
        **card["artifacts"],
        "privacy_audit_plot": {"file": PLOT_FILE, "format": "png", "sha256": sha256_file(run.path / PLOT_FILE)},
    }
    write_card(run.path / "model_card.json", card)
    if mechanism is not None and not mechanism.passed:
        raise PrivacyAuditFailed(
            f"privacy audit FAILED: the mechanism check at {audited.name}: {mechanism.verdict}; "
            "the released updates are not protected as the card claims: do not release this model"
        )
    if canary is not None:
        one_run.check_claim(canary)
    return section
