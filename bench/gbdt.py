"""Federated DP histogram GBDT on real data: utility against its yardsticks, time against a plain federation.

For each seed, through the Python API (`fedsilo.simulate(model="gbdt", ...)`, as
`fedsilo simulate --model gbdt`):

1. the federated DP run: 10 banks, `dirichlet:0.5`, every histogram release under SecAgg+
   with distributed discrete Gaussian noise, each bank (ε, 1e-5)-DP; with the
   yardsticks: centralized non-private histogram GBDT (scikit-learn's
   HistGradientBoostingClassifier on the pooled rows) and each bank alone with the
   same DP (its own Gaussian noise at the same multiplier);
2. the same trees grown by a non-private federation *without* secure aggregation
   (the host adds the banks' plain histograms: the shape of Flower's XGBoost
   examples), for the time ratio; its ROC-AUC is printed too (the cost of DP).

Prints per seed the pooled held-out ROC-AUC of each, then the means and the goal
margins of issue 20 (federated ≥ 0.77; ≥ each bank alone + 0.03) and the ratio of
training times (federated SecAgg+ DP / plain), measured in the same process. A
measurement, not a pass/fail test; the machine is shared, so times are provisional.

    python bench/gbdt.py                                     # ../shared/data/UCI_Credit_Card.csv, seed 0
    python bench/gbdt.py --data /work/shared/data/UCI_Credit_Card.csv --seeds 0,1,2   # `--model gbdt`'s defaults:
        # 30 trees of depth 2, 16 bins, lr 0.5, 6 columns per tree
    python bench/gbdt.py --seeds 0,1,2 --repeats 3 --splits random --trees 1000 --depth 3 --lr 0.06
        # random splits, three DP runs per seed (a single run's ROC-AUC varies by about ±0.003)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from _gbdt_common import arguments, centralized_seconds, simulate_settings


def main() -> None:
    # the defaults of `fedsilo simulate --model gbdt`
    parser = arguments(
        argparse.ArgumentParser(description=__doc__.splitlines()[0]), trees=30, depth=2, lr=0.5, features_per_tree=6
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="federated DP runs per seed (fresh noise each): the seed's figure is their mean, printed with each run",
    )
    args = parser.parse_args()

    import fedsilo

    common = simulate_settings(args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-gbdt-") as out:
        for seed in (int(s) for s in args.seeds.split(",")):
            dp = fedsilo.simulate(
                **common,
                seed=seed,
                out=out,
                dp_mode="distributed",
                epsilon=args.epsilon,
                compare="centralized,local",
            )
            plain = fedsilo.simulate(
                **common, seed=seed, out=out, dp_mode="off", secure_aggregation="off", compare="none"
            )
            again = [
                fedsilo.simulate(
                    **common, seed=seed, out=out, dp_mode="distributed", epsilon=args.epsilon, compare="none"
                ).summary.final_auc
                for _ in range(args.repeats - 1)
            ]
            card = json.loads((dp.run_dir / "model_card.json").read_text())
            plain_card = json.loads((plain.run_dir / "model_card.json").read_text())
            locals_ = [p["local_only_auc_pooled_test"] for p in card["participants"]]
            row = {
                "seed": seed,
                "federated_dp": statistics.fmean([dp.summary.final_auc, *again]),
                "federated_dp_runs": [dp.summary.final_auc, *again],
                "centralized": dp.summary.centralized_auc,
                "alone_mean": statistics.fmean(locals_),
                "alone_best": max(locals_),
                "plain_federation": plain.summary.final_auc,
                "epsilon_max": dp.summary.epsilon_max,
                "seconds_dp_secagg": card["metrics"]["train_seconds"],
                "seconds_plain": plain_card["metrics"]["train_seconds"],
                "seconds_centralized": centralized_seconds(args, seed),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k not in ("seed", "federated_dp_runs")}
    runs = [v for r in rows for v in r["federated_dp_runs"]]
    spread = statistics.stdev(runs) / len(runs) ** 0.5 if len(runs) > 1 else 0.0
    print(
        f"\nUCI, {args.banks} banks, dirichlet:0.5, {args.trees} trees of depth {args.depth}, {args.bins} bins, "
        f"lr {args.lr}, {args.features_per_tree or 'all'} columns per tree, {args.splits} splits, ε = {args.epsilon} per bank, seeds {args.seeds}: pooled held-out ROC-AUC (means)"
    )
    print(
        f"  federated, SecAgg+ + distributed DP   {mean['federated_dp']:.4f}   (± {spread:.4f} over {len(runs)} runs; "
        f"ε max {mean['epsilon_max']:.3f})"
    )
    print(f"  centralized non-private (sklearn HGB) {mean['centralized']:.4f}")
    print(f"  each bank alone, same DP: mean        {mean['alone_mean']:.4f}   best {mean['alone_best']:.4f}")
    print(f"  federated non-private, no SecAgg      {mean['plain_federation']:.4f}")
    print(
        f"goal margins: federated − 0.77 = {mean['federated_dp'] - 0.77:+.4f}; "
        f"federated − (best bank alone + 0.03) = {mean['federated_dp'] - mean['alone_best'] - 0.03:+.4f}"
    )
    print(
        f"training time (provisional, shared machine): SecAgg+ DP {mean['seconds_dp_secagg']:.1f} s, "
        f"plain {mean['seconds_plain']:.1f} s, ratio {mean['seconds_dp_secagg'] / mean['seconds_plain']:.1f}x; "
        f"centralized scikit-learn HGB {mean['seconds_centralized']:.2f} s "
        f"(secure / centralized {mean['seconds_dp_secagg'] / mean['seconds_centralized']:.1f}x, "
        f"plain / centralized {mean['seconds_plain'] / mean['seconds_centralized']:.1f}x)"
    )


if __name__ == "__main__":
    main()
