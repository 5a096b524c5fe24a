"""A deployed round against the same round in simulation: round time, deployed / simulated.

The same job (the credit MLP, local DP-SGD, secure aggregation on, FedAvg) over the
same banks runs twice, one after the other:

* ``simulation`` -- Flower's Simulation Engine (Ray, one virtual SuperNode per bank),
  as `fedsilo simulate` runs it;
* ``deployment`` -- Flower's Deployment Engine on 127.0.0.1, as two institutions'
  machines would: a SuperLink over TLS with SuperNode authentication (a throwaway CA,
  `fedsilo.peers.deployment.local_ca`) behind the job's fleet gateway, the ServerApp under its
  SuperExec, and per bank a SuperNode running the ClientApp in its own process
  (`fedsilo.peers.deployment.host_training` / `join_training`), each bank reading its own CSV
  file;
* ``stock`` (with ``--stock``) -- the same deployment with Flower's stock
  `flower-supernode` in subprocess isolation: a fresh `flwr-clientapp` process per
  message and Flower's own polling waits at the SuperNode (the host is unchanged).

Round time = from the end of round r-1's evaluation to the end of round r's (strategy
callback, `RoundClock`), so start-up, the encoder fit and data loading are outside
every round. Round 1 of each run is a warm-up and is not counted; a run's figure is
the median over rounds 2..R. The arms run `--repeats` times (default 3), alternating,
so that both see the same drift of the machine's speed; an arm's figure is the median
of its runs. Data: the UCI credit-card table (`--data`), split into the banks by an IID
partition (seeded).

    python bench/deployed_round.py                    # 3 banks, 5 rounds, 3 alternating runs per arm
    python bench/deployed_round.py --rounds 3 --banks 2 --repeats 1
    python bench/deployed_round.py --stock            # also Flower's stock SuperNode (the baseline)
    python bench/deployed_round.py --setup vertical   # a vertical job instead: bench/deployed_vertical.py

The last line is the ratio. A measurement, not a pass/fail test: other processes on
the machine move the figures (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsilo.peers.client.app import app as client_app
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.deployment import host_training, join_training, node_auth_keypair
from fedsilo.peers.deployment.local_ca import make_local_tls
from fedsilo.peers.identity.round_keys import simulated_consortium, simulated_files
from fedsilo.peers.job import JobConfig, TrainSpec
from fedsilo.peers.server.deployed import RoundClock
from fedsilo.peers.server.host import JobHost, server_app
from fedsilo.simulations.data.loader import load_table
from fedsilo.simulations.data.partition import parse_partitioner
from fedsilo.simulations.engine import run_flower_simulation
from fedsilo.simulations.federation import fedsilo_version

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "UCI_Credit_Card.csv"


def bank_frames(data: Path, label: str, id_column: str | None, banks: int, seed: int):
    table = load_table(data, label=label, id_column=id_column)
    parts = parse_partitioner("iid").split(table[label].to_numpy(), banks, seed)
    return [table.iloc[sorted(rows)].reset_index(drop=True) for rows in parts]


def simulated(job: JobConfig, frames, work: Path) -> dict[int, float]:
    banks_dir = work / "banks"
    banks_dir.mkdir(parents=True)
    for i, frame in enumerate(frames):
        frame.to_parquet(banks_dir / f"bank-{i:05d}.parquet", index=False)
    encoder_path = work / "encoder.json"
    encoder_path.write_text(TabularEncoder.fit_frames(frames, job.label).to_json())
    job = replace(job, encoder_path=str(encoder_path), banks_dir=str(banks_dir))
    clock = RoundClock()
    host = JobHost(job, on_round=clock.on_round)
    run_flower_simulation(
        server_app(host), client_app, len(frames), job.to_run_config(), work / "app", fedsilo_version()
    )
    return clock.seconds


TRAIN_STAGES = ("advertise", "share", "mask", "check", "unmask")


def stage_breakdown(exchanges: list[dict], rounds: int) -> dict[str, tuple[float, float]] | None:
    """Per exchange of a secure round: median (seconds, push seconds) over rounds 2..R.

    The exchanges in `metrics.json` are: summarize, encoder, then per round its SecAgg+
    training stages and its evaluation (`finish` comes after the file is written). A
    round's evaluation carries the next round's key advertisement, so rounds 2..R have
    no `advertise` exchange of their own. None if they are not laid out that way (an
    aborted round).
    """
    per_round, current = [], []
    for exchange in exchanges[2:]:
        current.append(exchange)
        if exchange["message_type"] == "evaluate":
            per_round.append(current)
            current = []
    full = len(TRAIN_STAGES) + 1
    if len(per_round) != rounds or current or any(not full - 1 <= len(r) <= full for r in per_round):
        return None
    named = [dict(zip(TRAIN_STAGES[full - len(r) :] + ("evaluate",), r)) for r in per_round[1:]]
    stages = [stage for stage in (*TRAIN_STAGES, "evaluate") if all(stage in r for r in named)]
    return {
        stage: (
            statistics.median(r[stage]["seconds"] for r in named),
            statistics.median(r[stage]["push_seconds"] for r in named),
        )
        for stage in stages
    }


def deployed(job: JobConfig, frames, work: Path, warm: bool = True) -> dict[int, float]:
    tls = make_local_tls(work / "tls")
    keys, paths = [], []
    for i, frame in enumerate(frames):
        peer = work / f"peer-{i}"
        peer.mkdir(parents=True)
        frame.to_csv(peer / "data.csv", index=False)
        paths.append(peer / "data.csv")
        keys.append(node_auth_keypair(peer / "keys"))
    identities = simulated_consortium(work / "identities", len(frames))
    hosted = host_training(job, work / "host", tls, keys)
    joined = []
    try:
        joined = [
            join_training(
                job,
                work / f"peer-{i}" / "work",
                hosted.fleet_address,
                tls.ca_cert,
                work / f"peer-{i}" / "keys",
                paths[i],
                warm=warm,
                identity=simulated_files(identities, i),
            )
            for i in range(len(frames))
        ]
        result = hosted.wait(timeout=60 * 30)
        for peer in joined:
            peer.wait(timeout=60)
    finally:
        hosted.stop()
        for peer in joined:
            peer.stop()
    breakdown = stage_breakdown(result.metrics.get("exchanges", []), job.train.rounds)
    if breakdown:
        print(
            f"{'':>11}  exchange, median s of rounds 2..{job.train.rounds} (of it pushing): "
            + ", ".join(f"{stage} {total:.2f} ({push:.2f})" for stage, (total, push) in breakdown.items()),
            flush=True,
        )
    return {int(r["round"]): float(r["seconds"]) for r in result.metrics["rounds"]}


def main() -> int:
    argv = sys.argv[1:]
    rest = [a for a in argv if a != "--setup=vertical"]
    if "--setup" in argv[:-1] and argv[argv.index("--setup") + 1] == "vertical":
        rest = argv[: argv.index("--setup")] + argv[argv.index("--setup") + 2 :]
    if len(rest) < len(argv):
        import deployed_vertical  # beside this script

        return deployed_vertical.main(rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--setup",
        choices=("horizontal", "vertical"),
        default="horizontal",
        help="vertical: a coded-scheme vertical job between two daemons against simulation "
        "(bench/deployed_vertical.py; the other options are its own: --setup vertical --help)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--label", default="Y")
    parser.add_argument("--id-column", default="ID")
    parser.add_argument("--banks", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("simulation", "deployment", "stock"), help="run one arm only (no ratio)")
    parser.add_argument(
        "--stock",
        action="store_true",
        help="also run the deployment on Flower's stock SuperNode (a flwr-clientapp process per "
        "message, Flower's polling waits), the baseline the in-process ClientApp replaces",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm, alternating (default 3)")
    parser.add_argument("--keep", type=Path, help="keep the arms' files and logs in this (new) directory")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be ≥ 2 (round 1 is a warm-up)")
    if args.repeats < 1:
        parser.error("--repeats must be ≥ 1")
    frames = bank_frames(args.data, args.label, args.id_column, args.banks, args.seed)
    job = JobConfig(
        label=args.label,
        encoder_path="",
        job_id="bench-deployed-round",
        peers=args.banks,
        train=TrainSpec(rounds=args.rounds, seed=args.seed),
    )
    print(
        f"{args.banks} banks × {min(len(f) for f in frames)}–{max(len(f) for f in frames)} rows of "
        f"{args.data.name}; {args.rounds} rounds of local DP-SGD + SecAgg+ FedAvg; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    root = args.keep or Path(tempfile.mkdtemp(prefix="fedsilo-bench-deployed-"))
    arms = [("simulation", simulated), ("deployment", deployed)]
    if args.stock or args.only == "stock":
        arms.append(("stock", lambda job, frames, work: deployed(job, frames, work, warm=False)))
    arms = [(arm, run) for arm, run in arms if not args.only or arm == args.only]
    runs: dict[str, list[float]] = {arm: [] for arm, _ in arms}  # per arm: each run's median round
    try:
        for repeat in range(args.repeats):
            for arm, run in arms:
                started = time.monotonic()
                times = run(job, frames, root / f"{arm}-{repeat + 1}")
                runs[arm].append(statistics.median(times[r] for r in times if r >= 2))
                print(
                    f"{arm:>11}: rounds "
                    + ", ".join(f"{times[r]:.2f}" for r in sorted(times))
                    + f" s  (run {repeat + 1}: median {runs[arm][-1]:.2f} s, whole run "
                    f"{time.monotonic() - started:.1f} s, load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.only:
        return 0
    medians = {arm: statistics.median(r) for arm, r in runs.items()}
    print(
        f"median round (rounds 2..{args.rounds}, median of {args.repeats} runs): "
        + ", ".join(f"{arm} {m:.2f} s" for arm, m in medians.items())
    )
    pairs = ", ".join(f"×{d / s:.2f}" for d, s in zip(runs["deployment"], runs["simulation"]))
    if "stock" in medians:
        print(f"stock deployed round / simulated round: ×{medians['stock'] / medians['simulation']:.2f}")
    print(
        f"deployed round / simulated round: ×{medians['deployment'] / medians['simulation']:.2f} (goal ≤ ×2; "
        f"run by run {pairs})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
