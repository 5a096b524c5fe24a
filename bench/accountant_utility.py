"""What the tighter accountant buys on UCI: the same federation trained with noise calibrated by PRV and by RDP.

An in-process replay of `fedsilo simulate`'s local-DP FedAvg on the UCI table (the same
banks, encoder, rows, DP plans and `train_round`; plaintext FedAvg weighted by rows in
place of SecAgg+, no Ray), run once per accountant with the same seed, so that the
only difference is the noise multiplier each bank's (ε, δ) buys. Prints, per seed, each
accountant's final ROC-AUC on the pooled held-out rows and the mean noise multiplier,
then the mean AUC gain of PRV over RDP. Use it when `bench/utility.py` (the real
command, on Ray) cannot run; it is a measurement, not a pass/fail test.

    python bench/accountant_utility.py                       # seeds 0,1,2, ε = 3
    python bench/accountant_utility.py --seeds 0 --epsilon 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "UCI_Credit_Card.csv"  # as bench/utility.py


def federated_auc(data: Path, seed: int, epsilon: float, banks: int, accountant: str) -> tuple[float, float]:
    """Final pooled-test AUC and mean noise multiplier of one replayed federation."""
    from fedsilo.peers.client.local_training import limit_threads, train_round
    from fedsilo.peers.data.bank import encode_bank
    from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
    from fedsilo.peers.evaluation import evaluate
    from fedsilo.peers.job import plan_dp
    from fedsilo.peers.models import build_model, get_weights, set_weights
    from fedsilo.simulations import baselines
    from fedsilo.simulations.banks import build_population
    from fedsilo.simulations.config import build_config

    limit_threads()
    config = build_config(
        None,
        {
            "data": str(data),
            "label": "Y",
            "id_column": "ID",
            "banks": banks,
            "partition": "dirichlet:0.5",
            "epsilon": epsilon,
            "seed": seed,
            "accountant": accountant,
        },
    )
    with tempfile.TemporaryDirectory(prefix="accountant-utility-") as work:
        population = build_population(config, Path(work))
        frames = [population.frame(i) for i in range(banks)]
    encoder = TabularEncoder.fit([BankSummary.from_frame(f, config.label_column) for f in frames], config.label_column)
    tensors = [encode_bank(f, encoder, config.test_fraction, config.seed) for f in frames]
    everyone = baselines.pooled(tensors)
    job = config.job(job_id="replay")
    model = build_model(job.model, encoder.n_features, seed=job.train.seed)
    weights = get_weights(model)
    history: list[list] = [[] for _ in range(banks)]
    for server_round in range(1, job.train.rounds + 1):
        results = []
        for bank, data_ in enumerate(tensors):
            result = train_round(job, data_, weights, history[bank], server_round, bank)
            history[bank].append(result.mechanism)
            results.append(result)
        total = sum(r.num_examples for r in results)
        weights = {k: sum(r.weights[k] * (r.num_examples / total) for r in results) for k in weights}
    set_weights(model, weights)
    sigma = statistics.mean(plan_dp(job, t.n_train).noise_multiplier for t in tensors)
    return float(evaluate(model, everyone.x_test, everyone.y_test)["auc"]), sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--banks", type=int, default=10)
    args = parser.parse_args()
    print(f"data: {args.data} ({args.banks} banks, dirichlet:0.5, ε = {args.epsilon:g}, δ = 1e-5 per bank)")
    print(f"{'seed':<6}{'AUC prv':>9}{'AUC rdp':>9}{'gain':>8}{'σ prv':>8}{'σ rdp':>8}", flush=True)
    gains = []
    for seed in (int(s) for s in args.seeds.split(",")):
        prv, sigma_prv = federated_auc(args.data, seed, args.epsilon, args.banks, "prv")
        rdp, sigma_rdp = federated_auc(args.data, seed, args.epsilon, args.banks, "rdp")
        gains.append(prv - rdp)
        print(f"{seed:<6}{prv:>9.4f}{rdp:>9.4f}{prv - rdp:>+8.4f}{sigma_prv:>8.3f}{sigma_rdp:>8.3f}", flush=True)
    spread = f" ± {statistics.stdev(gains):.4f}" if len(gains) > 1 else ""
    print(f"PRV − RDP federated AUC, mean over {len(gains)} seeds: {np.mean(gains):+.4f}{spread}")


if __name__ == "__main__":
    main()
