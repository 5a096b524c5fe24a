"""DP-SGD overhead: epoch time of `fedsilo.privacy.dpsgd.DPSGDTrainer` over a plain SGD epoch.

Both loops run in this process on the same encoded credit table, the same model
(`fedsilo.peers.models.build_model(ModelSpec("mlp", (64, 32)), n_features)`), the same expected
batch size and the same number of steps, with Poisson sampling (one Bernoulli mask, turned into row indices). The
baseline is the leanest honest non-private loop: forward, mean BCE loss,
`torch.autograd.grad`, one fused `torch._foreach_add_` SGD update; no Opacus.

Each timed repetition builds a fresh model and runs whole epochs (at least
`--min-steps` steps); the loops take turns within a repetition so that a change in the
machine's load hits them alike; after `--warmup` untimed rounds, the median of
`--reps` repetitions is reported per loop. Also measured, for reference: the trainer
in non-private mode (it should match the baseline), the trainer with the research
mode's seeded torch generators (`dpsgd_seeded`: the noise path before secret noise) —
`secret_noise_cost=` is the ratio of the default (ChaCha20 from os.urandom, four
Box–Muller samples per noise value) to it — and the trainer on Opacus'
`GradSampleModule` + `DPOptimizer` backend (the "before" figure of the ghost path).

Everything is measured with torch.set_num_threads(1) (a peer runs one intra-op thread
per worker) and with torch's default thread count. The last line is the one-thread
ratio, `dp_overhead_ratio=…`. This is a measurement, not a pass/fail test.

    python bench/dp_overhead.py                      # synthetic consortium, 20,000 rows
    python bench/dp_overhead.py --rows 2400          # one bank's size (UCI / 10 banks)
    python bench/dp_overhead.py --data ../shared/data/UCI_Credit_Card.csv --label Y --id-column ID
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.models import ModelSpec, build_model
from fedsilo.privacy.dpsgd import DPSGDConfig, DPSGDTrainer, steps_per_epoch
from fedsilo.privacy.noise_source import SeededNoise

MODEL = ModelSpec("mlp", (64, 32))
LR = 0.5
MAX_GRAD_NORM = 1.0
NOISE_MULTIPLIER = 1.0  # the value does not change the work done


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The encoded table (float32 features, 0/1 labels) and a one-line description."""
    if args.data:
        from fedsilo.simulations.data.loader import load_table

        table = load_table(args.data, label=args.label, id_column=args.id_column)
        label, source = args.label, f"{Path(args.data).name}"
        frames = [table]
    else:
        from fedsilo.simulations.data.synthetic import LABEL, generate_consortium

        frames = generate_consortium(args.banks, seed=args.seed)
        table = pd.concat(frames, ignore_index=True)
        label, source = LABEL, f"synthetic consortium ({args.banks} banks, seed {args.seed})"
    encoder = TabularEncoder.fit_frames(frames, label)
    features, labels = encoder.transform(table)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    if args.rows and args.rows < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))[: args.rows]
        x, y = x[keep], y[keep]
        source += f", {args.rows} random rows"
    return x.contiguous(), y.contiguous(), source


def plain_sgd_epochs(x: torch.Tensor, y: torch.Tensor, q: float, epochs: int, seed: int) -> None:
    """The non-private baseline: same sampling, same model, plain SGD, no Opacus."""
    model = build_model(MODEL, x.shape[1], seed=seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = nn.BCEWithLogitsLoss()
    sampling = SeededNoise(seed)
    n = x.shape[0]
    for _ in range(epochs * steps_per_epoch(q)):
        rows = sampling.poisson_rows(n, q)
        if rows.numel() == 0:
            continue
        loss = loss_fn(model(x.index_select(0, rows)).squeeze(-1), y.index_select(0, rows))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-LR)
        float(loss.detach())  # the trainer reads the loss every step too


def trainer_epochs(private: bool, backend: str = "auto", seeded: bool = False) -> Callable[..., None]:
    def run(x: torch.Tensor, y: torch.Tensor, q: float, epochs: int, seed: int) -> None:
        model = build_model(MODEL, x.shape[1], seed=seed)
        config = DPSGDConfig(
            lr=LR,
            max_grad_norm=MAX_GRAD_NORM,
            noise_multiplier=NOISE_MULTIPLIER if private else 0.0,
            sample_rate=q,
            private=private,
        )
        DPSGDTrainer(model, config, reproducible_seed=seed if seeded else None, backend=backend).train(
            x, y, epochs=epochs
        )

    return run


def measure(
    loops: dict[str, Callable[..., None]],
    x: torch.Tensor,
    y: torch.Tensor,
    q: float,
    epochs: int,
    warmup: int,
    reps: int,
) -> dict[str, float]:
    """Median seconds per epoch of each loop; the loops take turns in every repetition."""
    times: dict[str, list[float]] = {name: [] for name in loops}
    for rep in range(warmup + reps):
        for name, loop in loops.items():
            start = time.perf_counter()
            loop(x, y, q, epochs, seed=rep)
            elapsed = time.perf_counter() - start
            if rep >= warmup:
                times[name].append(elapsed / epochs)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="CSV/Parquet credit table (default: the embedded synthetic generator)")
    parser.add_argument("--label", default="Y", help="label column of --data (default Y, as in UCI_Credit_Card.csv)")
    parser.add_argument("--id-column", default=None, help="row id column of --data, dropped")
    parser.add_argument("--banks", type=int, default=5, help="synthetic banks pooled (default 5: 20,000 rows)")
    parser.add_argument("--rows", type=int, default=0, help="time on this many random rows (e.g. one bank's size)")
    parser.add_argument("--batch-size", type=int, default=128, help="expected Poisson batch (default 128)")
    parser.add_argument("--min-steps", type=int, default=300, help="at least this many steps per repetition")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-opacus", action="store_true", help="skip the (slow) Opacus reference backend")
    args = parser.parse_args(argv)

    x, y, source = load_data(args)
    n = x.shape[0]
    q = min(1.0, args.batch_size / n)
    epochs = max(1, math.ceil(args.min_steps / steps_per_epoch(q)))
    default_threads = torch.get_num_threads()
    loops: dict[str, Callable[..., None]] = {
        "sgd_baseline": plain_sgd_epochs,
        "trainer_nonprivate": trainer_epochs(private=False),
        "dpsgd": trainer_epochs(private=True),
        "dpsgd_seeded": trainer_epochs(private=True, seeded=True),
    }
    if not args.no_opacus:
        loops["dpsgd_opacus_backend"] = trainer_epochs(private=True, backend="opacus")

    print(f"data: {source}: {n} rows x {x.shape[1]} features; model mlp {MODEL.hidden}")
    print(
        f"batch {args.batch_size} expected (q={q:.5f}), {steps_per_epoch(q)} steps/epoch, "
        f"{epochs} epoch(s) per repetition, {args.warmup} warm-up + {args.reps} timed repetitions, median"
    )
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads by default, torch {torch.__version__}"
    )
    ratios: dict[int, float] = {}
    secret_cost: dict[int, float] = {}
    for threads in (default_threads, 1) if default_threads != 1 else (1,):
        torch.set_num_threads(threads)
        medians = measure(loops, x, y, q, epochs, args.warmup, args.reps)
        base = medians["sgd_baseline"]
        print(f"-- torch threads = {threads}")
        for name, seconds in medians.items():
            print(
                f"   {name:<22} {seconds * 1e3:8.1f} ms/epoch  {seconds / steps_per_epoch(q) * 1e6:7.1f} us/step"
                f"  x{seconds / base:.2f}"
            )
        ratios[threads] = medians["dpsgd"] / base
        secret_cost[threads] = medians["dpsgd"] / medians["dpsgd_seeded"]
    torch.set_num_threads(default_threads)
    if default_threads != 1:
        print(f"dp_overhead_ratio_threads{default_threads}={ratios[default_threads]:.2f}")
    print(f"secret_noise_cost={secret_cost[1]:.2f} (dpsgd / dpsgd_seeded, one thread)")
    print(f"dp_overhead_ratio={ratios[1]:.2f}")


if __name__ == "__main__":
    main()
