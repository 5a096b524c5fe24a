"""`fedsilo simulate`: N simulated banks train a shared model, on the Python API.

The flags map onto `fedsilo.simulations.api.simulate` (exported as `fedsilo.simulate`);
the handler imports torch, Flower and Ray only after the cheap input checks, so a
refused input answers at once.
"""

from __future__ import annotations

import argparse

from fedsilo.simulations import audit_privacy_cli, settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fedsilo simulate` to the command line's subparsers: its flags come from `settings.SETTINGS`."""
    p = sub.add_parser(
        "simulate",
        help="simulate N banks training one model with DP-SGD on Flower",
        description="Simulate N banks, each training on its own rows with DP-SGD (Opacus), aggregated with "
        "Flower's Simulation Engine. With no flags: a small run on synthetic banks, with the defaults below.",
        epilog=settings.epilog(),
        formatter_class=settings.HelpFormatter,
    )
    settings.add_arguments(p)
    p.set_defaults(handler=run_simulate)


OVERRIDABLE = settings.overridable()


def run_simulate(args: argparse.Namespace) -> int:
    from fedsilo.errors import PrivacyAuditFailed
    from fedsilo.simulations.api import simulate

    overrides = {name: getattr(args, name) for name in OVERRIDABLE}
    if args.no_dp:
        overrides["dp_mode"] = "off"
    try:
        result = simulate(args.config, progress=not args.quiet, mlflow=args.mlflow, **overrides)
    except PrivacyAuditFailed as failed:  # `--audit` FAILED: the run exists; show it, then the failed measurement
        _print_run(failed.result, args.mlflow)
        audit_privacy_cli.print_summary(failed.result.card["measured_privacy"])
        raise
    _print_run(result, args.mlflow)
    if result.privacy_audit is not None:
        audit_privacy_cli.print_summary(result.privacy_audit)
    if args.json:
        print(result.summary.to_json())
    return 0


def _print_run(result, mlflow: str | None) -> None:
    """The run's summary lines (stdout)."""
    summary = result.summary
    if summary.setup == "vertical":
        from fedsilo.simulations.vertical import summary_lines

        print("\n".join(summary_lines(summary)))
        return
    print(f"run folder: {summary.run_dir}")
    where = "all banks' held-out rows" if summary.setup == "horizontal" else "mean over institutions, own rows"
    scores = summary.scores or {}
    print(f"federated ROC-AUC ({where}): {summary.final_auc:.4f}" + _interval(scores.get("federated")))
    for name, aucs in (summary.institutions or {}).items():
        print(
            f"  {name:<14} federated transfer {aucs['federated']:.4f}   alone {_fmt(aucs.get('local_only'))}"
            f"   horizontal on common columns {_fmt(aucs.get('horizontal_common'))}"
        )
    if summary.shared_customers:
        print(
            "shared customers, found by PSI (no raw id exchanged), same train/test side everywhere: "
            + ", ".join(f"{pair} {count:,}" for pair, count in summary.shared_customers.items())
        )
    if summary.centralized_auc is not None:
        print(
            f"centralized non-private ROC-AUC:              {summary.centralized_auc:.4f}"
            + _interval(scores.get("centralized"))
        )
    if summary.local_auc_mean is not None:
        print(
            f"local-only ROC-AUC, mean over banks:          {summary.local_auc_mean:.4f}"
            + _interval(scores.get("local_only_mean"))
        )
    if scores:
        from fedsilo.simulations.report.scores import summary_lines

        print("\n".join(summary_lines(scores)))
    if summary.dp != "off" and result.config.reproducible:
        print(
            f"privacy: NONE in fact. --reproducible seeded the DP noise with --seed {result.config.seed}: "
            f"anyone who knows the seed can regenerate and subtract it, so the accounted ε ≤ {summary.epsilon_max:.3f} "
            f"(δ = {summary.delta:g}) is not a privacy guarantee"
        )
    elif summary.dp != "off":
        print(f"privacy: every bank spent ε ≤ {summary.epsilon_max:.3f} at δ = {summary.delta:g}")
    else:
        print("privacy: none (--no-dp)")
    print(
        "secure aggregation: "
        + (
            "SecAgg+, the host saw only the sum of each round's updates"
            if summary.secure_aggregation == "on"
            else "off (the host saw each update)"
        )
    )
    if mlflow is not None:
        from fedsilo.simulations.tracking import store

        print(f"logged to MLflow: {store(mlflow or None)[0]}, experiment 'fedsilo', run {result.run_dir.name}")


def _interval(metrics: dict | None) -> str:
    """'  (95% CI 0.745 to 0.778)' for a metrics entry's ROC-AUC, or nothing."""
    auc = (metrics or {}).get("roc_auc") or {}
    return "" if auc.get("low") is None else f"  (95% CI {auc['low']:.4f} to {auc['high']:.4f})"


def _fmt(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:.4f}"
