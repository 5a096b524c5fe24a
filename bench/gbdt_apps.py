"""The boosting ServerApp/ClientApp pair against the in-process banks (provisional).

Three banks of 160 rows, 4 trees of depth 3, 8 bins, distributed DP at ε = 3: the same
job once with `host_gbdt` over a Grid that calls the real ClientApp in this process (each
message rebuilds the bank and resumes its session from the node's state, as a peer does;
the binned table comes from the worker's cache, `binned_rows`, cleared before each pass
so every bank reads its table once, as a Simulation Engine worker does), once with `boost`
over in-process `GBDTBank`s. Each arm runs ``--repeat`` times; the script prints the
fastest of each and their ratio. A deployed run adds, per message, the ClientApp process
start that Flower's SuperNode pays (not measured here).

``--engine`` also runs `fedsilo simulate --model gbdt` on a synthetic population with
``--engine flower`` (Flower's Simulation Engine, Ray) and ``--engine in-process`` and
prints the boosting seconds of each (the card's ``train_seconds``, Ray's start excluded)
and the whole run's wall seconds.

``--uncached`` clears that cache before every message (the ClientApp as it was before the
cache: every message reads, encodes and bins its table), for a before/after in one script.

    python bench/gbdt_apps.py [--repeat 5] [--engine] [--uncached]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "peers"))
import test_gbdt_apps as apps

from fedsilo.peers.data.bank import encode_bank
from fedsilo.peers.gbdt import GBDTBank, client_app, layout_from_encoder
from fedsilo.peers.gbdt.client_app import binned_rows
from fedsilo.peers.gbdt.federation import boost
from fedsilo.privacy.secagg import Ed25519Directory, Ed25519Identity


def app_pair_against_banks(repeat: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gbdt-apps-"))
    terms = apps._terms(3, dp_mode="distributed", trees=4, depth=3, dropout_fraction=0.0, collusion_fraction=0.0)
    grid = apps.Banks(tmp, 3, terms)
    layout = layout_from_encoder(grid.encoder, terms.bins)
    plan = terms.plan()
    configs = terms.configs(layout, plan)
    names = [f"bank-{i}" for i in range(3)]
    ids = {n: Ed25519Identity(n, Ed25519PrivateKey.generate()) for n in names}
    directory = Ed25519Directory({n: s.public_key() for n, s in ids.items()})
    over_messages, in_process, releases = [], [], 0
    for _ in range(repeat):
        for context in grid.contexts.values():
            context.state.clear()  # a new job: no session, nothing spent
        binned_rows.cache_clear()
        started = time.perf_counter()
        result = apps.host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
        over_messages.append(time.perf_counter() - started)
        releases = len(result.releases)
        banks = []
        for i, frame in enumerate(grid.frames):
            data = encode_bank(frame, grid.encoder, grid.job.train.test_fraction, grid.job.train.seed)
            bins = layout.bin_rows(data.x_train.numpy().astype(np.float64))
            banks.append(
                GBDTBank(
                    names[i], i + 1, bins, data.y_train.numpy(), layout, apps.ROWS,
                    secagg=configs, signer=ids[names[i]], verifier=directory,
                )
            )  # fmt: skip
        started = time.perf_counter()
        boost(banks, layout, terms.settings, plan, apps.ROWS, verifier=directory, configs=configs)
        in_process.append(time.perf_counter() - started)
    a, b = min(over_messages), min(in_process)
    print(
        f"{releases} releases, fastest of {repeat}: app pair {a:.2f} s, in-process banks {b:.3f} s, ratio {a / b:.1f}"
    )


def engine_against_in_process() -> None:
    import fedsilo

    root = Path(tempfile.mkdtemp(prefix="gbdt-engine-"))
    settings = dict(
        banks=3, model="gbdt", trees=4, depth=3, bins=8, dp_mode="distributed", epsilon=3.0, compare="local",
        secagg_dropout_fraction=0.0, secagg_collusion_fraction=0.0, out=str(root),
    )  # fmt: skip
    seconds = {}
    for engine in ("flower", "in-process"):
        started = time.perf_counter()
        run = fedsilo.simulate(engine=engine, **settings)
        wall = time.perf_counter() - started
        card = json.loads((run.run_dir / "model_card.json").read_text())
        seconds[engine] = card["metrics"]["train_seconds"]
        print(f"--engine {engine}: boosting {seconds[engine]:.2f} s, whole run {wall:.1f} s")
    print(f"engine / in-process boosting: {seconds['flower'] / max(seconds['in-process'], 1e-3):.1f}")


def _uncached(cached):
    def read(*key):
        cached.cache_clear()
        return cached(*key)

    read.cache_clear = cached.cache_clear
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--engine", action="store_true", help="also time simulate --engine flower (starts Ray)")
    parser.add_argument(
        "--uncached", action="store_true", help="every message reads, encodes and bins its table (as before the cache)"
    )
    args = parser.parse_args()
    if args.uncached:
        client_app.binned_rows = _uncached(binned_rows)
    app_pair_against_banks(args.repeat)
    if args.engine:
        engine_against_in_process()


if __name__ == "__main__":
    main()
