"""`fedsilo simulate --setup vertical`: the same customers at a broker and a bank, different columns.

Two schemes (``--vertical-scheme``): ``coded`` (the default,
:mod:`fedsilo.simulations.vertical_coded`: one randomized-response code per shared
customer) and ``split``, the split model this module runs (below).

The scenario (issue 18): a broker rates its clients and holds the label (default next
month), their demographics and a few payment amounts; a bank holds, for its own
clients, the credit limit, the repayment-status history, the bill amounts and the other
payment amounts. The pooled table (the synthetic generator's, or the UCI credit-card
file passed by path with ``--data FILE --scenario uci``) is dealt out: the broker holds
half of the customers, the bank the other half and, with probability ``--overlap``
(default 0.6), each of the broker's customers too. Neither sees the other's columns,
rows or (for the bank) labels.

What runs (``--engine flower``, the default: the split training and the scoring on
Flower's Simulation Engine, one virtual SuperNode per party and a ServerApp that only
relays, :mod:`fedsilo.simulations.vertical_engine`; ``--engine in-process``: the parties
are objects of this process; both exchange the same messages, the steps are the same):

1. alignment by both-sides PSI on the customer ids (stand-ins ``customer-ROW``) and a
   pin frame carrying each shared customer's train/test side
   (:mod:`fedsilo.peers.vertical.alignment`);
2. each party fits its encoder on its own rows; split training for ``--rounds`` epochs
   (:mod:`fedsilo.peers.vertical.training`), DP on both sides unless ``--no-dp``;
3. scoring of the held-out shared customers (one more release of each at the bank);
4. yardsticks: the broker alone on its own columns (all its customers, DP-SGD at the
   same ε, on the batches it chooses: no amplification claimed either), and a
   centralized non-private model on all columns of the shared customers;
5. measured leakage, from each side: label inference from the gradients the bank
   received (norm and direction scoring, last epoch) and reconstruction of a bank column
   (``pay_0``) from the embeddings the broker received (ridge regression with 10% of
   the rows known to the attacker).

Customers outside the intersection are scored by the broker's own model (the "alone"
model, trained on all its customers): it is the model the broker uses for them.

Privacy (each party's (ε, δ), `fedsilo.privacy.vertical`): every training row is released
twice per epoch by each party (the bank: its embedding, and its bottom model's DP-SGD
update; the broker: the returned gradient, and its own part's DP-SGD update), each a
Gaussian mechanism at sample rate 1; the noise multiplier is calibrated so that 2 ×
epochs releases spend the party's ε. A held-out customer is released once, at scoring,
at a noise multiplier calibrated for that one release (her row is in no training step).
Both ledgers (``ledger-broker.sqlite``, ``ledger-bank.sqlite``) reserve the plan before
training and commit what was released.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from fedsilo.errors import ConfigError, DataError
from fedsilo.peers.client.local_training import limit_threads
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.vertical.alignment import VerticalAlignment, align_vertical
from fedsilo.peers.vertical.messages import BatchRequest, Embeddings, Gradients
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder, Link, PartyDP, SplitSpec
from fedsilo.peers.vertical.plan import party_dp, planned_mechanisms, split_releases
from fedsilo.peers.vertical.training import EpochStats, score, train
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.audit.roc import roc
from fedsilo.privacy.audit.split_learning import (
    direction_scores,
    label_attack_auc,
    norm_scores,
    reconstruction_r2,
)
from fedsilo.privacy.ledger.sqlite import SQLiteLedger
from fedsilo.privacy.noise_source import SecureNoise, SeededNoise
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.data.schemas import UCI_LABEL, UCI_SOURCES, synthetic_transfer_table, uci_transfer_table
from fedsilo.simulations.progress import Progress
from fedsilo.simulations.run_folder import RunFolder
from fedsilo.simulations.runner import RunSummary

LABEL = "default"
HOLDER, PARTY = "broker", "bank"
HOLDER_COLUMNS = ("sex", "education", "marriage", "age", "pay_amt1", "pay_amt2", "pay_amt3")
PARTY_COLUMNS = (
    "limit_bal",
    *(f"pay_{i}" for i in (0, 2, 3, 4, 5, 6)),
    *(f"bill_amt{i}" for i in range(1, 7)),
    "pay_amt4",
    "pay_amt5",
    "pay_amt6",
)
DEFAULT_OVERLAP = 0.6
ATTACKED_COLUMN = "pay_0"
ATTACKER_KNOWN_FRACTION = 0.1
_NO_LABEL = "__no_label__"  # the encoder's label slot for a party that holds none (never filled with data)
_SPLIT_STREAM = 18


def pooled_table(config: SimulationConfig) -> pd.DataFrame:
    """The table the scenario deals out, in the generator's column names (UCI's X1 … X23 renamed)."""
    if config.scenario not in (None, "synthetic", "uci"):
        raise ConfigError(f"--setup vertical takes --scenario uci or synthetic, got {config.scenario!r}")
    if config.scenario == "uci" or config.data is not None:
        if config.data is None:
            raise ConfigError("--scenario uci needs --data PATH/UCI_Credit_Card.csv (the file is never copied)")
        table = uci_transfer_table(config.data)
        return table.rename(columns={v: k for k, v in UCI_SOURCES.items()} | {UCI_LABEL: LABEL})
    return synthetic_transfer_table(seed=config.seed, customers=config.customers)


def deal_customers(rows: int, overlap: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(broker's rows, bank's rows) of the pooled table: half each, plus each broker client at the bank w.p. overlap."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    order = rng.permutation(rows)
    broker, rest = np.sort(order[: rows // 2]), order[rows // 2 :]
    shared = broker[rng.random(len(broker)) < overlap]
    return broker, rng.permutation(np.concatenate([shared, rest]))


def _encoder(frame: pd.DataFrame, label: str | None) -> TabularEncoder:
    if label is None:
        return TabularEncoder.fit_frames([frame.assign(**{_NO_LABEL: 0})], _NO_LABEL)
    return TabularEncoder.fit_frames([frame], label)


def alone_aucs(
    alone: LabelHolder, parties: Parties, test: np.ndarray, y_test: np.ndarray, config: SimulationConfig
) -> tuple[float, float]:
    """Train the broker-alone yardstick; its AUC on the held-out shared customers and on all its own."""
    train(alone, [], config.rounds, config.batch_size, config.seed)
    shared = _auc(alone.predict(0, parties.joint[test], []), y_test)
    return shared, _auc(alone.predict(0, alone.test_index, []), alone.y.numpy()[alone.test_index])


def centralized_auc(
    parties: Parties,
    positions: np.ndarray,
    spec: SplitSpec,
    config: SimulationConfig,
    test: np.ndarray,
    y_test: np.ndarray,
    progress: Progress,
) -> float:
    """The yardstick: a non-private model on all columns of the shared customers (`positions`: the
    bank's aligned row of each shared customer); its AUC on the held-out shared customers."""
    progress.stage("Yardstick: centralized, non-private, all columns of the shared customers")
    joined = np.zeros((len(parties.broker_y), parties.broker_x.shape[1] + parties.bank_x_aligned.shape[1]))
    joined[:, : parties.broker_x.shape[1]] = parties.broker_x
    joined[parties.joint, parties.broker_x.shape[1] :] = parties.bank_x_aligned[positions]
    central = LabelHolder(
        "centralized",
        joined,
        parties.broker_y,
        parties.joint,
        parties.alignment.holder_sides,
        [],
        spec,
        lr=config.lr,
        seed=config.seed + 2,
    )
    train(central, [], config.rounds, config.batch_size, config.seed)
    return _auc(central.predict(0, test, []), y_test)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    return round(roc(scores[labels == 1], scores[labels == 0]).auc, 4)


class Observer:
    """Every message as the receiving party sees it: what the attacks of the audit start from."""

    def __init__(self) -> None:
        self.positions: dict[int, np.ndarray] = {}
        self.embeddings: dict[int, np.ndarray] = {}
        self.gradients: dict[int, np.ndarray] = {}
        self.frames: list[bytes] = []

    def __call__(self, direction: str, party: str, frame: bytes) -> None:
        self.frames.append(frame)
        magic = frame[:4]
        if magic == b"FSVB":
            request = BatchRequest.from_bytes(frame)
            self.positions[request.batch] = request.positions
        elif magic == b"FSVE":
            message = Embeddings.from_bytes(frame)
            self.embeddings[message.batch] = message.values
        elif magic == b"FSVG":
            message = Gradients.from_bytes(frame)
            self.gradients[message.batch] = message.values

    def last(self, batches: int, kind: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(positions, values) of the last ``batches`` batches of ``kind``."""
        ids = sorted(kind)[-batches:]
        return np.concatenate([self.positions[b] for b in ids]), np.concatenate([kind[b] for b in ids])


@dataclass
class Parties:
    """The scenario's parties, their data and their alignment (as built by :func:`build_parties`)."""

    holder: LabelHolder
    party: FeatureParty
    alignment: VerticalAlignment
    joint: np.ndarray  # the broker's rows shared with the bank, in its index order
    broker_x: np.ndarray
    broker_y: np.ndarray
    bank_x_aligned: np.ndarray
    bank_raw_aligned: pd.DataFrame
    encoders: dict[str, TabularEncoder]
    psi_bytes: int


def build_parties(
    table: pd.DataFrame,
    config: SimulationConfig,
    spec: SplitSpec,
    holder_dp: PartyDP | None,
    party_dp: PartyDP | None,
    overlap: float,
) -> Parties:
    """Deal the customers, align them by PSI, fit each party's encoder on its own rows, build the two parties."""
    missing = [c for c in (*HOLDER_COLUMNS, *PARTY_COLUMNS, LABEL) if c not in table.columns]
    if missing:
        raise DataError(f"the table lacks the scenario's columns {missing}")
    broker_rows, bank_rows = deal_customers(len(table), overlap, config.seed)
    broker = table.iloc[broker_rows][[*HOLDER_COLUMNS, LABEL]].reset_index(drop=True)
    bank = table.iloc[bank_rows][list(PARTY_COLUMNS)].reset_index(drop=True)
    holder_encoder, party_encoder = _encoder(broker, LABEL), _encoder(bank, None)
    broker_x, broker_y = holder_encoder.transform(broker)
    bank_x = party_encoder.transform_features(bank)
    wire_bytes = [0]

    def wire(frame: bytes) -> None:
        wire_bytes[0] += len(frame)

    alignment = align_vertical(
        [f"customer-{r}" for r in broker_rows],
        broker_y,
        [[f"customer-{r}" for r in bank_rows]],
        config.test_fraction,
        config.seed,
        wire=wire,
    )
    if alignment.parties[0].shared < 10:
        raise DataError(f"the broker and the bank share {alignment.parties[0].shared} customers: raise --overlap")
    joint, positions = alignment.joint()
    pair = alignment.parties[0]
    noise = (lambda k: SeededNoise(config.seed + 100 * k)) if config.reproducible else (lambda k: SecureNoise())
    party = FeatureParty(
        PARTY,
        bank_x[pair.rows],
        pair.sides,
        pair.digest,
        spec,
        lr=config.lr,
        seed=config.seed + 1,
        dp=party_dp,
        noise=noise(1) if party_dp else None,
    )
    link = Link(PARTY, positions[0], alignment.holder[0].shared, alignment.holder[0].digest, spec.embedding)
    holder = LabelHolder(
        HOLDER,
        broker_x,
        broker_y,
        joint,
        alignment.holder_sides,
        [link],
        spec,
        lr=config.lr,
        seed=config.seed + 2,
        dp=holder_dp,
        noise=noise(2) if holder_dp else None,
    )
    return Parties(
        holder,
        party,
        alignment,
        joint,
        broker_x,
        broker_y,
        bank_x[pair.rows],
        bank.iloc[pair.rows].reset_index(drop=True),
        {HOLDER: holder_encoder, PARTY: party_encoder},
        wire_bytes[0],
    )


def _dp(config: SimulationConfig, releases: int, scoring: bool = False) -> PartyDP | None:
    """A party's DP for ``releases`` per training row; ``scoring``: held-out rows' one release gets its own z."""
    if config.dp_mode == "off":
        return None
    return party_dp(config.epsilon, config.delta, config.accountant, releases, config.max_grad_norm, scoring)


def plan_parties(config: SimulationConfig, spec: SplitSpec) -> tuple[dict[str, int], PartyDP | None, PartyDP | None]:
    """(releases per training row by party, the broker's DP, the bank's DP) of a run (None: no DP): the plan of
    :mod:`fedsilo.peers.vertical.plan`, which a deployed split job reserves too."""
    planned = split_releases(config.rounds, spec.frozen)
    releases = {HOLDER: planned.holder, PARTY: planned.party}
    return releases, _dp(config, releases[HOLDER]), _dp(config, releases[PARTY], scoring=True)


def split_spec(config: SimulationConfig) -> SplitSpec:
    """The split model a run trains."""
    return SplitSpec(config.model, tuple(config.hidden), config.embedding_width, config.frozen_bottoms)


def _ledger(path: Path, source: str, dp: PartyDP, job: str, planned: list[Mechanism]) -> SQLiteLedger:
    ledger = SQLiteLedger(path)
    ledger.set_budget(source, dp.epsilon, dp.delta, dp.accountant)
    ledger.reserve(source, job, planned)
    return ledger


def label_view(observer: Observer, parties: Parties, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """The gradients the bank received in the last ``batches`` batches, and the true labels it never sees."""
    positions, gradients = observer.last(batches, observer.gradients)
    holder_index = np.empty(parties.alignment.parties[0].shared, dtype=np.int64)
    holder_index[parties.holder.links[0].positions] = np.arange(len(parties.joint))
    return gradients, parties.holder.y.numpy()[holder_index[positions]]


def embedding_view(observer: Observer, parties: Parties, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings the broker received in the last ``batches`` batches, and the bank's true ``pay_0`` behind them."""
    positions, embeddings = observer.last(batches, observer.embeddings)
    return embeddings, parties.bank_raw_aligned[ATTACKED_COLUMN].to_numpy(dtype=np.float64)[positions]


def measure_leakage(observer: Observer, parties: Parties, batches: int, frozen: bool) -> dict[str, float]:
    """The attacks of the module docstring, on the last epoch's messages (frozen bottoms: no gradient to read)."""
    out: dict[str, float] = {}
    if not frozen:
        gradients, labels = label_view(observer, parties, batches)
        out["label_inference_norm_auc"] = round(label_attack_auc(norm_scores(gradients), labels), 4)
        known = gradients[np.flatnonzero(labels == 1)[0]]
        out["label_inference_direction_auc"] = round(label_attack_auc(direction_scores(gradients, known), labels), 4)
    embeddings, column = embedding_view(observer, parties, batches)
    known_rows = max(2, int(ATTACKER_KNOWN_FRACTION * len(column)))
    out["feature_reconstruction_r2"] = round(reconstruction_r2(embeddings, column, known_rows), 4)
    return out


def simulate_vertical(config: SimulationConfig, progress: Progress) -> RunSummary:
    """Run the vertical scenario end to end (checks every input before writing)."""
    if config.model == "gbdt":
        from fedsilo.simulations.vertical_gbdt import simulate_coded_gbdt

        return simulate_coded_gbdt(config, progress)
    if config.model not in ("mlp", "logreg"):
        raise ConfigError(f"--setup vertical trains an mlp, logreg or gbdt model, got {config.model!r}")
    limit_threads()  # small models: one intra-op thread is the fastest (ten times, on a loaded machine)
    if config.vertical_scheme == "coded":
        from fedsilo.simulations.vertical_coded import simulate_coded

        return simulate_coded(config, progress)
    epochs, overlap = config.rounds, DEFAULT_OVERLAP if config.overlap is None else config.overlap
    spec = split_spec(config)
    table = pooled_table(config)
    releases, holder_dp, party_dp = plan_parties(config, spec)
    progress.stage(f"Aligning the {HOLDER}'s and the {PARTY}'s customers by PSI (no raw id exchanged)")
    parties = build_parties(table, config, spec, holder_dp, party_dp, overlap)
    holder, party = parties.holder, parties.party
    shared = len(parties.joint)
    observer = Observer()
    with RunFolder(config.out) as folder:
        path, job = folder.path, folder.name
        ledgers = {}
        if holder_dp is not None:
            for name, dp in ((HOLDER, holder_dp), (PARTY, party_dp)):
                planned = planned_mechanisms(dp, releases[name])
                ledgers[name] = _ledger(path / f"ledger-{name}.sqlite", name, dp, job, planned)
        where = "on Flower's Simulation Engine" if config.runs_on == "flower" else "in this process"
        progress.stage(f"Split training on {shared:,} shared customers, {epochs} epochs, {where}")
        started = time.perf_counter()
        test = holder.test_index
        y_test = holder.y.numpy()[test]
        if config.runs_on == "flower":
            from fedsilo.simulations.engine import EngineSettings  # Flower and Ray: only when they run
            from fedsilo.simulations.vertical_engine import frames_tap, train_and_score_on_engine

            with tempfile.TemporaryDirectory(prefix="fedsilo-vertical-") as work:
                history, probabilities = train_and_score_on_engine(
                    holder,
                    [party],
                    epochs,
                    config.batch_size,
                    config.seed,
                    Path(work),
                    noise_seeds=[config.seed + 200, config.seed + 100] if config.reproducible else None,
                    tap=frames_tap(observer),
                    engine=EngineSettings(config.ray_address, config.cpus_per_bank),
                )
        else:
            history = train(holder, [party], epochs, config.batch_size, config.seed, tap=observer)
            probabilities = score(holder, [party], test, batch=0, tap=observer)
        seconds = time.perf_counter() - started
        vertical_auc = _auc(probabilities, y_test)
        for name, ledger in ledgers.items():
            accountant = (holder if name == HOLDER else party).accountant
            ledger.commit(name, job, accountant.mechanisms())
            ledger.close()
        batches = -(-len(holder.train_index) // config.batch_size)
        audit = measure_leakage(observer, parties, batches, spec.frozen)

        progress.stage(f"Yardstick: the {HOLDER} alone on its own columns (same ε)")
        all_rows = np.arange(len(parties.broker_y))
        alone_dp = _dp(config, epochs)
        alone = LabelHolder(
            f"{HOLDER} alone",
            parties.broker_x,
            parties.broker_y,
            all_rows,
            parties.alignment.holder_sides,
            [],
            spec,
            lr=config.lr,
            seed=config.seed + 2,
            dp=alone_dp,
            noise=(SeededNoise(config.seed + 300) if config.reproducible else SecureNoise()) if alone_dp else None,
        )
        alone_shared, alone_all = alone_aucs(alone, parties, test, y_test, config)
        central_auc = centralized_auc(parties, holder.links[0].positions, spec, config, test, y_test, progress)

        progress.stage("Writing the run folder")
        result = {
            "vertical_auc_shared": vertical_auc,
            "alone_auc_shared": alone_shared,
            "alone_auc_all_own": alone_all,
            "centralized_auc_shared": central_auc,
            "shared_customers": shared,
            "broker_customers": len(parties.broker_y),
            "bank_customers_shared": parties.alignment.parties[0].shared,
            "test_customers_shared": len(test),
            "epsilon": {
                n: round(a.spent(), 4) for n, a in ((HOLDER, holder.accountant), (PARTY, party.accountant)) if a
            },
            "noise_multiplier": holder_dp.noise_multiplier if holder_dp else 0.0,
            "measured_leakage": audit,
            "seconds_training": round(seconds, 2),
            "engine": config.runs_on,
            "psi_bytes": parties.psi_bytes,
            "scheme": "split",
        }
        _write(path, config, spec, parties, history, result, holder_dp, party_dp)
    epsilon = max(result["epsilon"].values(), default=0.0)
    return RunSummary(
        run_dir=str(folder.final),
        final_auc=vertical_auc,
        centralized_auc=central_auc,
        local_auc_mean=alone_shared,
        epsilon_max=round(epsilon, 4),
        delta=config.delta if holder_dp else 0.0,
        banks=2,
        rounds=epochs,
        dp=config.dp_mode,
        secure_aggregation="off",
        setup="vertical",
        vertical=result,
    )


def _write(
    path: Path,
    config: SimulationConfig,
    spec: SplitSpec,
    parties: Parties,
    history: list[EpochStats],
    result: dict,
    holder_dp: PartyDP | None,
    party_dp: PartyDP | None,
) -> None:
    """Each party's part in its own file (marked whose), the encoders, the card, the metrics and a plot."""
    for owner, module in ((HOLDER, parties.holder.model), (PARTY, parties.party.bottom)):
        save_file(
            {k: v.detach().numpy().copy() for k, v in module.state_dict().items()},
            str(path / f"part-{owner}.safetensors"),
            metadata={"fedsilo.owner": owner, "fedsilo.setup": "vertical", "fedsilo.kind": spec.kind},
        )
        parties.encoders[owner].save(path / f"encoder-{owner}.json")
    metrics = {"epochs": [vars(s) for s in history], **result}
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))

    def privacy(dp: PartyDP | None, releases: str, per_row: int) -> dict:
        if dp is None:
            return {"dp": "off"}
        return {
            "epsilon_budget": dp.epsilon,
            "delta": dp.delta,
            "accountant": dp.accountant,
            "noise_multiplier": dp.noise_multiplier,
            "neighbouring": "one customer's row replaced (same shared customers)",
            "releases_per_training_row": per_row,
            "scoring_noise_multiplier": dp.scoring,
            "releases_per_held_out_row": 1,
            "released": releases,
            "amplification_by_sampling": "none claimed: the label holder chooses the batches and every party sees them",
        }

    card = {
        "setup": "vertical",
        "job": {"config": config.to_dict()},
        "participants": [{"name": n, "epsilon_spent": e} for n, e in result["epsilon"].items()],
        "run": path.name.lstrip(".").removesuffix(".partial"),
        "parties": {
            HOLDER: {
                "role": "label holder (top model and its own bottom model)",
                "columns_count": len(HOLDER_COLUMNS),
                "privacy": privacy(
                    holder_dp,
                    "per batch, the gradient of each example's loss w.r.t. the bank's embedding, clipped to "
                    f"{holder_dp.release_clip if holder_dp else 0} and noised (label DP, and DP for its columns)"
                    if not spec.frozen
                    else "nothing (the bank's bottom is frozen); its own part is trained by DP-SGD",
                    config.rounds if spec.frozen else 2 * config.rounds,
                ),
                "learns": "the number of the bank's customers and which of its own customers the bank also holds",
                "epsilon_spent": result["epsilon"].get(HOLDER),
            },
            PARTY: {
                "role": "feature party (its bottom model)",
                "columns_count": len(PARTY_COLUMNS),
                "privacy": privacy(
                    party_dp,
                    "per requested customer, its bottom model's output clipped to norm "
                    f"{party_dp.release_clip if party_dp else 0} and noised"
                    + (
                        ", once per customer (its bottom is frozen; a repeated request gets the same release)"
                        if spec.frozen
                        else ""
                    ),
                    1 if spec.frozen else 2 * config.rounds,
                ),
                "learns": "the number of the broker's customers, which of its own customers the broker also holds, "
                "their train/test side, and the batches",
                "epsilon_spent": result["epsilon"].get(PARTY),
            },
        },
        "in_the_clear": "batch positions (indices in the PSI order), the shared customers' train/test sides, "
        "the embedding width; never an id, a column name, a raw value or a label",
        "outside_the_intersection": "scored by the broker's own model (its columns only: the 'alone' yardstick)",
        "model": {"kind": spec.kind, "hidden": list(spec.hidden), "embedding_width": spec.embedding},
        "results": {k: v for k, v in result.items() if k != "measured_leakage"},
        "measured_leakage": result["measured_leakage"],
        "reproducible_noise": bool(config.reproducible and holder_dp),
    }
    (path / "model_card.json").write_text(json.dumps(card, indent=2, default=float))
    _plot(path / "comparison.png", result)


def _plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["broker alone", "vertical (broker + bank)", "centralized, no DP"]
    values = [result["alone_auc_shared"], result["vertical_auc_shared"], result["centralized_auc_shared"]]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(names, values, color=["#999999", "#1f77b4", "#2ca02c"])
    ax.set_xlim(0.5, 1.0)
    ax.set_xlabel("ROC-AUC, held-out shared customers")
    for i, v in enumerate(values):
        ax.text(v + 0.005, i, f"{v:.3f}", va="center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_lines(summary: RunSummary) -> list[str]:
    """What `fedsilo simulate` prints for a vertical run."""
    v = summary.vertical or {}
    leak = v.get("measured_leakage", {})
    eps = ", ".join(f"{k} ε ≤ {e:.3f}" for k, e in v.get("epsilon", {}).items()) or "none (--no-dp)"
    return [
        f"run folder: {summary.run_dir}",
        f"shared customers (PSI, no raw id exchanged): {v.get('shared_customers', 0):,} "
        f"({v.get('test_customers_shared', 0):,} held out)",
        f"ROC-AUC on held-out shared customers: vertical {v.get('vertical_auc_shared'):.4f}   "
        f"broker alone {v.get('alone_auc_shared'):.4f}   centralized non-private {v.get('centralized_auc_shared'):.4f}",
        f"broker alone on all its held-out customers: {v.get('alone_auc_all_own'):.4f}"
        + (" (the broker alone without DP: the coded scheme's broker releases nothing)" if v.get("alone_dp") else ""),
        f"privacy: {eps}" + (f" at δ = {summary.delta:g}" if summary.delta else ""),
        (
            f"measured leakage: label inference AUC {leak.get('label_inference_auc')} (the bank receives positions "
            f"only); {ATTACKED_COLUMN} reconstruction R² from the codes {leak.get('feature_reconstruction_r2')}"
            if v.get("scheme") == "coded"
            else f"measured leakage: label inference AUC (norm) {leak.get('label_inference_norm_auc')}, "
            f"(direction) {leak.get('label_inference_direction_auc')}; "
            f"{ATTACKED_COLUMN} reconstruction R² {leak.get('feature_reconstruction_r2')}"
        ),
    ]


__all__ = [
    "build_parties",
    "deal_customers",
    "measure_leakage",
    "plan_parties",
    "pooled_table",
    "simulate_vertical",
    "split_spec",
    "summary_lines",
]
