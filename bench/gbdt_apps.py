"""The boosting ServerApp/ClientApp pair against the in-process banks, in one process (provisional).

Three banks of 160 rows, 4 trees of depth 3, 8 bins, distributed DP at ε = 3: the same
job once with `host_gbdt` over a Grid that calls the real ClientApp (each message
rebuilds the bank from its table and resumes its session from the node's state, as a
deployed peer does), once with `boost` over in-process `GBDTBank`s. Prints both times
and their ratio. A deployed run adds, per message, the ClientApp process start that
Flower's SuperNode pays (not measured here).

    python bench/gbdt_apps.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "peers"))
import test_gbdt_apps as apps

from fedsilo.peers.data.bank import encode_bank
from fedsilo.peers.gbdt import GBDTBank, layout_from_encoder
from fedsilo.peers.gbdt.federation import boost
from fedsilo.privacy.secagg import Ed25519Directory, Ed25519Identity


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gbdt-apps-"))
    terms = apps._terms(3, dp_mode="distributed", trees=4, depth=3, dropout_fraction=0.0, collusion_fraction=0.0)
    grid = apps.Banks(tmp, 3, terms)
    started = time.perf_counter()
    result = apps.host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    over_messages = time.perf_counter() - started
    layout = layout_from_encoder(grid.encoder, terms.bins)
    plan = terms.plan()
    configs = terms.configs(layout, plan)
    names = [f"bank-{i}" for i in range(3)]
    ids = {n: Ed25519Identity(n, Ed25519PrivateKey.generate()) for n in names}
    directory = Ed25519Directory({n: s.public_key() for n, s in ids.items()})
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
    in_process = time.perf_counter() - started
    print(
        f"{len(result.releases)} releases: app pair {over_messages:.2f} s, in-process banks {in_process:.2f} s, "
        f"ratio {over_messages / in_process:.1f}"
    )


if __name__ == "__main__":
    main()
