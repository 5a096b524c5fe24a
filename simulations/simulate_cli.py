"""`fedsilo simulate`: N simulated banks train a shared model, on the Python API.

The flags map onto `fedsilo.simulations.api.simulate` (exported as `fedsilo.simulate`);
the handler imports torch, Flower and Ray only after the cheap input checks, so a
refused input answers at once.
"""

from __future__ import annotations

import argparse

from fedsilo.simulations import audit_privacy_cli


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fedsilo simulate` to the command line's subparsers."""
    p = sub.add_parser(
        "simulate",
        help="simulate N banks training one model with DP-SGD on Flower",
        description="Simulate N banks, each training on its own rows with DP-SGD (Opacus), aggregated with "
        "Flower's Simulation Engine. With no flags: 5 synthetic banks, 10 rounds, ε = 3 per bank.",
        epilog="Every flag has a TOML key (see README): [simulation] banks, rounds, seed, out, strategy, compare; "
        "[data] path, label, positive, id-column, keep-columns, partition, customers; [model] kind, hidden; "
        "[train] local-epochs, batch-size, lr, test-fraction; [dp] mode, epsilon, delta, max-grad-norm, "
        "accountant; [secagg] mode, clip, dropout-fraction, collusion-fraction; [simulation] dropout, audit, "
        "sample, dropout-concentration, yardstick-banks, ray-address, cpus-per-bank.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with defaults for any flag below")
    p.add_argument("--banks", type=int, metavar="N", help="number of banks (default 5)")
    p.add_argument("--rounds", type=int, metavar="R", help="federated rounds (default 10)")
    p.add_argument(
        "--sample",
        metavar="K|F",
        help="banks sampled per round: a count (100) or a fraction in (0, 1] (0.1); default all",
    )
    p.add_argument(
        "--data", metavar="PATH", help="your CSV or Parquet file (default: the embedded synthetic generator)"
    )
    p.add_argument("--label", metavar="COL", help="target column of --data (two values)")
    p.add_argument(
        "--positive",
        metavar="VALUE",
        help="the label value that means the event to predict, e.g. bad (needed for text labels)",
    )
    p.add_argument("--id-column", metavar="COL", help="row id column of --data, kept out of the features")
    p.add_argument(
        "--keep-column",
        metavar="COL",
        action="append",
        dest="keep_columns",
        help="use this id-like column (a distinct value on every row) as a feature; repeatable",
    )
    p.add_argument(
        "--partition",
        metavar="SPEC",
        help="how rows are split into banks: iid, dirichlet:ALPHA (label skew), quantity:ALPHA (size skew)",
    )
    p.add_argument(
        "--customers",
        type=int,
        metavar="N",
        help="synthetic customers across all banks (default max(5000, 200 per bank): small banks, 3-10 %% defaults)",
    )
    p.add_argument("--model", choices=["mlp", "logreg", "gbdt"], help="model family (default mlp)")
    p.add_argument("--trees", type=int, help="--model gbdt: number of trees (default 30)")
    p.add_argument("--depth", type=int, help="--model gbdt: depth of each tree (default 2)")
    p.add_argument("--bins", type=int, help="--model gbdt: histogram bins per numeric column (default 16)")
    p.add_argument(
        "--features-per-tree",
        type=int,
        metavar="K",
        help="--model gbdt: each tree splits on K columns drawn at random (lower DP noise; default 0: all)",
    )
    p.add_argument("--hidden", metavar="W,W", help="MLP layer widths (default 64,32)")
    p.add_argument("--strategy", choices=["fedavg", "fedadam"], help="aggregation (default fedavg)")
    p.add_argument("--local-epochs", type=int, metavar="E", help="local epochs per round (default 1)")
    p.add_argument("--batch-size", type=int, metavar="B", help="expected Poisson batch size (default 128)")
    p.add_argument("--lr", type=float, help="local learning rate (default 0.5)")
    p.add_argument("--epsilon", type=float, metavar="E", help="ε each bank may spend on the whole job (default 3)")
    p.add_argument("--delta", type=float, metavar="D", help="δ of each bank's guarantee (default 1e-5)")
    p.add_argument("--max-grad-norm", type=float, metavar="C", help="per-example gradient clipping bound (default 1)")
    p.add_argument(
        "--dp",
        choices=["local", "distributed", "off"],
        dest="dp_mode",
        help="local: DP-SGD at every bank (default); distributed: noise shares inside secure "
        "aggregation, one full-batch step per round (use more rounds); off: no DP",
    )
    p.add_argument("--no-dp", action="store_true", help="same as --dp off (a non-private baseline)")
    p.add_argument(
        "--secure-aggregation",
        choices=["on", "off"],
        dest="secure_aggregation",
        help="SecAgg+ secure aggregation of every round (default on); off: plaintext baseline",
    )
    p.add_argument(
        "--dropout",
        type=float,
        metavar="F",
        help="share of banks that vanish at a random stage of each round (default 0)",
    )
    p.add_argument(
        "--dropout-concentration",
        type=float,
        metavar="K",
        help="spread of the banks' own dropout probabilities, Beta(K·F, K·(1−F)) around --dropout F "
        "(default 0: every bank drops with probability F)",
    )
    p.add_argument(
        "--yardstick-banks",
        type=int,
        metavar="N",
        help="banks whose held-out rows score the model and train the yardsticks (default 100; "
        "all banks when fewer); local-only runs on the first 20 of them",
    )
    p.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="run on an existing Ray cluster (its head's address, or 'auto'); default: a private "
        "Ray runtime on this machine's cores",
    )
    p.add_argument(
        "--cpus-per-bank",
        type=float,
        metavar="C",
        help="Ray CPUs one virtual bank claims (default 1: one bank per core at a time)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of data, partitions, splits and initial models (default 0); DP noise and sampling "
        "are secret (OS CSPRNG) unless --reproducible",
    )
    p.add_argument(
        "--reproducible",
        action="store_true",
        default=None,
        help="research mode: DP noise and sampling seeded by --seed too, so the run replays exactly; "
        "its noise can then be replayed by anyone with the seed and its ε is NOT a privacy "
        "guarantee (TOML: [simulation] reproducible = true)",
    )
    p.add_argument("--out", metavar="DIR", help="where run folders are created (default ./runs)")
    p.add_argument(
        "--compare",
        metavar="LIST",
        help="yardsticks trained in the same run: centralized,local (horizontal default); local,common (transfer default: each institution alone, and a horizontal run on the columns all share); or none",
    )
    p.add_argument(
        "--setup",
        choices=["horizontal", "transfer"],
        help="horizontal: same columns everywhere (default); transfer: each institution its own columns",
    )
    p.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        help="transfer institutions and their columns: a TOML file, or 'uci' for the UCI file "
        "(default with the generator: bank, card issuer, broker)",
    )
    p.add_argument(
        "--overlap",
        type=float,
        metavar="P",
        help="transfer: customers shared between institutions (each is also a client of another with "
        "probability P); their train/test side is agreed by PSI, no raw id exchanged (default: "
        "the scenario's, 0)",
    )
    p.add_argument(
        "--shared",
        metavar="PREFIXES",
        help="aggregated parameters by name prefix (transfer default: hidden,head; "
        "'hidden' keeps each institution's head private)",
    )
    p.add_argument("--base-model", metavar="FILE", help="start from a .safetensors model of an earlier run")
    p.add_argument("--freeze", metavar="PREFIXES", help="parameters not to train (with --base-model), e.g. hidden1")
    p.add_argument(
        "--audit",
        action="store_true",
        default=None,
        help="after the run, measure its privacy leakage as `fedsilo audit-privacy RUN_DIR` does "
        "(horizontal setup; TOML: [simulation] audit = true)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="log the run to MLflow: parameters, per-round metrics and ε, artefacts (default store: "
        "./mlruns, no server; needs pip install 'fedsilo[mlflow]')",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=run_simulate)


OVERRIDABLE = (
    "banks",
    "rounds",
    "data",
    "label",
    "id_column",
    "partition",
    "customers",
    "model",
    "hidden",
    "trees",
    "depth",
    "bins",
    "features_per_tree",
    "strategy",
    "local_epochs",
    "batch_size",
    "lr",
    "epsilon",
    "delta",
    "max_grad_norm",
    "seed",
    "out",
    "compare",
    "dp_mode",
    "secure_aggregation",
    "dropout",
    "setup",
    "scenario",
    "shared",
    "freeze",
    "base_model",
    "audit",
    "overlap",
    "sample",
    "dropout_concentration",
    "yardstick_banks",
    "ray_address",
    "cpus_per_bank",
    "reproducible",
    "positive",
    "keep_columns",
)


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
