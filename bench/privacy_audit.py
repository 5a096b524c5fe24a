"""Measured privacy on real data: what attacks get out of the model at ε = 1, 3, 8 and without DP.

For each privacy setting, runs the real command

    fedsilo simulate --data PATH --label Y --id-column ID --banks 10 --partition dirichlet:0.5 \\
        --epsilon E (or --no-dp) --compare none --audit --json --quiet --out TMP

which trains the federation on Flower's Simulation Engine and then runs the privacy
self-audit on the fresh run folder (`fedsilo audit-privacy`, default settings: 1000
canaries, 4 reference models per bank, 95 % confidence). It reads back the run's
model card and prints, side by side: the federated ROC-AUC (pooled held-out rows), the
membership attacks' AUC and TPR at 1 % FPR (loss threshold and calibrated), the
measured advantage against the (ε, δ) bound, and the canary audit's ε lower bound.
The no-DP run is the baseline: the last column is each setting's membership advantage
as a ratio of the no-DP one. A canary bound above the claimed ε makes the command exit 2
(the audit FAILED); the bench records that and goes on.

    python bench/privacy_audit.py                      # ../shared/data/UCI_Credit_Card.csv
    python bench/privacy_audit.py --epsilons 3,none    # fewer settings

One setting takes 2–4 minutes on 2 shared cores (a Ray start, 10 rounds, the audit).
Run folders go to a temporary directory that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "UCI_Credit_Card.csv"


def fedsilo_command() -> list[str]:
    script = Path(sys.executable).with_name("fedsilo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedsilo.cli"]


def run_setting(args: argparse.Namespace, epsilon: float | None, out: Path) -> dict:
    privacy = ["--no-dp"] if epsilon is None else ["--epsilon", str(epsilon)]
    command = [
        *fedsilo_command(),
        "simulate",
        "--data",
        str(args.data),
        "--label",
        "Y",
        "--id-column",
        "ID",
        "--banks",
        str(args.banks),
        "--partition",
        args.partition,
        "--rounds",
        str(args.rounds),
        *privacy,
        "--compare",
        "none",
        "--audit",
        "--json",
        "--quiet",
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    folders = [p for p in out.iterdir() if not p.name.startswith(".")]
    if done.returncode not in (0, 2) or len(folders) != 1:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"fedsilo simulate --audit failed (exit {done.returncode}): {' '.join(command)}")
    card = json.loads((folders[0] / "model_card.json").read_text())
    if "measured_privacy" not in card:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the audit did not write its section (exit {done.returncode})")
    measured = card["measured_privacy"]
    loss, calibrated = measured["membership_inference"]["attacks"]
    canary = measured["one_run_epsilon_audit"]
    return {
        "epsilon": epsilon,
        "seconds": elapsed,
        "federated_auc": card["metrics"]["final_auc_pooled_test"],
        "loss": loss,
        "calibrated": calibrated,
        "canary": canary,
        "failed": done.returncode == 2,
        "aggregator": measured["aggregator_view"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--banks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--epsilons", default="1,3,8,none", help="comma-separated ε values; 'none' = no DP")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"data file {args.data} not found: pass --data PATH")
    settings = [None if e.strip().lower() == "none" else float(e) for e in args.epsilons.split(",")]
    rows = []
    for epsilon in settings:
        out = Path(tempfile.mkdtemp(prefix="fedsilo-bench-audit-"))
        try:
            print(f"running ε = {epsilon if epsilon is not None else 'no DP'} ...", file=sys.stderr, flush=True)
            rows.append(run_setting(args, epsilon, out))
        finally:
            shutil.rmtree(out, ignore_errors=True)
    baseline = next((r for r in rows if r["epsilon"] is None), None)

    print(
        f"\nUCI credit card, {args.banks} banks, {args.partition}, {args.rounds} rounds; audit defaults "
        "(1000 canaries at bank-00000, 4 reference models per bank, 95 % confidence)"
    )
    print("aggregator's view (closed form / gradient matching, Pearson with the true row):")
    for r in rows:
        a = r["aggregator"]
        print(
            f"  ε={_eps(r['epsilon']):<5} plaintext {a['plaintext_single_peer_update']['closed_form']:.3f}/"
            f"{a['plaintext_single_peer_update']['gradient_matching']:.3f}   masked upload "
            f"{a['masked_secagg_upload']['closed_form']:.3f}/{a['masked_secagg_upload']['gradient_matching']:.3f}"
            f"   unmasked average {a['unmasked_secagg_average']['closed_form']:.3f}/"
            f"{a['unmasked_secagg_average']['gradient_matching']:.3f}"
        )
    header = (
        f"{'ε claimed':>9} | {'fed AUC':>7} | {'MIA AUC loss':>12} | {'MIA AUC calib':>13} | "
        f"{'TPR@1% loss':>11} | {'TPR@1% calib':>12} | {'adv (bound)':>13} | {'canary ε LB':>11} | "
        f"{'adv / no-DP adv':>15} | {'time':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        adv = max(r["loss"]["advantage"], r["calibrated"]["advantage"])
        ratio = (
            f"{adv / max(baseline['loss']['advantage'], baseline['calibrated']['advantage']):.2f}×"
            if baseline
            else "n/a"
        )
        lb = f"{r['canary']['epsilon_lower_bound']:.3f}" + (" FAIL" if r["failed"] else "")
        print(
            f"{_eps(r['epsilon']):>9} | {r['federated_auc']:>7.4f} | {r['loss']['auc']:>12.4f} | "
            f"{r['calibrated']['auc']:>13.4f} | {r['loss']['tpr_at_1pct_fpr']:>11.4f} | "
            f"{r['calibrated']['tpr_at_1pct_fpr']:>12.4f} | {adv:>5.3f} ({r['loss']['advantage_bound']:.3f}) | "
            f"{lb:>11} | {ratio:>15} | {r['seconds']:>4.0f}s"
        )


def _eps(value: float | None) -> str:
    return "no DP" if value is None else f"{value:g}"


if __name__ == "__main__":
    main()
