"""Vertical federated learning on the UCI scenario: what the broker gains from the bank's columns, over seeds.

For each seed the real command runs twice, with DP on both sides and without:

    fedsilo simulate --setup vertical --scenario uci --data PATH --epsilon 3 --rounds E --json --vertical-scheme S
    fedsilo simulate --setup vertical --scenario uci --data PATH --rounds E --no-dp --json --vertical-scheme S

Each run reports, on the held-out shared customers, the split model's AUC, the broker
alone (its own columns, same ε) and a centralized non-private model on all columns of
the shared customers; the measured leakage (label inference from the returned
gradients, reconstruction of a bank column from the embeddings); time and bytes per
epoch. Printed: means ± standard errors over seeds, the goals of issue 18 (vertical ≥
alone + 0.05; within 0.03 of centralized; label-inference AUC ≤ 0.55 at ε = 3) and the
DP / plaintext time-per-epoch ratio (same seed, same machine: timings are provisional).

    python bench/vertical.py --data ../shared/data/UCI_Credit_Card.csv [--seeds 0 1 2] [--rounds 3] [--scheme coded|split]
    python bench/vertical.py --data ../shared/data/UCI_Credit_Card.csv --timing [--repeats 5] [--rounds 3]

``--timing`` measures the time goal alone, in ONE process on the same parties (seed the
first of ``--seeds``): three arms, run in turn and in alternating order (ABC, CBA, ...)
``--repeats`` times: the coded scheme with DP (k-RR at ε = 3, OS CSPRNG coins), the
coded scheme without DP, and the split model in plaintext. Each arm is a whole
training (the exchange of codes and ``--rounds`` epochs; the split model's epochs),
timed by wall clock and by this process's CPU time (``time.process_time``, all
threads), divided by the epochs. Printed: medians per arm and the per-repeat ratios
coded-DP / coded-plain and coded-DP / split-plain (mean ± standard error). CPU time is
less sensitive to other processes on the machine than wall time; both stay provisional.

The coded scheme's broker alone is trained without DP (its broker releases nothing); its
bytes per epoch are the one exchange of codes, counted in the first epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedsilo.peers.vertical.coded import (
    DELINQUENCY_K,
    CodeBudget,
    CodedParty,
    CodesReceived,
    delinquency_codes,
    one_hot,
)
from fedsilo.peers.vertical.parties import SplitSpec
from fedsilo.peers.vertical.training import train
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.vertical import DEFAULT_OVERLAP, PARTY, build_parties, pooled_table
from fedsilo.simulations.vertical_coded import _broker_model, exchange


def _run(data: str, seed: int, rounds: int, out: str, private: bool, scheme: str) -> dict:
    command = [
        str(Path(sys.executable).parent / "fedsilo"),
        "simulate",
        "--setup",
        "vertical",
        "--scenario",
        "uci",
        "--data",
        data,
        "--rounds",
        str(rounds),
        "--seed",
        str(seed),
        "--epsilon",
        "3",
        "--out",
        out,
        "--quiet",
        "--json",
        "--vertical-scheme",
        scheme,
    ] + ([] if private else ["--no-dp"])
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    metrics = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())
    v = summary["vertical"]
    epochs = metrics["epochs"]
    return {
        "vertical": v["vertical_auc_shared"],
        "alone": v["alone_auc_shared"],
        "centralized": v["centralized_auc_shared"],
        # coded scheme: the bank receives positions only, one label-independent figure
        "label_norm": v["measured_leakage"].get(
            "label_inference_norm_auc", v["measured_leakage"].get("label_inference_auc")
        ),
        "label_direction": v["measured_leakage"].get(
            "label_inference_direction_auc", v["measured_leakage"].get("label_inference_auc")
        ),
        "reconstruction_r2": v["measured_leakage"]["feature_reconstruction_r2"],
        "seconds_per_epoch": float(np.mean([e["seconds"] for e in epochs])),
        "bytes_per_epoch": float(np.mean([e["bytes_to_holder"] + e["bytes_to_parties"] for e in epochs])),
    }


def _stat(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return f"{a.mean():.4f} ± {se:.4f}"


def _timing(data: str, seed: int, rounds: int, repeats: int) -> None:
    """The time goal: coded with DP, coded without, split plaintext; same process, alternating arms."""
    config = SimulationConfig(setup="vertical", scenario="uci", data=data, rounds=rounds, seed=seed, epsilon=3.0)
    spec = SplitSpec(config.model, tuple(config.hidden), config.embedding_width)
    parties = build_parties(pooled_table(config), config, spec, None, None, DEFAULT_OVERLAP)
    pair, link, holder = parties.alignment.parties[0], parties.holder.links[0], parties.holder
    true_codes = delinquency_codes(parties.bank_raw_aligned)

    def coded(private: bool) -> None:
        budget = CodeBudget(3.0, 3.0, config.delta, config.accountant) if private else None
        bank = CodedParty(PARTY, true_codes, pair.sides, pair.digest, DELINQUENCY_K, budget, SecureNoise())
        receiver = CodesReceived(PARTY, link.shared, link.digest, DELINQUENCY_K)
        receiver.connect(bank.hello())
        released, _ = exchange(bank, receiver, 1, link.positions[holder.train_index], True)
        codes = np.zeros((len(holder.rows), DELINQUENCY_K), dtype=np.float32)
        codes[holder.train_index] = one_hot(released, DELINQUENCY_K)
        train(_broker_model(parties, codes, spec, config, seed=seed + 2), [], rounds, config.batch_size, seed)

    arms = {
        "coded, DP": lambda: coded(True),
        "coded, no DP": lambda: coded(False),
        "split, no DP": lambda: train(holder, [parties.party], rounds, config.batch_size, seed),
    }
    names = list(arms)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            w, c = time.perf_counter(), time.process_time()
            arms[name]()
            wall[name].append((time.perf_counter() - w) / rounds)
            cpu[name].append((time.process_time() - c) / rounds)
        print(f"repeat {repeat}: " + ", ".join(f"{n} {wall[n][-1]:.3f} s wall {cpu[n][-1]:.3f} s CPU" for n in names))
    print(f"\nper epoch, {repeats} repeats, seed {seed}, {rounds} epochs per arm (median wall / median CPU):")
    for name in names:
        print(f"  {name:<14} {np.median(wall[name]):.3f} s / {np.median(cpu[name]):.3f} s")
    for base in ("coded, no DP", "split, no DP"):
        for clock, table in (("wall", wall), ("CPU", cpu)):
            ratio = [d / b for d, b in zip(table["coded, DP"], table[base])]
            print(f"  coded DP / {base:<13} ({clock:<4}) {_stat(ratio)}   goal ≤ 1.3 (provisional timing)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="path to UCI_Credit_Card.csv (never copied)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="epochs of split training")
    parser.add_argument("--scheme", choices=("split", "coded"), default="coded", help="--vertical-scheme")
    parser.add_argument("--timing", action="store_true", help="only the time goal, in one process (see above)")
    parser.add_argument("--repeats", type=int, default=5, help="--timing: repeats of each arm")
    args = parser.parse_args()
    if args.timing:
        _timing(args.data, args.seeds[0], args.rounds, args.repeats)
        return
    runs: dict[str, list[dict]] = {"dp": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-vertical-") as out:
        for seed in args.seeds:
            for kind in ("dp", "plain"):
                runs[kind].append(_run(args.data, seed, args.rounds, out, kind == "dp", args.scheme))
                print(f"seed {seed} {kind}: {runs[kind][-1]}", flush=True)
    for kind, label in (("dp", "ε = 3 per party"), ("plain", "no DP")):
        r = runs[kind]
        print(f"\n{args.scheme} scheme, {label}, {len(r)} seeds, {args.rounds} epochs")
        for key in ("vertical", "alone", "centralized", "label_norm", "label_direction", "reconstruction_r2"):
            print(f"  {key:<18} {_stat([x[key] for x in r])}")
        print(f"  bytes per epoch    {np.mean([x['bytes_per_epoch'] for x in r]):,.0f}")
    dp = runs["dp"]
    gain = [x["vertical"] - x["alone"] for x in dp]
    gap = [x["centralized"] - x["vertical"] for x in dp]
    ratio = [d["seconds_per_epoch"] / p["seconds_per_epoch"] for d, p in zip(dp, runs["plain"])]
    print("\ngoals (issue 18), ε = 3:")
    print(f"  vertical − alone          {_stat(gain)}   goal ≥ +0.05")
    print(f"  centralized − vertical    {_stat(gap)}   goal ≤ 0.03")
    print(f"  label inference AUC       {_stat([x['label_norm'] for x in dp])}   goal ≤ 0.55")
    print(f"  time per epoch DP / plain {_stat(ratio)}   goal ≤ 1.3 (provisional timing)")


if __name__ == "__main__":
    main()
