"""`fedsilo audit-privacy RUN_DIR` for a vertical run: what each party learns from the other's messages.

Two attacks (`fedsilo.privacy.audit.split_learning`), each from its attacker's side with
that party's full view (every message it received in the last epoch):

- label inference by the bank (feature party) from the gradients the broker returned:
  norm scoring and direction scoring with one known positive (Li et al., ICLR 2022);
  ROC AUC against the broker's true labels, and the advantage (max TPR − FPR) against the
  bound (e^ε − 1 + 2δ)/(e^ε + 1) that the broker's label DP allows;
- reconstruction of the bank's ``pay_0`` by the broker from the embeddings it received
  (ridge regression, the attacker knowing the column for 10 % of the customers; R² ≤ 0:
  nothing recovered).

The run folder keeps no message (they are the parties' releases, not the run's
output), so the audit replays the run's split training in this process from the run's
data source and configuration (the card's ``job.config``; the synthetic generator's
seed, or the data file, which must still be in place: the number of shared customers is
checked against the card), twice: with the run's DP plan (fresh noise from the OS
CSPRNG, unless the run was ``--reproducible``) and without DP, the yardstick where both
attacks are expected to work. Both engines exchange the same messages
(tests/simulations/test_vertical_engine_e2e.py), so the replay runs in process. The
attacks on the run's own messages, measured while it ran, are in the card's
``measured_leakage`` and repeated here as ``as_run``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.errors import DataError
from fedsilo.peers.vertical.training import train
from fedsilo.privacy.audit.roc import advantage_bound, roc
from fedsilo.privacy.audit.split_learning import direction_scores, norm_scores, reconstruction_r2
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.report.card import sha256_file, write_card
from fedsilo.simulations.report.plots import plot_vertical_audit
from fedsilo.simulations.vertical import (
    ATTACKED_COLUMN,
    ATTACKER_KNOWN_FRACTION,
    DEFAULT_OVERLAP,
    HOLDER,
    PARTY,
    Observer,
    build_parties,
    embedding_view,
    label_view,
    plan_parties,
    pooled_table,
    split_spec,
)

PLOT_FILE = "privacy_audit.png"

__all__ = ["audit_vertical_run", "vertical_config"]


def vertical_config(path: Path, card: dict[str, Any]) -> SimulationConfig:
    """The run's configuration from its card; DataError if the card has none this fedsilo reads."""
    try:
        values = dict(card["job"]["config"])
        return SimulationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"{path}/model_card.json has no vertical job configuration this fedsilo reads ({exc}): "
            "runs made before the vertical audit existed do not keep it; run `fedsilo simulate` again"
        ) from None


def _label_attacks(gradients: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    positives, negatives = labels == 1, labels == 0
    known = gradients[np.flatnonzero(positives)[0]]
    out = {}
    for name, scores in (("norm", norm_scores(gradients)), ("direction", direction_scores(gradients, known))):
        curve = roc(scores[positives], scores[negatives])
        out[f"{name}_auc"] = round(curve.auc, 4)
        out[f"{name}_advantage"] = round(curve.advantage, 4)
    return out


def _replay(config: SimulationConfig, table, private: bool) -> dict[str, dict[str, float] | None]:
    """One replay of the run's split training; the attacks on what each attacker received in its last epoch."""
    run = config if private else replace(config, dp_mode="off")
    if private and config.dp_mode == "off":
        run = replace(config, dp_mode="local")
    spec = split_spec(run)
    _, holder_dp, party_dp = plan_parties(run, spec)
    overlap = DEFAULT_OVERLAP if run.overlap is None else run.overlap
    parties = build_parties(table, run, spec, holder_dp, party_dp, overlap)
    observer = Observer()
    train(parties.holder, [parties.party], run.rounds, run.batch_size, run.seed, tap=observer)
    batches = -(-len(parties.holder.train_index) // run.batch_size)
    embeddings, column = embedding_view(observer, parties, batches)
    known = max(2, int(ATTACKER_KNOWN_FRACTION * len(column)))
    return {
        "shared": len(parties.joint),
        "label_inference": None if spec.frozen else _label_attacks(*label_view(observer, parties, batches)),
        "feature_reconstruction": {"r2": round(reconstruction_r2(embeddings, column, known), 4)},
        "noise_multiplier": {HOLDER: holder_dp.noise_multiplier, PARTY: party_dp.noise_multiplier}
        if holder_dp
        else None,
    }


def audit_vertical_run(path: Path, card: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Audit the vertical run at ``path`` (its ``card`` read); write ``measured_privacy`` and the PNG; the section.

    A coded-scheme run is not replayed: its only release (one randomized-response code per shared
    customer) was attacked when it was made, and that measurement is what the section reports.
    """
    if card.get("scheme") == "coded":
        return _coded_section(path, card, progress)
    config = vertical_config(path, card)
    if config.data is not None and not Path(config.data).is_file():
        raise DataError(
            f"the run's data file {config.data} is not found from {Path.cwd()}: the audit replays the run from it; "
            "run the audit from the directory the run was made in, with the file in place"
        )
    table = pooled_table(config)
    epsilon = config.epsilon
    progress.stage(f"Vertical audit: the run's split training replayed with DP (ε = {epsilon:g} per party)")
    with_dp = _replay(config, table, private=True)
    expected = card.get("results", {}).get("shared_customers")
    if expected is not None and with_dp["shared"] != expected:
        raise DataError(
            f"the run's data now gives {with_dp['shared']:,} shared customers, the card says {expected:,}: "
            "the data changed since the run; audit the run with its data as it was"
        )
    progress.stage("Vertical audit: the same training replayed without DP (the attacks' yardstick)")
    without_dp = _replay(config, table, private=False)
    bound = round(advantage_bound(epsilon, config.delta), 4)
    label = None
    if with_dp["label_inference"] is not None:
        label = {
            "attacker": f"{PARTY} (feature party), from the gradients {HOLDER} returned in the last epoch",
            "method": "Li et al. (ICLR 2022): norm scoring, and direction scoring with one known positive",
            "with_dp": with_dp["label_inference"],
            "without_dp": without_dp["label_inference"],
            "advantage_bound_with_dp": bound,
            "within_bound": max(
                with_dp["label_inference"]["norm_advantage"], with_dp["label_inference"]["direction_advantage"]
            )
            <= bound,
        }
    section = {
        "setup": "vertical",
        "claimed": {
            "epsilon": epsilon if config.dp_mode != "off" else None,
            "delta": config.delta if config.dp_mode != "off" else None,
            "parties": {p["name"]: p["epsilon_spent"] for p in card.get("participants", [])},
        },
        "method": "the run's split training replayed in this process from its data and configuration, with "
        f"the run's DP plan at ε = {epsilon:g} per party"
        + (" (the run itself had no DP: what DP would give)" if config.dp_mode == "off" else "")
        + " and without DP; each attack reads what its attacker received in the last epoch",
        "label_inference": label
        or {"note": f"no gradient leaves {HOLDER} (frozen bottoms): nothing to infer its labels from"},
        "feature_reconstruction": {
            "attacker": f"{HOLDER} (label holder), from the embeddings {PARTY} released in the last epoch",
            "column": ATTACKED_COLUMN,
            "attacker_knows_fraction": ATTACKER_KNOWN_FRACTION,
            "with_dp": with_dp["feature_reconstruction"],
            "without_dp": without_dp["feature_reconstruction"],
        },
        "noise_multiplier": with_dp["noise_multiplier"],
        "as_run": card.get("measured_leakage", {}),
    }
    progress.stage("Writing measured_privacy into the model card, and privacy_audit.png")
    plot_vertical_audit(path / PLOT_FILE, section)
    card = dict(card)
    card["measured_privacy"] = section
    card["artifacts"] = {
        **card.get("artifacts", {}),
        "privacy_audit_plot": {"file": PLOT_FILE, "format": "png", "sha256": sha256_file(path / PLOT_FILE)},
    }
    write_card(path / "model_card.json", card)
    return section


def _coded_section(path: Path, card: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """measured_privacy of a coded-scheme run: the leakage its card recorded when the codes were released."""
    measured = card.get("measured_leakage")
    if not isinstance(measured, dict) or "feature_reconstruction_r2" not in measured:
        raise DataError(f"{path}/model_card.json is a coded-scheme run without its measured leakage: run it again")
    progress.stage("Vertical audit: a coded-scheme run; its one release was attacked when it was made")
    section = {
        "setup": "vertical",
        "scheme": "coded",
        "claimed": {"parties": {p["name"]: p["epsilon_spent"] for p in card.get("participants", [])}},
        "method": "not replayed: the run's only release (one randomized-response code per shared customer) "
        "was attacked as released, when the run was made",
        "label_inference": {
            "attacker": f"{PARTY} (feature party)",
            "auc": measured.get("label_inference_auc"),
            "note": measured.get("label_inference_note"),
        },
        "feature_reconstruction": {
            "attacker": f"{HOLDER} (label holder), from the codes {PARTY} released",
            "column": ATTACKED_COLUMN,
            "r2": measured["feature_reconstruction_r2"],
        },
    }
    card = dict(card)
    card["measured_privacy"] = section
    write_card(path / "model_card.json", card)
    return section


def read_card(path: Path) -> dict[str, Any] | None:
    """The run's card if it is a vertical run's, else None."""
    try:
        card = json.loads((Path(path) / "model_card.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) and card.get("setup") == "vertical" else None
