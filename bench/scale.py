"""Many banks on one machine: fedsilo (DP-SGD + SecAgg+) against Flower's plain FedAvg.

One run measures, each in its own child process (so that the peak RSS is that of one
whole process tree: the driver, Ray's raylet/GCS and every worker):

1. baseline: Flower's own Simulation Engine (`flwr.simulation.run_simulation`) with
   Flower's plain `FedAvg`, N banks, R rounds, K sampled per round, the same MLP and
   the same synthetic banks (each generated on first use inside its worker, as fedsilo
   does), plain SGD for one local epoch, evaluation on the sampled banks;
2. fedsilo: `fedsilo simulate --banks N --sample K --rounds R --compare none` (local
   DP-SGD at ε = 3, SecAgg+ secure aggregation, ledger, model card, plots);
3. big: the same fedsilo run with 10,000 banks and 3 rounds.

Figures (printed last): wall time, seconds per round, CPU seconds and peak RSS of the
process tree, the load average at the end of each run, and fedsilo / Flower ratios.
Goals (issue 8): fedsilo ≤ 2× Flower's time, peak RSS ≤ 3 GiB. The noise calibrations
and per-step RDP vectors fedsilo needs are cached on disk (`fedsilo.privacy.accounting.store`);
the script reports how many were cached at the start. The machine's CPU is shared: run
it when the load is low, and read the load average printed with the figures (the CPU
seconds move far less with the load than the wall time).

    python bench/scale.py                 # 1,000 banks × 10 rounds, 100 per round; then 10,000 × 3
    python bench/scale.py --skip-big      # only the comparison
    python bench/scale.py --cold          # every fedsilo run on an empty accounting cache
    python bench/scale.py --only accounting --cold   # only the accounting of that run: PRV and RDP, CPU s

`--cold` gives each fedsilo child its own new, empty directory as `FEDSILO_CACHE` (the
accounting cache, `fedsilo.privacy.accounting.store`), removed afterwards: what a user's first
run on a new machine computes. `--only accounting` measures just that computation (the
population's noise calibrations, one round's ε and per-step RDP per sampling rate, as
`fedsilo.simulations.runner` warms them before the engine starts, then the ε of 2 and 3 rounds
at each rate, as peers and ledgers reach them), once with each accountant, each in its
own cold-cache child: CPU seconds, which the machine's load moves little.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- measuring a process tree
def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (psutil if installed, else /proc)."""
    try:
        import psutil

        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    except ImportError:
        return _proc_tree_rss(pid)


def _proc_tree_rss(pid: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total


def _tree_cpu_seconds(pid: int, seen: dict[int, float]) -> None:
    """Update `seen` (pid -> user + system CPU seconds so far) for `pid` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    stack = [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            seen[current] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue


def measure(argv: list[str], label: str, cold: bool = False) -> dict:
    """Run this script as a child with `argv`; its wall time, peak tree RSS, CPU seconds and JSON result.

    CPU seconds are the user + system time of every process of the tree, as last seen
    by the 0.25 s sampling (a process's last quarter second may be missed): on a shared
    machine they move far less with the load than the wall time does."""
    print(f"• {label} ...", file=sys.stderr, flush=True)
    out = tempfile.NamedTemporaryFile(prefix="scale-", suffix=".json", delete=False).name
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cache = tempfile.mkdtemp(prefix="scale-cold-cache-") if cold else None
    if cache:
        env["FEDSILO_CACHE"] = cache  # new and empty: nothing calibrated or composed yet
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--child", out, *argv], env=env)
    peak, cpu = 0, {}
    while child.poll() is None:
        peak = max(peak, _tree_rss(child.pid))
        _tree_cpu_seconds(child.pid, cpu)
        time.sleep(0.25)
    wall = time.perf_counter() - started
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    if child.returncode != 0:
        raise SystemExit(f"{label} failed with exit status {child.returncode}")
    result = {
        **json.loads(Path(out).read_text()),
        "label": label,
        "wall_s": wall,
        "peak_rss_gib": peak / 2**30,
        "cpu_s": sum(cpu.values()),
        "load_end": os.getloadavg()[0],
    }
    Path(out).unlink()
    print(
        f"  {label}: {wall:.1f} s, {result['cpu_s']:.1f} CPU s, peak RSS {peak / 2**30:.2f} GiB, "
        f"load average {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------- the children
def child_fedsilo(banks: int, rounds: int, sample: int, out: str) -> dict:
    from fedsilo.simulations.config import build_config
    from fedsilo.simulations.progress import Progress
    from fedsilo.simulations.runner import simulate

    config = build_config(
        None, {"banks": banks, "rounds": rounds, "sample": str(sample), "compare": "none", "out": out}
    )
    started = time.perf_counter()
    summary = simulate(config, Progress(quiet=True))
    return {"run_s": time.perf_counter() - started, "final_auc": summary.final_auc, "epsilon_max": summary.epsilon_max}


def child_accounting(banks: int, rounds: int, accountant: str) -> dict:
    """The accounting a fedsilo run of this population does, without the engine (see the module doc)."""
    from fedsilo.peers.job import plan_dp
    from fedsilo.privacy.accounting import epsilon_spent
    from fedsilo.privacy.accounting.planning import grid_sample_rate
    from fedsilo.simulations.banks import build_population
    from fedsilo.simulations.config import build_config
    from fedsilo.simulations.progress import Progress
    from fedsilo.simulations.runner import _warm_dp_plans

    config = build_config(None, {"banks": banks, "rounds": rounds, "accountant": accountant})
    with tempfile.TemporaryDirectory(prefix="scale-accounting-") as work:
        sizes = build_population(config, Path(work)).sizes()
    job = config.job(job_id="accounting")

    def cpu_seconds() -> float:  # this process and its finished children (the calibration pool)
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    started, cpu = time.perf_counter(), cpu_seconds()
    _warm_dp_plans(job, sizes, config.test_fraction, Progress(quiet=True))
    warm_s = time.perf_counter() - started
    rows = {int(n) - round(config.test_fraction * int(n)) for n in set(sizes.tolist())}
    by_rate = {grid_sample_rate(job.train.batch_size, n): n for n in rows if n >= 1}
    sigmas = {}
    for q, n in sorted(by_rate.items()):
        plan = plan_dp(job, n)
        sigmas[repr(q)] = plan.noise_multiplier
        for k in (2, 3):
            epsilon_spent([plan.per_round] * k, job.dp.delta, accountant)
    return {
        "run_s": time.perf_counter() - started,
        "warm_s": warm_s,
        "rates": len(by_rate),
        "accounting_cpu_s": cpu_seconds() - cpu,
        "sigmas": sigmas,
    }


def child_flower(banks: int, rounds: int, sample: int, work: str) -> dict:
    """Flower's plain FedAvg on the same banks and model (no DP, no secure aggregation)."""
    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedsilo.peers.data.bank import encode_bank
    from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
    from fedsilo.peers.models import ModelSpec, build_model
    from fedsilo.simulations.banks import build_population
    from fedsilo.simulations.config import build_config
    from fedsilo.simulations.engine import backend_config
    from fedsilo.simulations.population import yardstick_sample

    config = build_config(None, {"banks": banks})
    population = build_population(config, Path(work))
    population_path = str(population.save(Path(work) / "population.pickle"))
    chosen = yardstick_sample(banks, config.yardstick_banks, config.seed)
    encoder = TabularEncoder.fit([BankSummary.from_frame(population.frame(i), "default") for i in chosen], "default")
    encoder_json = encoder.to_json()
    spec = ModelSpec()

    def bank_tensors(index: int):
        from functools import lru_cache

        @lru_cache(maxsize=256)
        def load(i: int):
            from fedsilo.simulations.population import load_population

            frame = load_population(population_path).frame(i)
            return encode_bank(frame, TabularEncoder.from_json(encoder_json), 0.2, 0)

        return load(index)

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch

        torch.set_num_threads(1)
        data = bank_tensors(int(context.node_config["partition-id"]))
        model = build_model(spec, data.x_train.shape[1])
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for batch in torch.randperm(data.n_train).split(128):
            optimizer.zero_grad()
            loss_fn(model(data.x_train[batch]).squeeze(-1), data.y_train[batch]).backward()
            optimizer.step()
        return Message(
            RecordDict(
                {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": data.n_train})}
            ),
            reply_to=msg,
        )

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        import torch

        from fedsilo.peers.evaluation import evaluate as score

        torch.set_num_threads(1)
        data = bank_tensors(int(context.node_config["partition-id"]))
        model = build_model(spec, data.x_test.shape[1])
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        result = score(model, data.x_test, data.y_test)
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": data.n_test, "auc": result["auc"]})}), reply_to=msg
        )

    server_app = ServerApp()
    outcome: dict = {}

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        fraction = sample / banks
        strategy = FedAvg(
            fraction_train=fraction,
            fraction_evaluate=fraction,
            min_train_nodes=sample,
            min_evaluate_nodes=sample,
            min_available_nodes=banks,
        )
        initial = ArrayRecord(build_model(spec, encoder.n_features).state_dict())
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
        outcome["auc"] = float(result.evaluate_metrics_clientapp.get(rounds, {}).get("auc", np.nan))

    started = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=banks, backend_config=backend_config())
    return {"run_s": time.perf_counter() - started, "final_auc": outcome.get("auc")}


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--big-banks", type=int, default=10_000)
    parser.add_argument("--big-rounds", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument(
        "--only",
        choices=["compare", "big", "accounting"],
        help="compare: only Flower vs fedsilo at --banks; big: only the --big-banks run; "
        "accounting: only the accounting of the --banks run, PRV against RDP",
    )
    parser.add_argument(
        "--cold", action="store_true", help="run every fedsilo child on a new, empty accounting cache (FEDSILO_CACHE)"
    )
    parser.add_argument("--child", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--kind", choices=["flower", "fedsilo", "accounting-prv", "accounting-rdp"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.child:
        if args.kind.startswith("accounting-"):
            result = child_accounting(args.banks, args.rounds, args.kind.removeprefix("accounting-"))
        else:
            with tempfile.TemporaryDirectory(prefix="scale-bench-") as work:
                run = child_flower if args.kind == "flower" else child_fedsilo
                result = run(args.banks, args.rounds, args.sample, work)
        Path(args.child).write_text(json.dumps(result))
        return

    if args.only == "accounting":
        runs = {
            name: measure(
                ["--kind", f"accounting-{name}", "--banks", str(args.banks), "--rounds", str(args.rounds)],
                f"accounting ({name}) of {args.banks} banks × {args.rounds} rounds",
                cold=True,
            )
            for name in ("rdp", "prv")
        }
        print()
        print(
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (CPU shared); "
            "each run on a new, empty FEDSILO_CACHE"
        )
        print(f"{'accountant':<12}{'rates':>6}{'warm-up s':>11}{'accounting s':>14}{'its CPU s':>11}{'load':>6}")
        for name, r in runs.items():
            print(
                f"{name:<12}{r['rates']:>6}{r['warm_s']:>11.1f}{r['run_s']:>14.1f}{r['accounting_cpu_s']:>11.1f}"
                f"{r['load_end']:>6.1f}"
            )
        noise = [runs["prv"]["sigmas"][q] / runs["rdp"]["sigmas"][q] for q in runs["rdp"]["sigmas"]]
        print(f"PRV / RDP noise multiplier at the same ε: {min(noise):.3f} to {max(noise):.3f}")
        print(
            f"PRV / RDP cold accounting CPU time: "
            f"{runs['prv']['accounting_cpu_s'] / runs['rdp']['accounting_cpu_s']:.2f}×"
        )
        return

    from fedsilo.privacy.accounting import store

    cached = {kind: len(list((store.root() / kind).glob("*.json"))) for kind in ("noise-calibration", "rdp-per-step")}
    common = ["--banks", str(args.banks), "--rounds", str(args.rounds), "--sample", str(args.sample)]
    flower = fedsilo = big = None
    if args.only != "big":
        flower = measure(
            ["--kind", "flower", *common], f"Flower plain FedAvg: {args.banks} banks × {args.rounds} rounds"
        )
        fedsilo = measure(
            ["--kind", "fedsilo", *common],
            f"fedsilo DP + SecAgg+: {args.banks} banks × {args.rounds} rounds",
            cold=args.cold,
        )
    if not args.skip_big and args.only != "compare":
        big = measure(
            [
                "--kind",
                "fedsilo",
                "--banks",
                str(args.big_banks),
                "--rounds",
                str(args.big_rounds),
                "--sample",
                str(args.sample),
            ],
            f"fedsilo DP + SecAgg+: {args.big_banks} banks × {args.big_rounds} rounds",
            cold=args.cold,
        )

    print()
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (CPU shared); "
        + (
            "fedsilo ran on a new, empty accounting cache (--cold)"
            if args.cold
            else f"accounting cache held {cached['noise-calibration']} noise calibrations and "
            f"{cached['rdp-per-step']} RDP vectors at the start"
        )
    )
    print(f"{'run':<52}{'wall s':>8}{'s/round':>9}{'CPU s':>8}{'load':>6}{'peak RSS GiB':>14}{'AUC':>8}")
    for r, rounds in ((flower, args.rounds), (fedsilo, args.rounds), (big, args.big_rounds)):
        if r is None:
            continue
        auc = r.get("final_auc")
        print(
            f"{r['label']:<52}{r['wall_s']:>8.1f}{r['wall_s'] / rounds:>9.2f}{r['cpu_s']:>8.1f}{r['load_end']:>6.1f}"
            f"{r['peak_rss_gib']:>14.2f}{(auc if auc is not None else float('nan')):>8.3f}"
        )
    if flower is not None and fedsilo is not None:
        print(f"fedsilo / Flower wall time: {fedsilo['wall_s'] / flower['wall_s']:.2f}×  (goal ≤ 2×)")
        print(f"fedsilo / Flower CPU time:  {fedsilo['cpu_s'] / flower['cpu_s']:.2f}×  (whole process trees)")
        print(
            f"fedsilo / Flower peak RSS:  {fedsilo['peak_rss_gib'] / flower['peak_rss_gib']:.2f}×  "
            f"(fedsilo {fedsilo['peak_rss_gib']:.2f} GiB; goal ≤ 3 GiB)"
        )
    if big is not None:
        print(
            f"{args.big_banks} banks × {args.big_rounds} rounds: completed in {big['wall_s']:.1f} s, "
            f"peak RSS {big['peak_rss_gib']:.2f} GiB"
        )


if __name__ == "__main__":
    main()
