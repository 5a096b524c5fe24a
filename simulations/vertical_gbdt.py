"""`fedsilo simulate --setup vertical --model gbdt`: the broker boosts trees on its columns and the bank's ε-DP codes.

Vertical boosting by the coded release (issue 20 item 5; the decision against a
SecureBoost-style Paillier scheme, with its figures, is in docs/vertical.md and
``bench/vertical_gbdt.py``). The scenario, the alignment and the bank's release are
those of the coded scheme (:mod:`fedsilo.simulations.vertical_coded`):

1. the bank releases each shared training customer's 4-level delinquency code once by
   k-ary randomized response at its whole ε (OS CSPRNG coins), asked once by the broker;
2. the broker boosts a histogram GBDT (the tree code of the horizontal federation,
   :mod:`fedsilo.strategies.gbdt`, with one party and no DP) on its own encoded columns plus
   the released code as one ordinal group (never late < late before < one month late now
   < two or more now), on its own machine: its labels, columns, gradients and trees never
   leave it, so it needs no DP, and the bank's only input is the ε-DP codes;
3. the held-out shared customers are scored with their codes, asked once (one k-RR
   release each, charged to her row).

Yardsticks, on the same held-out shared customers, with the same trees, depth, bins
and learning rate: the broker alone (its columns, all its training customers, no DP: it
releases nothing) and a centralized non-private GBDT on the union of both parties'
columns of the shared training customers, which is also what a lossless SecureBoost
run would grow.

Ledgers as for the coded scheme: the bank reserves and commits one ``PureMechanism(ε, 1)``;
the broker reserves and commits nothing. The run folder holds the broker's ensemble
(``part-broker.json``, the ``fedsilo.gbdt`` format over ``[broker's encoded columns,
one-hot code]``), both encoders, the card, the metrics and the plot. ``fedsilo score``
does not score it: a row's score needs the bank's code for that customer, a two-party
step (:func:`score_with_codes`) that the single-party scoring path does not make.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.peers.data.bank import TEST
from fedsilo.peers.gbdt import GBDTBank, layout_from_encoder
from fedsilo.peers.gbdt.federation import BoostSettings, boost
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.peers.vertical.coded import (
    DELINQUENCY_K,
    CodeBudget,
    CodedParty,
    CodesReceived,
    delinquency_codes,
    one_hot,
)
from fedsilo.peers.vertical.parties import SplitSpec
from fedsilo.privacy.noise_source import SecureNoise, SeededNoise
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.run_folder import RunFolder
from fedsilo.simulations.runner import RunSummary
from fedsilo.simulations.vertical import (
    DEFAULT_OVERLAP,
    HOLDER,
    PARTY,
    Parties,
    _auc,
    _plot,
    build_parties,
    pooled_table,
)
from fedsilo.simulations.vertical_coded import _audit, coded_card, exchange, reserve_coded_ledgers
from fedsilo.strategies.gbdt import BinLayout, FeatureGroup, TreeParams, side_by_side
from fedsilo.strategies.gbdt.layout import ONE_HOT

__all__ = [
    "CODE_GROUP",
    "boost_settings",
    "code_layout",
    "coded_parties",
    "fit",
    "joined_layout",
    "score_with_codes",
    "simulate_coded_gbdt",
    "train_coded",
]

CODE_GROUP = "bank_delinquency_code"


def boost_settings(config: SimulationConfig) -> BoostSettings:
    """Non-private, one-party boosting with the run's trees, depth, learning rate and columns per tree."""
    return BoostSettings(
        trees=config.trees,
        params=TreeParams(depth=config.depth),
        learning_rate=config.lr,
        dp_mode="off",
        secure=False,
        features_per_tree=config.features_per_tree,
    )


def fit(x: np.ndarray, y: np.ndarray, layout: BinLayout, settings: BoostSettings, name: str = HOLDER) -> GBDTModel:
    """A GBDT on one party's own rows ``x`` (encoded, the layout's width) and labels ``y``: the tree code, no DP."""
    party = GBDTBank(name, 0, layout.bin_rows(x), y, layout, row_bound=len(y))
    return boost([party], layout, settings, None, len(y)).model


def code_layout(parties: Parties, bins: int) -> BinLayout:
    """The broker's layout: its encoder's groups, then the code as one ordinal group over its one-hot columns."""
    own = layout_from_encoder(parties.encoders[HOLDER], bins)
    code = BinLayout((FeatureGroup(CODE_GROUP, ONE_HOT, tuple(range(DELINQUENCY_K))),), DELINQUENCY_K)
    return side_by_side(own, code)


def joined_layout(parties: Parties, bins: int) -> BinLayout:
    """The centralized (and SecureBoost) layout: the broker's groups, then the bank's."""
    return side_by_side(
        layout_from_encoder(parties.encoders[HOLDER], bins), layout_from_encoder(parties.encoders[PARTY], bins)
    )


def train_coded(
    parties: Parties, bank: CodedParty, receiver: CodesReceived, config: SimulationConfig, tap: Callable | None = None
) -> tuple[GBDTModel, np.ndarray, dict[str, Any]]:
    """The scheme's two exchanges and the broker's boosting: (model, held-out scores, figures)."""
    holder, link = parties.holder, parties.holder.links[0]
    train_index, test_index = holder.train_index, holder.test_index
    own = parties.broker_x[parties.joint]
    y = holder.y.numpy().astype(np.float64)
    layout = code_layout(parties, config.bins)
    started = time.perf_counter()
    codes, sent_train = exchange(bank, receiver, 1, link.positions[train_index], True, tap)
    exchanged = time.perf_counter() - started
    started = time.perf_counter()
    x_train = np.hstack([own[train_index], one_hot(codes, DELINQUENCY_K)])
    model = fit(x_train, y[train_index], layout, boost_settings(config))
    boosting = time.perf_counter() - started
    scores, sent_test = score_with_codes(model, own[test_index], bank, receiver, 2, link.positions[test_index], tap)
    figures = {
        "seconds_exchange": round(exchanged, 3),
        "seconds_boosting": round(boosting, 3),
        "seconds_per_tree": round(boosting / max(1, len(model.trees)), 4),
        "bytes_training_exchange": sum(sent_train),
        "bytes_scoring_exchange": sum(sent_test),
    }
    return model, scores, figures


def score_with_codes(
    model: GBDTModel,
    own: np.ndarray,
    bank: CodedParty,
    receiver: CodesReceived,
    batch: int,
    positions: np.ndarray,
    tap: Callable | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Scoring, a two-party step: the broker asks the bank for these customers' codes (each one k-RR release,
    charged to her row; a repeat gets the stored code) and applies its ensemble to ``[own, one-hot code]``.

    ``own`` holds the customers' encoded broker columns, ``positions`` their places in the agreed PSI
    order; returns (logits, (bytes out, bytes back)).
    """
    codes, sent = exchange(bank, receiver, batch, positions, False, tap)
    return model.predict_margin(np.hstack([own, one_hot(codes, DELINQUENCY_K)])), sent


def yardsticks(parties: Parties, config: SimulationConfig) -> dict[str, float]:
    """AUC of the broker alone (held-out shared customers; all its held-out ones) and of the centralized GBDT."""
    holder = parties.holder
    test_rows = parties.joint[holder.test_index]
    y_test = parties.broker_y[test_rows]
    settings = boost_settings(config)
    own_layout = layout_from_encoder(parties.encoders[HOLDER], config.bins)
    sides = np.asarray(parties.alignment.holder_sides)
    alone_train, alone_test = np.flatnonzero(sides != TEST), np.flatnonzero(sides == TEST)
    alone = fit(parties.broker_x[alone_train], parties.broker_y[alone_train].astype(np.float64), own_layout, settings)
    positions = parties.holder.links[0].positions
    joined = np.hstack([parties.broker_x[parties.joint], parties.bank_x_aligned[positions]])
    train = holder.train_index
    central = fit(
        joined[train], holder.y.numpy()[train].astype(np.float64), joined_layout(parties, config.bins), settings
    )
    return {
        "alone_auc_shared": _auc(alone.predict_margin(parties.broker_x[test_rows]), y_test),
        "alone_auc_all_own": _auc(alone.predict_margin(parties.broker_x[alone_test]), parties.broker_y[alone_test]),
        "centralized_auc_shared": _auc(central.predict_margin(joined[holder.test_index]), y_test),
    }


def coded_parties(parties: Parties, config: SimulationConfig) -> tuple[CodedParty, CodesReceived]:
    """The bank's code release (k-RR at ε, or in the clear with --no-dp) and the broker's receiver, connected."""
    private = config.dp_mode != "off"
    pair, link = parties.alignment.parties[0], parties.holder.links[0]
    budget = CodeBudget(config.epsilon, config.epsilon, config.delta, config.accountant) if private else None
    noise = (SeededNoise(config.seed + 100) if config.reproducible else SecureNoise()) if private else None
    bank = CodedParty(
        PARTY, delinquency_codes(parties.bank_raw_aligned), pair.sides, pair.digest, DELINQUENCY_K, budget, noise
    )
    receiver = CodesReceived(PARTY, link.shared, link.digest, DELINQUENCY_K)
    receiver.connect(bank.hello())
    return bank, receiver


def simulate_coded_gbdt(config: SimulationConfig, progress: Progress) -> RunSummary:
    """The scheme end to end (see the module docstring)."""
    overlap = DEFAULT_OVERLAP if config.overlap is None else config.overlap
    spec = SplitSpec("logreg", (), config.embedding_width)  # the alignment's parties; no neural part is trained
    private = config.dp_mode != "off"
    table = pooled_table(config)
    progress.stage(f"Aligning the {HOLDER}'s and the {PARTY}'s customers by PSI (no raw id exchanged)")
    parties = build_parties(table, config, spec, None, None, overlap)
    bank, receiver = coded_parties(parties, config)
    frames: list[bytes] = []
    with RunFolder(config.out) as folder:
        path, job = folder.path, folder.name
        ledgers = reserve_coded_ledgers(path, job, config) if private else {}
        progress.stage(f"The {PARTY} releases one code per shared customer; the {HOLDER} boosts {config.trees} trees")
        model, scores, figures = train_coded(parties, bank, receiver, config, lambda d, n, f: frames.append(f))
        for name, ledger in ledgers.items():
            ledger.commit(name, job, bank.mechanisms() if name == PARTY else [])
            ledger.close()
        test = parties.holder.test_index
        vertical_auc = _auc(scores, parties.holder.y.numpy()[test])
        progress.stage("Yardsticks: the broker alone and a centralized GBDT on both parties' columns (no DP)")
        yard = yardsticks(parties, config)
        epsilon = {PARTY: round(bank.spent(), 4), HOLDER: 0.0} if private else {}
        result = {
            "scheme": "coded",
            "model": "gbdt",
            "vertical_auc_shared": vertical_auc,
            **yard,
            "alone_dp": "off",
            "shared_customers": len(parties.joint),
            "broker_customers": len(parties.broker_y),
            "test_customers_shared": len(test),
            "epsilon": epsilon,
            "codes": DELINQUENCY_K,
            "keep_probability": bank.release.keep_probability if bank.release else 1.0,
            "measured_leakage": _audit(parties, receiver),
            "trees": len(model.trees),
            **figures,
            "psi_bytes": parties.psi_bytes,
            "bytes_on_the_wire": sum(len(f) for f in frames),
        }
        _write(path, config, model, parties, result)
    return RunSummary(
        run_dir=str(folder.final),
        final_auc=vertical_auc,
        centralized_auc=yard["centralized_auc_shared"],
        local_auc_mean=yard["alone_auc_shared"],
        epsilon_max=max(epsilon.values(), default=0.0),
        delta=config.delta if private else 0.0,
        banks=2,
        rounds=config.trees,
        dp=config.dp_mode,
        secure_aggregation="off",
        setup="vertical",
        vertical=result,
    )


def _write(path: Path, config: SimulationConfig, model: GBDTModel, parties: Parties, result: dict) -> None:
    """The broker's ensemble (marked whose), both encoders, the card, the metrics and the plot."""
    data = model.to_dict() | {"owner": HOLDER, "setup": "vertical", "scheme": "coded", "code_group": CODE_GROUP}
    (path / f"part-{HOLDER}.json").write_text(json.dumps(data, allow_nan=False) + "\n")
    for owner in (HOLDER, PARTY):
        parties.encoders[owner].save(path / f"encoder-{owner}.json")
    (path / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    card = coded_card(
        config,
        result,
        path,
        holder_role="label holder: boosts trees on its own columns and the bank's released code",
        model={
            "kind": "gbdt",
            "file": f"part-{HOLDER}.json",
            "trees": config.trees,
            "depth": config.depth,
            "bins": config.bins,
            "learning_rate": config.lr,
            "scoring": "needs the bank's code of the customer (a two-party step); fedsilo score does not make it",
        },
    )
    (path / "model_card.json").write_text(json.dumps(card, indent=2, default=float))
    _plot(path / "comparison.png", result)
