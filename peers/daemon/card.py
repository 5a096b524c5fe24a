"""The model card a job's host signs: what the model is, who trained it on what, at what privacy cost.

Per participant: its data source's row count and file fingerprint (never rows), the
(ε, δ) its own accountant spent (as it reported it to the host over mutual TLS), the
mechanisms behind that ε, and the ε of those mechanisms under Opacus' RDP accountant
(computed here; beside a PRV figure it shows what the tighter accountant bought). The job document's SHA-256 ties the card to the
owner-signed job (under the gm suite the fingerprints and that hash are SM3: the key
`document_sm3` and the prefix `sm3:` name the algorithm). Software versions make the model traceable to the code that made it.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.participants import Participant, Report
from fedsilo.peers.daemon.signed_job import SignedJob
from fedsilo.peers.identity.signing import canonical_json
from fedsilo.peers.provenance import package_versions
from fedsilo.privacy.accounting import epsilon_spent
from fedsilo.privacy.accounting.compose import accounting_note
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, get_suite

SCHEMA = "fedsilo.model-card/1"


def build_card(
    job: SignedJob,
    participants: list[Participant],
    reports: dict[str, Report],
    metrics: dict[str, Any],
    suite: str = DEFAULT_SUITE,
) -> dict[str, Any]:
    """The unsigned card of `job`: one row per accepted participant (its `reports` entry if it reported),
    the job document hashed with the consortium's `suite`."""
    config = job.config
    hasher = get_suite(suite)
    rows = []
    for participant in participants:
        if participant.decision != "accepted":
            continue
        accepted, report = participant.acceptance, reports.get(participant.peer)
        rows.append(
            {
                "peer": participant.peer,
                "rows": None if accepted is None else accepted.rows,
                "training_rows": None if accepted is None else accepted.n_train,
                "data_fingerprint": None if accepted is None else accepted.fingerprint,
                "epsilon": None if report is None else report.epsilon,
                "delta": None if report is None else report.delta,
                "accountant": None if report is None else report.accountant,
                "spent": None if report is None else [m.to_dict() for m in report.spent],
                "epsilon_rdp": None if report is None else _rdp_epsilon(report),
                "reported": report is not None,
            }
        )
    rounds = metrics.get("rounds", [])
    card = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": "binary classification: probability of default (one logit per row)",
        "job": {
            "id": job.job_id,
            "owner": job.owner,
            "host": job.host,
            "source": job.source,
            "label": job.label,
            "strategy": config.strategy,
            "rounds": config.train.rounds,
            "model": {"kind": config.model.kind, "hidden": list(config.model.hidden)},
            "dp": {
                "mode": config.dp.mode,
                "epsilon": config.dp.epsilon,
                "delta": config.dp.delta,
                "max_grad_norm": config.dp.max_grad_norm,
                "accountant": config.dp.accountant,
            },
            "secure_aggregation": config.secagg.mode,
            f"document_{hasher.hash_label}": hasher.hash(canonical_json(job.document)).hex(),
        },
        "participants": rows,
        "privacy": {
            "guarantee": f"each participant's released updates are (ε, δ)-DP per record of its data "
            f"source, with the ε and δ listed per participant (job target ε = "
            f"{config.dp.epsilon:g}, δ = {config.dp.delta:g})",
            "noise": "secret: each participant drew its DP noise and sampling from its own OS CSPRNG, "
            "afresh every round; a deployed peer refuses a job that asks for seeded noise, so "
            "nothing in the job or this card reproduces it",
            "public": "each participant's number of training rows is released exactly (training_rows "
            "here; it also sets its sampling rate and its weight in the average): the (ε, δ) "
            "protects what each record contains, not whether a peer holds one more record",
            "accounting": accounting_note(config.dp.accountant, config.dp.delta),
            "secure_aggregation": "SecAgg+: the host saw only the sum of each round's updates"
            if config.secagg.enabled
            else "off: the host saw each DP-protected update",
        },
        "metrics": _final_metrics(rounds),
        "software": package_versions(),
    }
    if config.model.kind == "gbdt":
        card["job"]["model"] = gbdt_model(config)
        for neural in ("rounds", "strategy"):  # a gbdt job has releases (in its model), no rounds nor strategy
            del card["job"][neural]
        del card["job"]["dp"]["max_grad_norm"]  # its derivatives are bounded by the loss (fedsilo.privacy.gbdt)
        card["privacy"]["guarantee"] = (
            f"each participant's released gradient and hessian histograms are (ε, δ)-DP per record of its data "
            f"source, with the ε and δ listed per participant (job target ε = {config.dp.epsilon:g}, "
            f"δ = {config.dp.delta:g}); the trees, bin edges aside, are post-processing of those releases"
        )
        card["privacy"]["public"] = (
            "each participant's number of training rows is released exactly (training_rows here); the histograms "
            "are divided by the job's public row bound, never by a participant's own count"
        )
        card["privacy"]["noise"] = (
            "secret: each participant drew its DP noise share from its own OS CSPRNG for every release"
        )
    if job.setup == "transfer":
        card["job"]["setup"] = "transfer"
        card["transfer"] = transfer_note(config.shared, config.vocabulary)
    return card


def gbdt_model(config: Any) -> dict[str, Any]:
    """A gbdt job's model as its card states it: the ensemble's shape, its file and its releases per participant."""
    model = config.model
    return {
        "kind": "gbdt",
        "trees": model.trees,
        "depth": model.depth,
        "bins": model.bins,
        "learning_rate": model.learning_rate,
        "features_per_tree": model.features_per_tree,
        "splits": model.splits,
        "row_bound": config.public_rows,
        "releases_per_participant": model.releases,
        "file": "model.json (fedsilo.peers.gbdt.model_file: the trees over the encoder's columns, margin = sum)",
    }


def transfer_note(shared: tuple[str, ...], vocabulary: tuple[str, ...]) -> dict[str, Any]:
    """What a transfer job's published model is, and what stays at each participant."""
    return {
        "shared_parameters": list(shared),
        "shared_vocabulary": list(vocabulary),
        "model": "model.safetensors holds the shared parameters only (the aggregate of the split-input MLP's "
        "parameters named by shared_parameters); encoder.json is the shared-vocabulary encoder, fitted from the "
        "participants' aggregates of those columns",
        "private": "each participant's own-columns input block (input.weight), any parameter not shared, and "
        "its own-columns encoder never left it: they stay in its daemon's state directory "
        "(jobs/<job>/peer/<job>.private.safetensors and <job>.encoder.json); scoring with the full model is "
        "local to each participant",
    }


def _rdp_epsilon(report: Report) -> float | None:
    """ε of the reported mechanisms under the RDP accountant, at the reported δ (None if that δ is not one)."""
    try:
        return round(epsilon_spent(list(report.spent), report.delta, "rdp"), 6)
    except ConfigError:
        return None


def _final_metrics(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The last round's held-out metrics, each peer's and their example-weighted mean.

    A metric a peer sent that is not a finite number (NaN, a string) is left out (null):
    the card must stay signable JSON whatever a participant reports.
    """
    evaluated = [r for r in rounds if r.get("evaluate")]
    last = [
        {k: _finite(m.get(k)) for k in ("auc", "loss", "num-examples")}
        for m in (evaluated[-1]["evaluate"] if evaluated else [])
    ]
    total = sum(m["num-examples"] or 0 for m in last)

    def mean(key: str) -> float | None:
        values = [(m[key], m["num-examples"] or 0) for m in last if m[key] is not None]
        return _finite(sum(v * n for v, n in values) / total) if values and total else None

    return {
        "rounds": len(rounds),
        "final_auc": mean("auc"),
        "final_loss": mean("loss"),
        "final_per_peer": [{"auc": m["auc"], "loss": m["loss"], "test_rows": m["num-examples"]} for m in last],
        "errors": sum(len(r.get("errors", [])) for r in rounds),
        "note": "held-out metrics each peer reports on its own test rows, in the clear (not covered by DP)",
    }


def _finite(value: Any) -> float | int | None:
    """`value` if it is a finite number (not a bool; an integer below 2**63), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None
    return value if math.isfinite(value) else None
