"""Pulling a signed model from a peer over mutual TLS: 100 concurrent pulls of a 10 MB model.

Sets up a one-machine consortium in a temporary directory (CA, the host bank-a, the
model owner), publishes a signed 10 MB model (random float32 weights, safetensors)
in bank-a's model store as its daemon would at the end of a job, starts the real
daemon (`fedsilo peer start`, a separate process), then, as the model owner, runs:

- baseline 1: reading and hashing the same files from local disk (what verification
  costs without any network);
- baseline 2: one `model pull` (download over mutual TLS + verification) alone;
- the load: N concurrent pulls, each downloading every file and verifying the
  signature and SHA-256s, one client process, one TLS connection per pull.

Printed last: aggregate MB/s of the concurrent pulls (goal ≥ 100 MB/s on loopback),
errors, and the ratios against both baselines. `--suites standard gm` runs the whole
measurement once per crypto suite, in the same run, and prints gm / standard: under gm the
artefacts are hashed with SM3 and every reply is sealed end to end with SM4-GCM
(docs/national-crypto.md).

    python bench/model_pull.py [--pulls 100] [--megabytes 10] [--suites standard gm]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _daemon_common import free_port, start_daemon
from safetensors.numpy import save_file

from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.model_store import publish
from fedsilo.peers.daemon.signed_job import job_document, sign_job
from fedsilo.peers.daemon.store import PeerStore
from fedsilo.peers.identity.consortium import Identity, admit, init_consortium, init_peer
from fedsilo.peers.provenance import file_hash
from fedsilo.privacy.crypto_suite import HASH_LABELS


def setup(root: Path, megabytes: int, suite: str = "standard") -> tuple[str, Path]:
    """The consortium, bank-a's peer.toml and store with one published model; returns (url, model dir)."""
    init_consortium(root / "consortium", "bench", suite)
    gm = suite != "standard"
    url = f"https://127.0.0.1:{free_port()}"
    for name, roles, address in (
        ("bank-a", ("peer",), url),
        ("risk-dept", ("model-owner",), None),
        ("bank-b", ("peer",), f"https://127.0.0.1:{free_port()}"),
    ):
        request = init_peer(root / name / "identity", name, suite if gm else None)
        signing = request.with_name("signing.pub") if gm else None
        admit(root / "consortium", request, roles, address, request.with_name("peer.pem"), signing_key=signing)
    for name in ("bank-a", "risk-dept", "bank-b"):
        for file in ("ca.pem", "ca-signing.pub", "manifest.json") if gm else ("ca.pem", "manifest.json"):
            shutil.copy(root / "consortium" / file, root / name / "identity" / file)
    (root / "bank-a" / "data.csv").write_text("x,Y\n1,0\n2,1\n")
    (root / "bank-a" / "peer.toml").write_text(
        '[peer]\nidentity = "identity"\nstate = "state"\n[policy]\nmodel-owners = ["risk-dept"]\n'
        'max-epsilon-per-job = 3.0\n[sources.credit-card]\npath = "data.csv"\nlabel = "Y"\nepsilon = 8.0\n'
        # a throughput test of one member's concurrent pulls: lift the per-member limits that would
        # otherwise cut it at 32 connections and 20 GET/s (docs/deployment.md, [limits])
        "[limits]\nread-rate = 10000.0\nread-burst = 10000\nconnections-per-member = 1000\n"
    )
    job = root / "job.toml"
    job.write_text(
        '[job]\nid = "bench-1"\nhost = "bank-a"\nparticipants = ["bank-a", "bank-b"]\n'
        'source = "credit-card"\nlabel = "Y"\n'
    )
    owner = Identity.load(root / "risk-dept" / "identity")
    envelope = sign_job(owner, job_document(job, "risk-dept"))
    files = root / "files"
    files.mkdir()
    rng = np.random.default_rng(0)
    save_file(
        {"hidden.weight": rng.standard_normal(megabytes * (1 << 20) // 4, dtype=np.float32)},
        str(files / "model.safetensors"),
    )
    (files / "encoder.json").write_text('{"label": "Y"}')
    store = PeerStore(root / "bank-a" / "state", suite)
    host = Identity.load(root / "bank-a" / "identity")
    version, directory = publish(
        store.models_dir,
        host,
        "bench-1",
        {"model.safetensors": files / "model.safetensors", "encoder.json": files / "encoder.json"},
        {"metrics": {}},
    )
    with store.transaction():
        store.insert_job("bench-1", "risk-dept", "bank-a", True, None, "finished", envelope, envelope["job"]["nonce"])
        store.add_model("bench-1", version, directory, "bank-a")
    store.close()
    return url, directory


async def pulls(identity: Identity, url: str, out: Path, count: int) -> tuple[float, int]:
    async with PeerClient(identity, timeout=600, connections=count) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(pull_model(client, url, "bench-1", out / f"pull-{i}") for i in range(count)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors[:3]:
        print(f"error: {error.__class__.__name__}: {error}", file=sys.stderr)
    return elapsed, len(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=100)
    parser.add_argument("--megabytes", type=int, default=10)
    parser.add_argument("--suites", nargs="+", choices=("standard", "gm"), default=["standard"])
    args = parser.parse_args()
    aggregates = {suite: measure(args, suite) for suite in args.suites}
    if len(aggregates) == 2:
        print(
            f"gm / standard: {aggregates['standard'] / aggregates['gm']:.2f}x the time of the concurrent pulls "
            f"(aggregate {aggregates['gm']:.1f} vs {aggregates['standard']:.1f} MB/s)"
        )


def measure(args: argparse.Namespace, suite: str) -> float:
    """One suite's measurement (printed); returns the concurrent pulls' aggregate MB/s."""
    print(f"-- suite {suite}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url, model_dir = setup(root, args.megabytes, suite)
        artefact_mb = sum(p.stat().st_size for p in model_dir.iterdir()) / 1e6
        started = time.perf_counter()
        for _ in range(5):
            for path in model_dir.iterdir():
                file_hash(path, suite)
        local = (time.perf_counter() - started) / 5
        daemon = start_daemon(root / "bank-a" / "peer.toml", url)
        try:
            owner = Identity.load(root / "risk-dept" / "identity")
            single, single_errors = asyncio.run(pulls(owner, url, root / "single", 1))
            many, errors = asyncio.run(pulls(owner, url, root / "many", args.pulls))
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
    aggregate = args.pulls * artefact_mb / many
    print(f"artefact: {artefact_mb:.1f} MB (model, encoder, card, signature); cores: {os.cpu_count()}")
    print(f"baseline, local read + {HASH_LABELS[suite]}:        {artefact_mb / local:8.1f} MB/s")
    print(
        f"baseline, one pull over mTLS:         {artefact_mb / single:8.1f} MB/s ({single:.2f} s, "
        f"{single_errors} errors)"
    )
    print(f"{args.pulls} concurrent pulls over mTLS:   {aggregate:8.1f} MB/s aggregate ({many:.2f} s, {errors} errors)")
    print(
        f"ratio: concurrent aggregate / one pull = {aggregate / (artefact_mb / single):.2f}x; "
        f"/ local read + hash = {aggregate / (artefact_mb / local):.2f}x"
    )
    return aggregate


if __name__ == "__main__":
    main()
