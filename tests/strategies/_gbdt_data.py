"""Small synthetic boosting data: 3 numeric columns and one 3-way one-hot block, with banks."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsilo.peers.gbdt.bank import GBDTBank
from fedsilo.peers.gbdt.bins import normal_edges
from fedsilo.privacy.secagg import Ed25519Directory, Ed25519Identity
from fedsilo.strategies.gbdt import BinLayout, FeatureGroup
from fedsilo.strategies.gbdt.layout import NUMERIC, ONE_HOT


def rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 3))
    category = rng.integers(0, 3, n)
    x = np.concatenate([numeric, np.eye(3)[category]], axis=1)
    logit = 1.5 * numeric[:, 0] - numeric[:, 1] * (category == 2) + 0.5 * (numeric[:, 2] > 0.5) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return x, y


def layout(bins: int = 8) -> BinLayout:
    edges = normal_edges(bins)
    groups = [FeatureGroup(f"x{j}", NUMERIC, (j,), edges) for j in range(3)]
    return BinLayout((*groups, FeatureGroup("c", ONE_HOT, (3, 4, 5))), 6)


def banks(
    x: np.ndarray,
    y: np.ndarray,
    n_banks: int,
    lay: BinLayout,
    row_bound: int,
    configs=None,
    local_sigma: tuple[float, float] = (0.0, 0.0),
) -> tuple[list[GBDTBank], Ed25519Directory]:
    names = [f"bank-{i}" for i in range(n_banks)]
    ids = {n: Ed25519Identity(n, Ed25519PrivateKey.generate()) for n in names}
    directory = Ed25519Directory({n: s.public_key() for n, s in ids.items()})
    out = []
    for i, name in enumerate(names):
        part = slice(i, None, n_banks)
        out.append(
            GBDTBank(
                name,
                100 + i,
                lay.bin_rows(x[part]),
                y[part],
                lay,
                row_bound,
                secagg=configs,
                signer=ids[name] if configs else None,
                verifier=directory if configs else None,
                local_sigma=local_sigma,
            )
        )
    return out, directory
