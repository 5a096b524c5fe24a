"""The `fedsilo audit-privacy RUN_DIR` command (and the summary `simulate --audit` prints).

Exit status: 0 when the audit ran and the canary lower bound stays at or below the
claimed ε; 2 on an unusable run folder, or when the audit FAILED (the card still records
the failed measurement).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit-privacy",
        help="measure what a finished run's model leaks (membership, canaries, reconstruction)",
        description="Run privacy attacks as measurements against a finished `fedsilo simulate` run: membership "
        "inference (loss threshold and a calibrated LiRA-style attack), a one-run ε audit with canaries "
        "(Steinke, Nasr and Jagielski 2023) and reconstruction from what the aggregator receives. "
        "Writes a measured_privacy section into RUN_DIR/model_card.json and RUN_DIR/privacy_audit.png. "
        "Fails (exit 2) if the measured ε lower bound exceeds the claimed ε. "
        "For a vertical run: label inference by the feature party from the returned gradients (norm and "
        "direction scoring) and reconstruction of a feature party's column by the label holder from the "
        "embeddings, each on a replay of the run's training with and without DP.",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run folder written by `fedsilo simulate` (horizontal or vertical setup)"
    )
    p.add_argument("--canaries", type=int, metavar="M", help="canaries of the one-run ε audit (default 1000)")
    p.add_argument(
        "--reference-models",
        type=int,
        metavar="K",
        help="reference models per bank for the calibrated attack (default 4)",
    )
    p.add_argument("--confidence", type=float, metavar="C", help="confidence of the ε lower bound (default 0.95)")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the audit's own randomness (default 0)")
    p.add_argument("--json", action="store_true", help="print the measured_privacy section as JSON, last")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=run_audit_privacy)


def settings_from(args: argparse.Namespace):
    from fedsilo.simulations.privacy_audit import AuditSettings

    given = {
        k: getattr(args, k)
        for k in ("canaries", "reference_models", "confidence", "seed")
        if getattr(args, k, None) is not None
    }
    return AuditSettings(**given)


def run_audit_privacy(args: argparse.Namespace) -> int:
    from fedsilo.errors import PrivacyAuditFailed
    from fedsilo.simulations.privacy_audit import audit_run
    from fedsilo.simulations.progress import Progress

    settings = settings_from(args)
    try:
        section = audit_run(args.run_dir, settings, Progress(quiet=args.quiet))
    except PrivacyAuditFailed:
        print_summary(json.loads((Path(args.run_dir) / "model_card.json").read_text())["measured_privacy"])
        raise
    print_summary(section)
    if args.json:
        print(json.dumps(section))
    return 0


def print_summary(section: dict[str, Any]) -> None:
    """A few lines a reader can check against the card."""
    if section.get("setup") == "vertical":
        print_vertical_summary(section)
        return
    claimed = section["claimed"]
    eps = claimed["epsilon"]
    print("claimed: " + (f"ε = {eps:g}, δ = {claimed['delta']:g}" if eps is not None else "no DP"))
    for a in section["membership_inference"]["attacks"]:
        print(
            f"membership, {a['attack']:<33} AUC {a['auc']:.3f}  TPR@1%FPR {a['tpr_at_1pct_fpr']:.3f}  "
            f"TPR@0.1%FPR {a['tpr_at_0.1pct_fpr']:.3f}  advantage {a['advantage']:.3f} "
            f"(DP bound {a['advantage_bound']:.3f})"
        )
    canary = section["one_run_epsilon_audit"]
    if "epsilon_lower_bound" in canary:
        print(
            f"one-run ε audit ({canary['canaries']} canaries, {canary['bank']}): ε ≥ "
            f"{canary['epsilon_lower_bound']:.3f} at {canary['confidence']:.0%} confidence "
            f"({canary['correct']}/{canary['guesses']} guesses right): {canary['verdict']}"
        )
    else:
        print(f"one-run ε audit: {canary['note']}")
    check = section.get("mechanism_check", {})
    if check.get("verdict"):
        print(
            f"mechanism check ({check['bank']}): replays differ by sd {check['replay_sd']:.3g}, a host's "
            f"recomputation by {check['host_sd']:.3g}, planned {check['expected_sd']:.3g}: {check['verdict']}"
        )
    view = section["aggregator_view"]
    for name in (
        "plaintext_single_peer_update",
        "masked_secagg_upload",
        "unmasked_secagg_average",
        "unmasked_secagg_average_of_dp_steps",
    ):
        if name not in view:
            continue
        v = view[name]
        print(
            f"reconstruction from {name.replace('_', ' ')}: closed form {v['closed_form']:.3f}, "
            f"gradient matching {v['gradient_matching']:.3f} -> {'SUCCEEDED' if v['succeeded'] else 'failed'}"
        )


def print_vertical_summary(section: dict[str, Any]) -> None:
    """The vertical audit's lines: each attack with and without DP (a coded run: as measured at release)."""
    if section.get("scheme") == "coded":
        spent = ", ".join(f"{name} ε = {eps:g}" for name, eps in section["claimed"]["parties"].items())
        print(f"coded scheme ({spent or 'no DP'}): {section['method']}")
        print(f"label inference by the feature party: AUC {section['label_inference']['auc']:.3f}")
        rec = section["feature_reconstruction"]
        print(f"reconstruction of {rec['column']} by the label holder from the codes: R² {rec['r2']:.3f}")
        return
    claimed = section["claimed"]
    eps = claimed["epsilon"]
    print("claimed: " + (f"ε = {eps:g} per party, δ = {claimed['delta']:g}" if eps is not None else "no DP"))
    label = section["label_inference"]
    if "with_dp" in label:
        for attack in ("norm", "direction"):
            print(
                f"label inference by the feature party ({attack} scoring): AUC {label['without_dp'][f'{attack}_auc']:.3f}"
                f" without DP, {label['with_dp'][f'{attack}_auc']:.3f} with DP (advantage "
                f"{label['with_dp'][f'{attack}_advantage']:.3f}, DP bound {label['advantage_bound_with_dp']:.3f})"
            )
    else:
        print(f"label inference: {label['note']}")
    rec = section["feature_reconstruction"]
    print(
        f"reconstruction of {rec['column']} by the label holder: R² {rec['without_dp']['r2']:.3f} without DP, "
        f"{rec['with_dp']['r2']:.3f} with DP"
    )
