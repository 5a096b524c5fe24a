"""A vertical job (the coded or the split scheme) between two real daemons against the same job in simulation.

The same scenario (the pooled table of `fedsilo simulate --setup vertical`, dealt into the
broker's and the bank's customers by `deal_customers`), the same model, epochs, batch
size and learning rate run twice per repeat, alternating:

* ``simulation`` -- in process, as `fedsilo.simulations.vertical_coded` runs it: the PSI
  alignment (`build_parties`), the bank's one release of codes (`exchange`), the broker's
  epochs (`train`), without the run's yardsticks (the broker alone, the pooled model);
* ``deployment`` -- two `fedsilo peer start` processes on 127.0.0.1 (mutual TLS, SQLite
  stores and ledgers): the model owner submits a signed `setup = "vertical"` job to the
  broker (the label holder, host); both daemons accept it and reserve; the broker runs the
  both-sides DH-PSI against the bank's daemon, asks for the codes once, trains its model
  and publishes it; the bench pulls the model and reads its per-epoch times.

With ``--scheme split`` the job is the split scheme (``[vertical] scheme = "split"``: bottom
model at the bank, top at the broker, noised embeddings and gradients every batch):

* ``simulation`` -- on Flower's Simulation Engine, as `fedsilo simulate --setup vertical
  --vertical-scheme split` runs it (`build_parties`, then `train_and_score_on_engine`: one
  virtual SuperNode per party and the relay ServerApp), without the yardsticks;
* ``deployment`` -- the signed split job between the two daemons: the broker's PSI and
  alignment, its SuperLink with the relay ServerApp, one SuperNode per daemon
  (`fedsilo.peers.daemon.roles.vertical_split`); the epochs are the relay's own timings.

Reported per arm: the alignment, the release, the median epoch (epochs 2..R; the first
carries the release in simulation) and the whole job (deployment: from submitting the
signed job to the job being finished, so acceptance, reservation and publishing are in).
The phases of the deployed job come from the two daemons' audit entries (psi.run at the
broker, vertical.align at the bank, vertical.receive and model.publish at the broker).
The last line is the epoch ratio, the issue's goal (≤ ×2). Both arms train with one torch
intra-op thread (`torch.set_num_threads(1)` here, ``OMP_NUM_THREADS=1`` for the daemons), as
a peer's training does (`fedsilo.peers.client.local_training`): on a shared 2-core machine
torch's default two threads made the simulated epoch up to 10× slower than the same epoch
on one thread, which would flatter the deployment.

    python bench/deployed_vertical.py                         # synthetic scenario, 3 repeats
    python bench/deployed_round.py --setup vertical           # the same
    python bench/deployed_vertical.py --customers 30000 --epochs 5
    python bench/deployed_vertical.py --scheme split --customers 3000 --epochs 3
    python bench/deployed_vertical.py --data ../shared/data/UCI_Credit_Card.csv

A measurement, not a pass/fail test: other processes on the machine move the figures (the
load average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _daemon_common import free_port, start_daemon

from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.signed_job import job_document, sign_job
from fedsilo.peers.daemon.store import PeerStore
from fedsilo.peers.identity.consortium import Identity, admit, init_consortium, init_peer
from fedsilo.peers.vertical.coded import DELINQUENCY_K, CodeBudget, CodedParty, CodesReceived, delinquency_codes
from fedsilo.peers.vertical.parties import SplitSpec
from fedsilo.peers.vertical.training import train
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.vertical import (
    HOLDER_COLUMNS,
    LABEL,
    PARTY,
    PARTY_COLUMNS,
    build_parties,
    deal_customers,
    plan_parties,
    pooled_table,
    split_spec,
)
from fedsilo.simulations.vertical_coded import _broker_model, exchange
from fedsilo.simulations.vertical_engine import train_and_score_on_engine

OWNER = "risk-dept"
EPSILON = {"coded": 1.0, "split": 3.0}
HIDDEN = (16,)
POLICY = (
    f'model-owners = ["{OWNER}"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'
    'setups = ["vertical"]\nvertical-label-holders = ["broker"]\nvertical-schemes = ["coded", "split"]\n'
)


def simulated(config: SimulationConfig, overlap: float) -> dict[str, float | list[float]]:
    """The simulation's alignment, release and epochs (seconds), as `simulate_coded` runs them."""
    spec = SplitSpec(config.model, tuple(config.hidden), config.embedding_width)
    table = pooled_table(config)
    started = time.perf_counter()
    parties = build_parties(table, config, spec, None, None, overlap)
    aligned = time.perf_counter()
    pair, link, holder = parties.alignment.parties[0], parties.holder.links[0], parties.holder
    budget = CodeBudget(config.epsilon, config.epsilon, config.delta, config.accountant)
    bank = CodedParty(
        PARTY,
        delinquency_codes(parties.bank_raw_aligned),
        pair.sides,
        pair.digest,
        DELINQUENCY_K,
        budget,
        SecureNoise(),
    )
    receiver = CodesReceived(PARTY, link.shared, link.digest, DELINQUENCY_K)
    receiver.connect(bank.hello())
    train_codes, _ = exchange(bank, receiver, 1, link.positions[holder.train_index], True)
    exchange(bank, receiver, 2, link.positions[holder.test_index], False)
    released = time.perf_counter()
    codes = np.zeros((len(holder.rows), DELINQUENCY_K), dtype=np.float32)
    codes[holder.train_index] = np.eye(DELINQUENCY_K, dtype=np.float32)[train_codes]
    model = _broker_model(parties, codes, spec, config, seed=config.seed + 2)
    history = train(model, [], config.rounds, config.batch_size, config.seed)
    done = time.perf_counter()
    return {
        "shared": float(len(parties.joint)),
        "align": aligned - started,
        "release": released - aligned,
        "epochs": [s.seconds for s in history],
        "job": done - started,
    }


def simulated_split(config: SimulationConfig, overlap: float) -> dict[str, float | list[float]]:
    """The split scheme on Flower's Simulation Engine (alignment, then training and scoring), in seconds."""
    spec = split_spec(config)
    _, holder_dp, party_dp = plan_parties(config, spec)
    table = pooled_table(config)
    started = time.perf_counter()
    parties = build_parties(table, config, spec, holder_dp, party_dp, overlap)
    aligned = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-split-") as work:
        history, _ = train_and_score_on_engine(
            parties.holder, [parties.party], config.rounds, config.batch_size, config.seed, Path(work)
        )
    done = time.perf_counter()
    return {
        "shared": float(len(parties.joint)),
        "align": aligned - started,
        "train": done - aligned,
        "epochs": [s.seconds for s in history],
        "job": done - started,
    }


def setup(root: Path, config: SimulationConfig, overlap: float) -> dict[str, str]:
    """The consortium (CA, broker, bank, the model owner), peer.toml files and the two tables; the peers' URLs."""
    init_consortium(root / "consortium", "bench-vertical")
    urls = {}
    for name, roles in (("broker", ("peer",)), ("bank", ("peer",)), (OWNER, ("model-owner",))):
        request = init_peer(root / name / "identity", name)
        url = f"https://127.0.0.1:{free_port()}" if "peer" in roles else None
        if url:
            urls[name] = url
        admit(root / "consortium", request, roles, url, request.with_name("peer.pem"))
    for name in ("broker", "bank", OWNER):
        for file in ("ca.pem", "manifest.json", "crl.pem"):
            shutil.copy(root / "consortium" / file, root / name / "identity" / file)
    table = pooled_table(config)
    broker_rows, bank_rows = deal_customers(len(table), overlap, config.seed)
    broker = table.iloc[broker_rows][[*HOLDER_COLUMNS, LABEL]].rename(columns={LABEL: "Y"})
    broker.insert(0, "ID", [f"customer-{r}" for r in broker_rows])
    bank = table.iloc[bank_rows][list(PARTY_COLUMNS)].copy()
    bank.insert(0, "ID", [f"customer-{r}" for r in bank_rows])
    broker.to_csv(root / "broker" / "data.csv", index=False)
    bank.to_csv(root / "bank" / "data.csv", index=False)
    for name in ("broker", "bank"):
        text = (
            f'[peer]\nidentity = "identity"\nstate = "state"\n\n[policy]\n{POLICY}\n'
            '[sources.credit-card]\npath = "data.csv"\nlabel = "Y"\nid-column = "ID"\nepsilon = 100.0\n'
            "delta = 1e-5\n"
        )
        if name == "bank":
            text += (
                '\n[lists.credit-card]\npath = "data.csv"\nid-column = "ID"\npsi = ["broker"]\n'
                'psi-modes = ["both"]\npsi-protocols = ["dh"]\npsi-quota = 100000000\n'
            )
        (root / name / "peer.toml").write_text(text)
    return urls


def job_file(root: Path, job_id: str, config: SimulationConfig, scheme: str = "coded") -> Path:
    path = root / f"{job_id}.toml"
    path.write_text(
        f'[job]\nid = "{job_id}"\nhost = "broker"\nparticipants = ["broker", "bank"]\nmin-participants = 2\n'
        'source = "credit-card"\nlabel = "Y"\nsetup = "vertical"\n\n'
        f'[model]\nkind = "{config.model}"\nhidden = {list(config.hidden)}\n\n'
        f"[train]\nrounds = {config.rounds}\nbatch-size = {config.batch_size}\nlr = {config.lr}\n"
        f"seed = {config.seed}\n\n[dp]\nepsilon = {EPSILON[scheme]}\ndelta = 1e-5\n\n"
        f'[vertical]\nscheme = "{scheme}"\n'
    )
    return path


def _when(store: PeerStore, job_id: str, action: str) -> float:
    times = [e.time for e in store.audit.entries() if e.job == job_id and e.action == action]
    if not times:
        raise SystemExit(f"no {action} audit entry for {job_id}")
    return dt.datetime.fromisoformat(times[0]).timestamp()


async def deployed_job(
    root: Path, urls: dict[str, str], job_id: str, config: SimulationConfig, scheme: str = "coded"
) -> dict:
    """Submit the signed job to the broker, wait for it to finish, pull its model; its phases in seconds."""
    owner = Identity.load(root / OWNER / "identity")
    envelope = sign_job(owner, job_document(job_file(root, job_id, config, scheme), OWNER))
    async with PeerClient(owner, timeout=120) as client:
        submitted = time.time()
        await client.call("POST", f"{urls['broker']}/v1/jobs", envelope)
        while True:
            view = await client.call("GET", f"{urls['broker']}/v1/jobs/{job_id}")
            if view["state"] in ("finished", "failed", "cancelled"):
                break
            await asyncio.sleep(0.2)
        finished = time.time()
        if view["state"] != "finished":
            raise SystemExit(f"the deployed job ended {view['state']}: {view}")
        await pull_model(client, urls["broker"], job_id, root / f"{job_id}-model")
        metrics = json.loads((root / f"{job_id}-model" / "metrics.json").read_text())
    broker, bank = PeerStore(root / "broker" / "state"), PeerStore(root / "bank" / "state")
    psi, aligned = _when(broker, job_id, "psi.run"), _when(bank, job_id, "vertical.align")
    if scheme == "split":  # the SuperLink starts after the alignment; the model is published last
        published = _when(broker, job_id, "model.publish")
        return {
            "shared": float(metrics["shared_customers"]),
            "accept": psi - submitted,
            "align": aligned - psi,
            "train": published - aligned,
            "epochs": [float(e["seconds"]) for e in metrics["epochs"]],
            "job": finished - submitted,
            "auc": metrics["vertical_auc_shared"],
        }
    received, published = _when(broker, job_id, "vertical.receive"), _when(broker, job_id, "model.publish")
    return {
        "shared": float(metrics["shared_customers"]),
        "accept": psi - submitted,
        "align": aligned - psi,
        "release": received - aligned,
        "train": published - received,
        "epochs": [float(e["seconds"]) for e in metrics["epochs"]],
        "job": finished - submitted,
        "auc": metrics["vertical_auc_shared"],
    }


def _median_epoch(epochs: list[float]) -> float:
    return statistics.median(epochs[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="UCI_Credit_Card.csv (the uci scenario); default: the synthetic scenario")
    parser.add_argument("--customers", type=int, default=12000, help="synthetic scenario's customers (default 12000)")
    parser.add_argument("--overlap", type=float, default=0.6, help="share of the broker's customers the bank holds")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="jobs per arm, alternating (default 3)")
    parser.add_argument("--scheme", choices=("coded", "split"), default="coded", help="the vertical scheme")
    parser.add_argument("--keep", type=Path, help="keep the consortium, stores and logs in this (new) directory")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be ≥ 2 (epoch 1 carries the release in simulation)")
    config = SimulationConfig(
        setup="vertical",
        scenario="uci" if args.data else "synthetic",
        data=args.data,
        customers=None if args.data else args.customers,
        rounds=args.epochs,
        batch_size=args.batch_size,
        lr=0.5,
        hidden=HIDDEN,
        seed=args.seed,
        epsilon=EPSILON[args.scheme],
        vertical_scheme=args.scheme,
    )
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the daemons
    root = args.keep or Path(tempfile.mkdtemp(prefix="fedsilo-bench-vertical-"))
    urls = setup(root, config, args.overlap)
    daemons = {name: start_daemon(root / name / "peer.toml", url) for name, url in urls.items()}
    print(
        f"{args.scheme} vertical job, {'UCI' if args.data else f'synthetic scenario, {args.customers} customers'}, "
        f"overlap {args.overlap}, mlp {list(HIDDEN)}, {args.epochs} epochs of batch {args.batch_size}, ε = {EPSILON[args.scheme]}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"simulation": [], "deployment": []}
    try:
        for repeat in range(args.repeats):
            arms = ("simulation", "deployment") if repeat % 2 == 0 else ("deployment", "simulation")
            for arm in arms:
                if arm == "simulation":
                    figures = (simulated_split if args.scheme == "split" else simulated)(config, args.overlap)
                else:
                    job_id = f"vertical-{repeat + 1}"
                    figures = asyncio.run(deployed_job(root, urls, job_id, config, args.scheme))
                runs[arm].append(figures)
                phases = ", ".join(
                    f"{k} {figures[k]:.2f}" for k in ("accept", "align", "release", "train") if k in figures
                )
                print(
                    f"{arm:>11}: {int(figures['shared'])} shared customers; {phases} s; epochs "
                    + ", ".join(f"{s:.2f}" for s in figures["epochs"])
                    + f" s (median of 2..{args.epochs}: {_median_epoch(figures['epochs']):.3f} s); whole job "
                    f"{figures['job']:.2f} s; load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        for process in daemons.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in daemons.values():
            try:
                process.wait(timeout=30)
            except Exception:
                os.killpg(process.pid, signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    epoch = {arm: statistics.median(_median_epoch(r["epochs"]) for r in rs) for arm, rs in runs.items()}
    job = {arm: statistics.median(r["job"] for r in rs) for arm, rs in runs.items()}
    pairs = ", ".join(
        f"×{_median_epoch(d['epochs']) / _median_epoch(s['epochs']):.2f}"
        for d, s in zip(runs["deployment"], runs["simulation"])
    )
    print(
        f"whole job (median of {args.repeats}): deployment {job['deployment']:.2f} s (signed job to finished, "
        f"acceptance, mTLS PSI, release, training, publishing), simulation {job['simulation']:.2f} s "
        f"(PSI, release, training): ×{job['deployment'] / job['simulation']:.2f}"
    )
    print(
        f"deployed epoch / simulated epoch: {epoch['deployment']:.3f} s / {epoch['simulation']:.3f} s = "
        f"×{epoch['deployment'] / epoch['simulation']:.2f} (goal ≤ ×2; run by run {pairs})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
