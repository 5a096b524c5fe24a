"""`fedsilo simulate --setup vertical --vertical-scheme coded`: the bank releases one code per shared customer.

The scenario, the alignment (PSI and pin frame) and the yardsticks are those of
:mod:`fedsilo.simulations.vertical`; the mechanism is :mod:`fedsilo.peers.vertical.coded`:

1. the bank computes each shared customer's delinquency code (never late | late before
   | one month late now | two or more now) from its raw repayment statuses and, asked
   once by the broker for the shared training customers, releases each code once by
   4-ary randomized response at its
   whole ε (OS CSPRNG coins; ``--reproducible`` seeds them, then nothing is private);
2. the broker trains its model (``--model``, ``--rounds`` epochs) on its own columns
   and the one-hot code, on its own machine, without DP: it releases nothing to
   anyone (no gradient, no label), so the comparison is the broker alone **without
   DP** on the same rows it would use (all its customers), on the same footing;
3. the held-out shared customers are scored with their codes, asked once (each one
   k-RR release, charged to her row);
4. measured leakage: the bank receives batch positions only (the test suite checks
   that they are byte-identical whatever the labels), so its label inference is at
   chance; the broker's reconstruction of the bank's ``pay_0`` from the codes it
   received (ridge regression on the one-hot codes, 10% of the customers known to the
   attacker), with and without DP in the bench.

Ledgers: the bank reserves and commits one ``PureMechanism(ε, 1)`` (its worst row's
one release); the broker reserves and commits nothing (its ledger records the job
with an empty history).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file

from fedsilo.peers.vertical.coded import (
    DELINQUENCY_K,
    CodeBudget,
    CodedParty,
    CodesReceived,
    delinquency_codes,
    one_hot,
)
from fedsilo.peers.vertical.messages import BatchRequest, Codes
from fedsilo.peers.vertical.parties import LabelHolder, SplitSpec
from fedsilo.peers.vertical.training import EpochStats, train
from fedsilo.privacy.accounting import PureMechanism
from fedsilo.privacy.audit.split_learning import reconstruction_r2
from fedsilo.privacy.ledger.sqlite import SQLiteLedger
from fedsilo.privacy.noise_source import SecureNoise, SeededNoise
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.run_folder import RunFolder
from fedsilo.simulations.runner import RunSummary
from fedsilo.simulations.vertical import (
    ATTACKED_COLUMN,
    ATTACKER_KNOWN_FRACTION,
    DEFAULT_OVERLAP,
    HOLDER,
    HOLDER_COLUMNS,
    PARTY,
    PARTY_COLUMNS,
    _auc,
    _plot,
    alone_aucs,
    build_parties,
    centralized_auc,
    pooled_table,
)

__all__ = ["exchange", "simulate_coded"]


def exchange(
    party: CodedParty, receiver: CodesReceived, batch: int, positions: np.ndarray, training: bool, tap=None
) -> tuple[np.ndarray, tuple[int, int]]:
    """One request and its answer as bytes (``tap(direction, party, frame)`` sees them): codes, (bytes out, back)."""
    request = receiver.request(batch, positions, training).to_bytes()
    if tap is not None:
        tap("to_party", party.name, request)
    answer = party.answer(BatchRequest.from_bytes(request)).to_bytes()
    if tap is not None:
        tap("to_holder", party.name, answer)
    return receiver.receive(Codes.from_bytes(answer)), (len(request), len(answer))


def reserve_coded_ledgers(path: Path, job: str, config: SimulationConfig) -> dict[str, SQLiteLedger]:
    """Each party's ledger in the run folder, its job reserved: the bank one `PureMechanism(ε, 1)`, the broker none."""
    ledgers: dict[str, SQLiteLedger] = {}
    for name, planned in ((HOLDER, []), (PARTY, [PureMechanism(config.epsilon, 1)])):
        ledger = SQLiteLedger(path / f"ledger-{name}.sqlite")
        ledger.set_budget(name, config.epsilon, config.delta, config.accountant)
        ledger.reserve(name, job, planned)
        ledgers[name] = ledger
    return ledgers


def simulate_coded(config: SimulationConfig, progress: Progress) -> RunSummary:
    """The coded scheme end to end (see the module docstring)."""
    epochs, overlap = config.rounds, DEFAULT_OVERLAP if config.overlap is None else config.overlap
    spec = SplitSpec(config.model, tuple(config.hidden), config.embedding_width)
    private = config.dp_mode != "off"
    table = pooled_table(config)
    progress.stage(f"Aligning the {HOLDER}'s and the {PARTY}'s customers by PSI (no raw id exchanged)")
    parties = build_parties(table, config, spec, None, None, overlap)
    pair = parties.alignment.parties[0]
    holder_link = parties.holder.links[0]
    budget = CodeBudget(config.epsilon, config.epsilon, config.delta, config.accountant) if private else None
    noise = (SeededNoise(config.seed + 100) if config.reproducible else SecureNoise()) if private else None
    bank = CodedParty(
        PARTY, delinquency_codes(parties.bank_raw_aligned), pair.sides, pair.digest, DELINQUENCY_K, budget, noise
    )
    receiver = CodesReceived(PARTY, holder_link.shared, holder_link.digest, DELINQUENCY_K)
    receiver.connect(bank.hello())
    frames: list[tuple[str, bytes]] = []

    def tap(direction: str, name: str, frame: bytes) -> None:
        frames.append((direction, frame))

    holder = parties.holder
    train_index, test_index = holder.train_index, holder.test_index
    y = holder.y.numpy()
    with RunFolder(config.out) as folder:
        path, job = folder.path, folder.name
        ledgers = reserve_coded_ledgers(path, job, config) if private else {}
        progress.stage(f"The {PARTY} releases one code per shared training customer; the {HOLDER} trains alone")
        started = time.perf_counter()
        train_codes, train_bytes = exchange(bank, receiver, 1, holder_link.positions[train_index], True, tap)
        exchanged = time.perf_counter() - started
        codes = np.zeros((len(holder.rows), DELINQUENCY_K), dtype=np.float32)
        codes[train_index] = one_hot(train_codes, DELINQUENCY_K)
        model = _broker_model(parties, codes, spec, config, seed=config.seed + 2)
        history = train(model, [], epochs, config.batch_size, config.seed)
        seconds = time.perf_counter() - started
        history[0].bytes_to_parties, history[0].bytes_to_holder = train_bytes  # the one exchange, both ways
        history[0].seconds += exchanged
        for stats in history:  # the bank spent its ε in the one exchange; the broker spends nothing
            stats.epsilon = {PARTY: round(bank.spent(), 4), HOLDER: 0.0} if private else {}
        test_codes, _ = exchange(bank, receiver, 2, holder_link.positions[test_index], False, tap)
        codes[test_index] = one_hot(test_codes, DELINQUENCY_K)
        model.x[test_index, -DELINQUENCY_K:] = torch.as_tensor(codes[test_index])  # scoring: their codes now known
        vertical_auc = _auc(model.predict(0, test_index, []), y[test_index])
        for name, ledger in ledgers.items():
            ledger.commit(name, job, bank.mechanisms() if name == PARTY else [])
            ledger.close()
        audit = _audit(parties, receiver)

        progress.stage(f"Yardstick: the {HOLDER} alone on its own columns, all its customers (no DP, same footing)")
        alone = LabelHolder(
            f"{HOLDER} alone",
            parties.broker_x,
            parties.broker_y,
            np.arange(len(parties.broker_y)),
            parties.alignment.holder_sides,
            [],
            spec,
            lr=config.lr,
            seed=config.seed + 2,
        )
        alone_shared, alone_all = alone_aucs(alone, parties, test_index, y[test_index], config)
        central_auc = centralized_auc(parties, holder_link.positions, spec, config, test_index, y[test_index], progress)

        progress.stage("Writing the run folder")
        epsilon = {PARTY: round(bank.spent(), 4), HOLDER: 0.0} if private else {}
        result = {
            "scheme": "coded",
            "vertical_auc_shared": vertical_auc,
            "alone_auc_shared": alone_shared,
            "alone_auc_all_own": alone_all,
            "alone_dp": "off",
            "centralized_auc_shared": central_auc,
            "shared_customers": len(parties.joint),
            "broker_customers": len(parties.broker_y),
            "bank_customers_shared": pair.shared,
            "test_customers_shared": len(test_index),
            "epsilon": epsilon,
            "codes": DELINQUENCY_K,
            "keep_probability": bank.release.keep_probability if bank.release else 1.0,
            "measured_leakage": audit,
            "seconds_training": round(seconds, 2),
            "psi_bytes": parties.psi_bytes,
        }
        _write(path, config, spec, model, parties, history, result, [f for _, f in frames])
    return RunSummary(
        run_dir=str(folder.final),
        final_auc=vertical_auc,
        centralized_auc=central_auc,
        local_auc_mean=alone_shared,
        epsilon_max=max(epsilon.values(), default=0.0),
        delta=config.delta if private else 0.0,
        banks=2,
        rounds=epochs,
        dp=config.dp_mode,
        secure_aggregation="off",
        setup="vertical",
        vertical=result,
    )


def _broker_model(parties, codes: np.ndarray, spec: SplitSpec, config: SimulationConfig, seed: int) -> LabelHolder:
    """The broker's model over [its columns, the one-hot code] of the shared customers (its own rows, no DP)."""
    own = parties.broker_x[parties.joint]
    features = np.hstack([own, codes]).astype(np.float32)
    sides = np.asarray(parties.alignment.holder_sides)[parties.joint]
    rows = np.arange(len(parties.joint))
    return LabelHolder(
        HOLDER, features, parties.broker_y[parties.joint], rows, sides, [], spec, lr=config.lr, seed=seed
    )


def _audit(parties, receiver: CodesReceived) -> dict:
    """What each side can learn: the bank nothing label-dependent; the broker pay_0 from the codes (ridge R²)."""
    received = receiver.codes >= 0
    positions = np.flatnonzero(received)
    column = parties.bank_raw_aligned[ATTACKED_COLUMN].to_numpy(dtype=np.float64)[positions]
    features = one_hot(receiver.codes[positions], receiver.k)
    known = max(2, int(ATTACKER_KNOWN_FRACTION * len(column)))
    return {
        "label_inference_auc": 0.5,
        "label_inference_note": "the bank receives batch positions only, identical whatever the labels",
        "feature_reconstruction_r2": round(reconstruction_r2(features, column, known), 4),
    }


def coded_card(
    config: SimulationConfig, result: dict, path: Path, holder_role: str, model: dict[str, Any]
) -> dict[str, Any]:
    """The model card of a coded-scheme run (a neural broker model or a boosted one: `model` says which)."""
    private = bool(result["epsilon"])
    return {
        "setup": "vertical",
        "scheme": "coded",
        "participants": [{"name": n, "epsilon_spent": e} for n, e in result["epsilon"].items()],
        "run": path.name.lstrip(".").removesuffix(".partial"),
        "parties": {
            HOLDER: {
                "role": holder_role,
                "columns_count": len(HOLDER_COLUMNS),
                "privacy": {"dp": "none needed: it releases nothing (no gradient, no label, no model, no score)"},
                "released": "batch positions (indices in the PSI order) of the customers whose codes it asks for",
                "epsilon_spent": result["epsilon"].get(HOLDER),
            },
            PARTY: {
                "role": "feature party (a fixed delinquency rule over its repayment statuses: never late | late before "
                "| one month late now | two or more now)",
                "columns_count": len(PARTY_COLUMNS),
                "privacy": {
                    "mechanism": f"{DELINQUENCY_K}-ary randomized response, each shared customer's code released once "
                    "(a repeated request gets the stored code)",
                    "epsilon_per_row": config.epsilon,
                    "delta": config.delta,
                    "keep_probability": result["keep_probability"],
                    "rule": "fixed before any data is seen (no parameter fitted): ε₁ = 0; each row's loss is its "
                    "one code's ε",
                    "coins": "OS CSPRNG (SecureNoise)" if not config.reproducible else "seeded: NOT private",
                }
                if private
                else {"dp": "off: codes sent in the clear"},
                "learns": "the number of the broker's customers, which of its own customers the broker also holds, "
                "their train/test side",
                "epsilon_spent": result["epsilon"].get(PARTY),
            },
        },
        "in_the_clear": "batch positions and the shared customers' sides; never an id, a column name, a raw value "
        "or a label",
        "outside_the_intersection": "scored by the broker's own model (its columns only: the 'alone' yardstick)",
        "model": model,
        "results": {k: v for k, v in result.items() if k != "measured_leakage"},
        "measured_leakage": result["measured_leakage"],
        "reproducible_noise": bool(config.reproducible and private),
    }


def _write(path: Path, config, spec, model: LabelHolder, parties, history: list[EpochStats], result: dict, frames):
    """The broker's part (marked whose), the encoders, the card, the metrics and the plot; the bank keeps its rule."""
    save_file(
        {k: v.detach().numpy().copy() for k, v in model.model.state_dict().items()},
        str(path / f"part-{HOLDER}.safetensors"),
        metadata={"fedsilo.owner": HOLDER, "fedsilo.setup": "vertical", "fedsilo.scheme": "coded"},
    )
    for owner in (HOLDER, PARTY):
        parties.encoders[owner].save(path / f"encoder-{owner}.json")
    metrics = {"epochs": [vars(s) for s in history], **result, "bytes_on_the_wire": sum(len(f) for f in frames)}
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    card = coded_card(
        config,
        result,
        path,
        holder_role="label holder (its model over its own columns and the bank's code)",
        model={"kind": spec.kind, "hidden": list(spec.hidden), "codes": DELINQUENCY_K},
    )
    (path / "model_card.json").write_text(json.dumps(card, indent=2, default=float))
    _plot(path / "comparison.png", result)
