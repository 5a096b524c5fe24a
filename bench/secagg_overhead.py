"""SecAgg+ overhead: secure round time / plaintext round time on Flower's Simulation Engine.

Every row of the table is ONE Flower simulation (one Ray start). In it the same
virtual peers run, one block of R rounds after the other, in this order:

    fedsilo plain, fedsilo secure, fedsilo plain, Flower plain, Flower SecAgg+, Flower plain

* ``fedsilo plain``  -- `JobHost` with the job's SecAggSpec off (FedAvg, guarded, observed);
* ``fedsilo secure`` -- the same `JobHost` with SecAggSpec on (`SecureAggregation` around
  the same FedAvg; the peers' `secagg_mod` answers the five stages);
* ``Flower plain``   -- Flower's legacy API: `DefaultWorkflow()` + legacy `FedAvg`, a
  `NumPyClient` on the peers (apples-to-apples denominator for the anchor);
* ``Flower SecAgg+`` -- `DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))` with the
  same graph degree and threshold as fedsilo's, the same `NumPyClient` behind
  `flwr.client.mod.secaggplus_mod` (the anchor).

A plain block before and after each secure block makes a drift in the machine's load
hit both arms alike (a secure block cannot be repeated in one simulation: the peers
refuse a SecAgg+ round id they have already used, as they should).

The peers run fedsilo's real ClientApp (`fedsilo.peers.client.app.build_client_app`, with the
simulation's `dropout_mod` in the 30 % rows, so every arm loses the same banks in the
same rounds); a first mod hands Flower's legacy messages to a legacy ClientApp instead.
Every arm does the same local work: DP-SGD (`train_round`; same job, same seed, hence
the same Poisson batches and noise draws in round r of every arm) on the same banks
(`generate_consortium` + the feature encoder, written to a temporary directory as
`fedsilo simulate` does), then evaluation on each bank's held-out rows. The run config
declares 3R rounds so that every block fits the peers' DP budget: the noise multiplier
is the same in all arms. Each Ray actor calibrates every bank's noise once, in the
first (warm-up) round, instead of at random later rounds.

Round time = from the end of round r-1's evaluation to the end of round r's (strategy
callbacks: `JobHost(on_round=...)`, a timed legacy `FedAvg`). Round 1 of every block is
a warm-up and is not counted; the figure is the median over the measured rounds of all
blocks of an arm. Ray start-up and data preparation are outside every round. The
"train" ratio counts only the training phase of a round.

Profile (on by default, `--no-profile` to skip): per measured round, the wall time of
each stage exchange through the grid; per message, the time Ray took on the driver
side (`RayBackend.process_message`) against the time the ClientApp spent on it in the
actor; the peers' secagg work (state load/save, JSON payloads, X25519, HKDF, Shamir,
fixed-point encoding, ChaCha20 masks, the masked ArrayRecord); the host's SecAggServer
work and JSON; message and `context.state` sizes. It wraps functions in this process
and in the Ray actors for this run only; no file is changed.

    python bench/secagg_overhead.py                     # 5 rows, ~15 min on 2 idle cores
    python bench/secagg_overhead.py --quick             # 1 row (188k, 0 %, 10 peers), 2 rounds, ~1.5 min
    python bench/secagg_overhead.py --rows 1.9M/0/10 --rounds 6
    python bench/secagg_overhead.py --anchor-at-100     # also Flower's arms at 100 peers (+5-7 min)
    python bench/secagg_overhead.py --rows 188k/0/10 --grid-pull 0.01 --engine-poll 0.01  # what-if polling

The last lines are the ratios. A measurement, not a pass/fail test: other processes on
the machine move the figures (the load average is printed per row).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from fedsilo.peers.client.app import bank_data, bank_index, build_client_app
from fedsilo.peers.client.local_training import evaluate_weights, limit_threads, train_round
from fedsilo.peers.data.bank import encode_bank
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.identity.round_keys import SIMULATED_IDENTITY_KEY, simulated_consortium
from fedsilo.peers.job import JobConfig
from fedsilo.peers.models import build_model, get_weights
from fedsilo.peers.server.host import JobHost
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.secagg import graph_parameters
from fedsilo.simulations.config import SYNTHETIC_LABEL, SimulationConfig
from fedsilo.simulations.data.synthetic import generate_consortium
from fedsilo.simulations.engine import run_flower_simulation
from fedsilo.simulations.faults import DROPOUT_KEY, ERROR_CODE_DROPOUT, dropout_mod, dropout_stage
from fedsilo.strategies.secagg import SecureAggregation
from fedsilo.strategies.secagg.wire import SECAGG_CONFIG_KEY, STAGES
from fedsilo.strategies.wrapper import find_wrapper

HIDDEN = {"188k": (398, 398), "1.9M": (1342, 1342)}  # 2 hidden layers: h^2 + (n_features + 3) h + 1
FULL_ROWS = ("188k/0/10", "188k/30/10", "1.9M/0/10", "1.9M/30/10", "188k/0/100")
QUICK_ROWS = ("188k/0/10",)
GOAL = {0.0: 1.15, 0.3: 1.3}
ARMS = ("fedsilo-plain", "fedsilo-secure", "flower-plain", "flower-secaggplus")
ARM_TITLE = {
    "fedsilo-plain": "fedsilo plain",
    "fedsilo-secure": "fedsilo secure",
    "flower-plain": "Flower plain",
    "flower-secaggplus": "Flower SecAgg+",
}
PROFILE_DIR_KEY = "bench.profile-dir"
N_TRAIN_KEY = "bench.n-train"
LEGACY_STATE_KEY = "bench.legacy.privacy"
LEGACY_RECORDS = ("secaggplus_configs", "fitins.config", "evaluateins.config")
FLOWER_STAGE = {"setup": "advertise", "share_keys": "share", "collect_masked_vectors": "mask", "unmask": "unmask"}


@dataclass(frozen=True)
class Row:
    size: str
    dropout: float
    peers: int

    @classmethod
    def parse(cls, text: str) -> Row:
        try:
            size, dropout, peers = text.split("/")
            if size not in HIDDEN:
                raise ValueError
            return cls(size, float(dropout) / 100.0, int(peers))
        except ValueError:
            raise SystemExit(
                f"--rows: '{text}' is not SIZE/DROPOUT%/PEERS with SIZE in {sorted(HIDDEN)}, e.g. 188k/30/10"
            ) from None

    @property
    def label(self) -> str:
        return f"{self.size} / {self.dropout:.0%} / {self.peers} peers"


# ======================================================================== sizes
def _value_bytes(value: Any) -> int:
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_value_bytes(v) for v in value)
    return 8


def content_bytes(content) -> tuple[int, int]:
    """(array bytes, config bytes) of a RecordDict."""
    arrays = sum(len(a.data) for rec in content.array_records.values() for a in rec.values())
    configs = sum(_value_bytes(v) for rec in content.config_records.values() for v in rec.values())
    return arrays, configs


def message_label(msg: Message) -> str:
    """`family:stage` of a message, without decoding its payload."""
    records = msg.content.config_records if not msg.has_error() else {}
    if SECAGG_CONFIG_KEY in records:
        return f"fedsilo:{records[SECAGG_CONFIG_KEY]['stage']}"
    if "secaggplus_configs" in records:
        return f"flower:{FLOWER_STAGE.get(str(records['secaggplus_configs'].get('stage')), '?')}"
    if "fitins.config" in records:
        return "flower:train"
    if "evaluateins.config" in records:
        return "flower:evaluate"
    return f"fedsilo:{msg.metadata.message_type}"


# ======================================================================== client side (runs in Ray actors)
def _install_client_probes() -> None:
    """Wrap client-side functions once per actor process; they append (name, seconds) to a list."""
    import fedsilo.peers.client.app as A
    import fedsilo.peers.client.mods.secagg as M
    import fedsilo.privacy.secagg.client as C
    import fedsilo.privacy.secagg.keys as K
    import fedsilo.privacy.secagg.shamir as S

    if getattr(M, "_bench_probed", False):
        return
    M._bench_probed = True
    M._bench_records = None

    def probe(owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                records = M._bench_records
                if records is not None:
                    records.append((name, time.perf_counter() - start))

        setattr(owner, attr, timed)

    probe(M, "_load", "state load (JSON -> SecAggClient)")
    probe(M, "_save", "state save (SecAggClient -> JSON)")
    probe(M, "read_stage", "payload decode (JSON)")
    probe(M, "stage_record", "payload encode (JSON)")
    probe(M, "flatten", "flatten arrays (float64)")
    probe(M, "masked_array_record", "masked ArrayRecord")
    probe(C.SecAggClient, "advertise_keys", "protocol: advertise_keys")
    probe(C.SecAggClient, "share_keys", "protocol: share_keys")
    probe(C.SecAggClient, "mask_input", "protocol: mask_input")
    probe(C.SecAggClient, "unmask", "protocol: unmask")
    probe(C.FixedPointEncoder, "encode", "  mask_input: fixed-point encode")
    probe(C, "add_mask", "  mask_input: ChaCha20 masks")
    probe(K, "shared_secret", "  X25519 agreements")
    probe(K, "_hkdf", "  HKDF")
    probe(S, "split", "  Shamir split")
    probe(A, "train_round", "local DP-SGD training (train_round)")
    probe(A, "evaluate_weights", "evaluation (evaluate_weights)")
    probe(A, "bank_data", "bank data (cached)")


def _state_bytes(context: Context) -> int:
    arrays, configs = content_bytes(context.state)
    return arrays + configs


def _write_profile(context: Context, entry: dict) -> None:
    directory = context.run_config.get(PROFILE_DIR_KEY)
    if not directory:
        return
    with open(Path(str(directory)) / f"client-{os.getpid()}.jsonl", "a") as out:
        out.write(json.dumps(entry) + "\n")


def profile_mod(msg: Message, context: Context, call_next) -> Message:
    """Client mod: times everything inside it and writes one JSON line per message."""
    if not context.run_config.get(PROFILE_DIR_KEY):
        return call_next(msg, context)
    import fedsilo.peers.client.mods.secagg as M

    _install_client_probes()
    label = message_label(msg)
    in_arrays, in_configs = content_bytes(msg.content)
    M._bench_records = records = []
    t0, start = time.time(), time.perf_counter()
    try:
        reply = call_next(msg, context)
    finally:
        total = time.perf_counter() - start
        M._bench_records = None
    parts: dict[str, float] = defaultdict(float)
    for name, seconds in records:
        parts[name] += seconds
    out_arrays, out_configs = (0, 0) if reply.has_error() else content_bytes(reply.content)
    _write_profile(
        context,
        {
            "t": t0,
            "label": label,
            "node": msg.metadata.dst_node_id,
            "total": total,
            "parts": parts,
            "error": reply.has_error(),
            "in_arrays": in_arrays,
            "in_configs": in_configs,
            "out_arrays": out_arrays,
            "out_configs": out_configs,
            "state": _state_bytes(context),
        },
    )
    return reply


class BenchNumPyClient(NumPyClient):
    """Flower legacy client doing fedsilo's local work: the same DP-SGD round and evaluation."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def _history(self, job: JobConfig) -> list[Mechanism]:
        record = self._context.state.get(LEGACY_STATE_KEY)
        if not isinstance(record, ConfigRecord) or record.get("job") != job.job_id:
            return []
        return [Mechanism.from_dict(m) for m in json.loads(str(record["history"]))]

    def fit(self, parameters, config):
        limit_threads()
        job = JobConfig.from_run_config(self._context.run_config)
        data = bank_data(job, self._context)
        names = str(config["names"]).split(",")
        weights = dict(zip(names, parameters))
        history = self._history(job)
        result = train_round(job, data, weights, history, int(config["server_round"]), bank_index(self._context))
        if result.mechanism is not None:
            self._context.state[LEGACY_STATE_KEY] = ConfigRecord(
                {"job": job.job_id, "history": json.dumps([m.to_dict() for m in [*history, result.mechanism]])}
            )
        return [result.weights[n] for n in names], result.num_examples, {"epsilon": float(result.epsilon)}

    def evaluate(self, parameters, config):
        limit_threads()
        job = JobConfig.from_run_config(self._context.run_config)
        data = bank_data(job, self._context)
        scores = evaluate_weights(job, data, dict(zip(str(config["names"]).split(","), parameters)))
        return float(scores["loss"]), data.n_test, {"auc": float(scores["auc"])}


def legacy_dropout_mod(msg: Message, context: Context, call_next) -> Message:
    """`fedsilo.simulations.faults.dropout_mod` for Flower's legacy messages: same draw (same banks, same rounds).

    One difference: a bank drawn to vanish at the advertise or share stage vanishes at
    the masked-input stage instead. Flower 1.41's SecAgg+ cannot finish a round in which
    a peer vanished before sharing its keys (its `unmask_stage` lists that peer as dead
    and asks the others for shares they never received: KeyError in the client's
    `_unmask`, then "Not enough shares" and the round halts). The plaintext arm is
    unaffected (a bank lost before the upload is lost either way); the secure anchor does
    somewhat more work than with early dropouts (pairwise masks of the late-dropped
    peers are removed by the server).
    """
    fraction = float(context.run_config.get(DROPOUT_KEY, 0.0))
    if fraction <= 0 or msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    stage = message_label(msg).split(":")[1]
    stage = "mask" if stage == "train" else stage
    gone = dropout_stage(
        int(context.run_config.get("train.seed", 0)), int(msg.metadata.group_id), bank_index(context), fraction
    )
    if gone in ("advertise", "share"):
        gone = "mask"
    if gone is not None and STAGES.index(stage) >= STAGES.index(gone):
        return Message(Error(code=ERROR_CODE_DROPOUT, reason=f"simulated dropout at the {gone} stage"), reply_to=msg)
    return call_next(msg, context)


def legacy_client_app(secure: bool) -> ClientApp:
    def client_fn(context: Context):
        return BenchNumPyClient(context).to_client()

    return ClientApp(client_fn=client_fn, mods=[legacy_dropout_mod, *([secaggplus_mod] if secure else [])])


def warm_caches(context: Context) -> None:
    """Once per actor: calibrate the DP noise of every bank (`fedsilo.privacy.accounting.cache.cached_calibration`, ~0.9 s each).

    A real peer calibrates once, for its own bank. A Ray actor hosts every bank in turn
    and would otherwise pay ~0.9 s the first time it meets each bank, at random rounds
    and arms; doing it all in the first (warm-up) round keeps it out of the measured ones.
    """
    import fedsilo.peers.job as J

    if getattr(J, "_bench_warm", False):
        return
    J._bench_warm = True
    job = JobConfig.from_run_config(context.run_config)
    for n in str(context.run_config.get(N_TRAIN_KEY, "")).split(","):
        if n:
            J.plan_dp(job, int(n))


def router_mod(msg: Message, context: Context, call_next) -> Message:
    """Client mod: Flower legacy messages go to the legacy app, everything else to fedsilo's."""
    warm_caches(context)
    records = msg.content.config_records
    if not any(key in records for key in LEGACY_RECORDS):
        return call_next(msg, context)
    label = message_label(msg)
    t0, start = time.time(), time.perf_counter()
    reply = legacy_client_app("secaggplus_configs" in records)(msg, context)
    if context.run_config.get(PROFILE_DIR_KEY):
        out = (0, 0) if reply.has_error() else content_bytes(reply.content)
        _write_profile(
            context,
            {
                "t": t0,
                "label": label,
                "node": msg.metadata.dst_node_id,
                "total": time.perf_counter() - start,
                "parts": {},
                "error": reply.has_error(),
                "in_arrays": content_bytes(msg.content)[0],
                "out_arrays": out[0],
                "in_configs": content_bytes(msg.content)[1],
                "out_configs": out[1],
                "state": _state_bytes(context),
            },
        )
    return reply


# ======================================================================== host side (this process)
class HostProfiler:
    """Wraps host-side functions for the duration of one simulation; records (arm, name, t, seconds)."""

    def __init__(self) -> None:
        self.arm = ""
        self.records: list[tuple[str, str, float, float]] = []
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    def _add(self, name: str, t0: float, seconds: float) -> None:
        with self._lock:
            self.records.append((self.arm, name, t0, seconds))

    def probe(self, owner: Any, attr: str, name: str | Callable[..., str], *, classmethod_: bool = False) -> None:
        raw = owner.__dict__[attr] if classmethod_ else getattr(owner, attr)
        original = raw.__func__ if classmethod_ else raw
        profiler = self

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t0, start = time.time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                label = name(*args, **kwargs) if callable(name) else name
                profiler._add(label, t0, time.perf_counter() - start)

        setattr(owner, attr, classmethod(timed) if classmethod_ else timed)
        self._undo.append(lambda: setattr(owner, attr, raw))

    def install(self) -> None:
        from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
        from flwr.superlink.grid import InMemoryGrid

        import fedsilo.strategies.observer as O
        import fedsilo.strategies.secagg.strategy as ST
        from fedsilo.privacy.secagg import messages as MSG
        from fedsilo.privacy.secagg.server import SecAggServer

        original_send = InMemoryGrid.send_and_receive
        profiler = self

        def send_and_receive(grid, messages, *, timeout=None):
            messages = list(messages)
            label = message_label(messages[0]) if messages else "empty"
            t0, start = time.time(), time.perf_counter()
            try:
                return original_send(grid, messages, timeout=timeout)
            finally:
                profiler._add(f"exchange {label}", t0, time.perf_counter() - start)

        InMemoryGrid.send_and_receive = send_and_receive
        self._undo.append(lambda: setattr(InMemoryGrid, "send_and_receive", original_send))

        self.probe(RayBackend, "process_message", lambda self_, message, context: f"ray {message_label(message)}")
        for method in (
            "__init__",
            "receive_advertise",
            "end_advertise",
            "receive_shares",
            "end_share_keys",
            "receive_masked_input",
            "end_mask_input",
            "receive_unmask",
            "aggregate",
        ):
            self.probe(SecAggServer, method, f"SecAggServer.{method}")
        for fn, name in (
            ("read_stage", "payload decode (JSON)"),
            ("stage_record", "payload encode (JSON)"),
            ("encrypted_shares_from_dict", "shares from dict"),
            ("flatten", "flatten"),
            ("unflatten", "unflatten"),
            ("read_masked_array", "read masked array"),
        ):
            self.probe(ST, fn, f"host {name}")
        self.probe(MSG.AdvertiseKeys, "from_dict", "host AdvertiseKeys.from_dict", classmethod_=True)
        self.probe(MSG.UnmaskShares, "from_dict", "host UnmaskShares.from_dict", classmethod_=True)
        self.probe(MSG.MaskedInput, "from_dict", "host MaskedInput.from_dict", classmethod_=True)
        self.probe(ST.SecureAggregation, "configure_train", "SecureAggregation.configure_train")
        self.probe(ST.SecureAggregation, "aggregate_train", "SecureAggregation.aggregate_train")
        self.probe(O.Observed, "aggregate_train", "Observed.aggregate_train")
        for stage in ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage"):
            self.probe(SecAggPlusWorkflow, stage, f"SecAggPlusWorkflow.{stage}")

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()


@dataclass
class ArmTimes:
    train: dict[int, float] = field(default_factory=dict)
    evaluate: dict[int, float] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    aborted: dict[int, str] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0

    def round_times(self, rounds: int) -> tuple[list[float], list[float]]:
        """Per-round wall time and training-phase time for rounds 2..R (round 1 is a warm-up)."""
        whole, train = [], []
        for r in range(2, rounds + 1):
            if r - 1 in self.evaluate and r in self.evaluate:
                whole.append(self.evaluate[r] - self.evaluate[r - 1])
            if r - 1 in self.evaluate and r in self.train:
                train.append(self.train[r] - self.evaluate[r - 1])
        return whole, train

    def window(self, rounds: int) -> tuple[float, float]:
        return self.evaluate.get(1, self.start), self.evaluate.get(rounds, self.end)


class TimedLegacyFedAvg(LegacyFedAvg):
    """Flower's legacy FedAvg that stamps the end of each round's fit and evaluate aggregation."""

    def __init__(self, times: ArmTimes, **kwargs) -> None:
        super().__init__(**kwargs)
        self._times = times

    def aggregate_fit(self, server_round, results, failures):
        out = super().aggregate_fit(server_round, results, failures)
        self._times.train[server_round] = time.time()
        self._times.errors[server_round] = len(failures)
        return out

    def aggregate_evaluate(self, server_round, results, failures):
        out = super().aggregate_evaluate(server_round, results, failures)
        self._times.evaluate[server_round] = time.time()
        return out


@dataclass
class RowPlan:
    row: Row
    job: JobConfig  # the run config's job (3R rounds, secure aggregation on)
    rounds: int
    arms: tuple[str, ...]
    initial: dict[str, np.ndarray]
    n_params: int
    max_train: int
    n_train: list[int]
    pull_interval: float | None = None
    times: dict[str, list[ArmTimes]] = field(default_factory=dict)  # arm -> one entry per block

    @property
    def sequence(self) -> list[str]:
        """Blocks in run order: plain, secure, plain per family (a drift in machine load hits both)."""
        out = []
        for plain, secure in (("fedsilo-plain", "fedsilo-secure"), ("flower-plain", "flower-secaggplus")):
            if secure in self.arms:
                out += [plain, secure, plain]
        return out


def make_server_app(plan: RowPlan, profiler: HostProfiler | None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if plan.pull_interval is not None:
            grid.pull_interval = plan.pull_interval  # what-if (--grid-pull); Flower's default is 0.1 s
        for arm in plan.sequence:
            times = ArmTimes(start=time.time())
            plan.times.setdefault(arm, []).append(times)
            if profiler is not None:
                profiler.arm = arm
            try:
                if arm.startswith("fedsilo"):
                    _run_fedsilo_arm(plan, arm, times, grid, context)
                else:
                    _run_flower_arm(plan, arm, times, grid, context)
            finally:
                times.end = time.time()
                if profiler is not None:
                    profiler.arm = ""

    return app


def _run_fedsilo_arm(plan: RowPlan, arm: str, times: ArmTimes, grid: Grid, context: Context) -> None:
    job = replace(
        plan.job,
        train=replace(plan.job.train, rounds=plan.rounds),
        secagg=replace(plan.job.secagg, mode="on" if arm == "fedsilo-secure" else "off"),
    )

    def on_round(stage: str, server_round: int, metrics: list[dict], errors: list[str]) -> None:
        getattr(times, stage)[server_round] = time.time()
        if stage == "train":
            times.errors[server_round] = len(errors)

    host = JobHost(job, on_round=on_round)
    outcome = host.run(grid, context)
    secure = find_wrapper(outcome.strategy, SecureAggregation)
    if secure is not None:
        times.aborted.update(secure.aborted_rounds)


def _run_flower_arm(plan: RowPlan, arm: str, times: ArmTimes, grid: Grid, context: Context) -> None:
    n = plan.row.peers
    names = ",".join(plan.initial)
    strategy = TimedLegacyFedAvg(
        times,
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=n,
        min_evaluate_clients=n,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(list(plan.initial.values())),
        on_fit_config_fn=lambda r: {"server_round": r, "names": names},
        on_evaluate_config_fn=lambda r: {"server_round": r, "names": names},
        fit_metrics_aggregation_fn=lambda metrics: {},
        evaluate_metrics_aggregation_fn=lambda metrics: {},
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=plan.rounds), strategy=strategy)
    if arm == "flower-secaggplus":
        # The same graph degree and threshold as fedsilo's SecAgg+ for these peers.
        g = graph_parameters(n, plan.job.secagg.dropout_fraction, plan.job.secagg.collusion_fraction)
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(
                num_shares=g.degree + 1,
                reconstruction_threshold=g.threshold,
                max_weight=float(plan.max_train),
                clipping_range=plan.job.secagg.clip,
            )
        )
    else:
        workflow = DefaultWorkflow()
    workflow(grid, legacy)


def fast_vce_polling(interval: float) -> Callable[[], None]:
    """What-if: Flower's Simulation Engine polls the link state for new messages every 0.1 s
    (`vce_api.add_messages_to_queue`); poll every `interval` instead. Returns the undo."""
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop) -> None:
        while not f_stop.is_set():
            for node_id in nodes_mapping.keys():
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(interval)

    vce_api.add_messages_to_queue = add_messages_to_queue
    return lambda: setattr(vce_api, "add_messages_to_queue", original)


# ======================================================================== one row
def prepare_row(row: Row, rounds: int, seed: int, work: Path, arms: tuple[str, ...]) -> tuple[RowPlan, dict]:
    """Banks written as `fedsilo simulate` writes them; the job every arm shares."""
    frames = generate_consortium(row.peers, seed=seed)
    label = SYNTHETIC_LABEL
    encoder = TabularEncoder.fit([BankSummary.from_frame(f, label) for f in frames], label)
    config = SimulationConfig(
        banks=row.peers,
        rounds=3 * rounds,
        seed=seed,
        compare=(),
        model="mlp",
        hidden=HIDDEN[row.size],
        secure_aggregation="on",
        dropout=row.dropout,
    )
    tensors = [encode_bank(f, encoder, config.test_fraction, seed) for f in frames]
    (work / "encoder.json").write_text(encoder.to_json())
    banks_dir = work / "banks"
    banks_dir.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        frame.to_parquet(banks_dir / f"bank-{i:05d}.parquet", index=False)
    max_train = max(t.n_train for t in tensors)
    job = config.job(
        encoder_path=str(work / "encoder.json"),
        banks_dir=str(banks_dir),
        job_id=f"bench-secagg-{row.size}-{row.peers}",
        max_weight=float(max_train),
        public_rows=sum(t.n_train for t in tensors),
    )
    initial = get_weights(build_model(job.model, encoder.n_features, seed=job.train.seed))
    n_params = int(sum(v.size for v in initial.values()))
    plan = RowPlan(row, job, rounds, arms, dict(initial), n_params, max_train, [t.n_train for t in tensors])
    info = {"n_features": encoder.n_features, "rows": sum(len(f) for f in frames), "max_train": max_train}
    return plan, info


def run_row(row: Row, args: argparse.Namespace, arms: tuple[str, ...]) -> dict:
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-secagg-") as tmp:
        work = Path(tmp)
        plan, info = prepare_row(row, args.rounds, args.seed, work, arms)
        profile_dir = work / "profile"
        profile_dir.mkdir()
        # The plain arms share the simulation: the run config declares a plaintext job (a peer
        # refuses plaintext training in a job that declares secure aggregation); the secure
        # arm's host runs SecAgg+ anyway, and the banks sign and verify with a simulated consortium.
        run_config = {
            **plan.job.to_run_config(),
            "secagg.mode": "off",
            DROPOUT_KEY: row.dropout,
            N_TRAIN_KEY: ",".join(str(n) for n in plan.n_train),
            SIMULATED_IDENTITY_KEY: str(simulated_consortium(work / "consortium", row.peers)),
        }
        if args.profile:
            run_config[PROFILE_DIR_KEY] = str(profile_dir)
        mods = [router_mod, profile_mod, dropout_mod] if row.dropout > 0 else [router_mod, profile_mod]
        client_app = build_client_app(mods)
        profiler = HostProfiler() if args.profile else None
        if profiler is not None:
            profiler.install()
        undo_polling = None
        plan.pull_interval = args.grid_pull
        if args.engine_poll is not None:
            undo_polling = fast_vce_polling(args.engine_poll)
        started = time.time()
        try:
            run_flower_simulation(
                make_server_app(plan, profiler),
                client_app,
                row.peers,
                run_config,
                work / "app",
                "0.0.0",
                verbose=args.verbose,
            )
        finally:
            if profiler is not None:
                profiler.uninstall()
            if undo_polling is not None:
                undo_polling()
        elapsed = time.time() - started
        clients = []
        for path in profile_dir.glob("client-*.jsonl"):
            clients += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    missing = [a for a in arms if len(plan.times.get(a, [])) != plan.sequence.count(a)]
    if missing:
        raise SystemExit(f"row {row.label}: arms {missing} did not run; rerun with --verbose to see Flower's log")
    result = {
        "row": row,
        "plan": plan,
        "info": info,
        "elapsed": elapsed,
        "host": profiler.records if profiler else [],
        "clients": clients,
    }
    result["figures"] = figures(plan)
    return result


def figures(plan: RowPlan) -> dict[str, dict[str, float]]:
    out = {}
    for arm, blocks in plan.times.items():
        whole, train = [], []
        for times in blocks:
            w, t = times.round_times(plan.rounds)
            whole += w
            train += t
        out[arm] = {
            "round": statistics.median(whole) if whole else float("nan"),
            "train": statistics.median(train) if train else float("nan"),
            "rounds": whole,
        }
    return out


# ======================================================================== profile report
def _in_window(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(lo < t <= hi for lo, hi in windows)


def profile_report(result: dict) -> list[str]:
    plan: RowPlan = result["plan"]
    if plan.rounds < 2:
        return ["  (profile needs at least 2 rounds per arm)"]
    lines = []
    windows = {arm: [t.window(plan.rounds) for t in blocks] for arm, blocks in plan.times.items()}
    measured = {arm: (plan.rounds - 1) * len(blocks) for arm, blocks in plan.times.items()}

    def host_sum(arm: str) -> dict[str, tuple[float, int]]:
        sums: dict[str, list[float]] = defaultdict(list)
        for rec_arm, name, t0, seconds in result["host"]:
            if rec_arm == arm and _in_window(t0, windows[arm]):
                sums[name].append(seconds)
        return {k: (sum(v) / measured[arm], len(v) / measured[arm]) for k, v in sums.items()}

    def client_entries(arm: str) -> list[dict]:
        return [c for c in result["clients"] if _in_window(c["t"], windows[arm])]

    fig = result["figures"]
    for family, plain, secure in (
        ("fedsilo", "fedsilo-plain", "fedsilo-secure"),
        ("Flower", "flower-plain", "flower-secaggplus"),
    ):
        if plain not in plan.times or secure not in plan.times:
            continue
        hp, hs = host_sum(plain), host_sum(secure)
        delta = fig[secure]["round"] - fig[plain]["round"]
        lines.append(
            f"  {family}: secure - plain = {delta:+.3f} s per round "
            f"({fig[plain]['round']:.3f} -> {fig[secure]['round']:.3f}); per measured round:"
        )
        lines.append("    exchanges through the grid (host wall s, messages):")
        for arm, h in ((plain, hp), (secure, hs)):
            parts = [
                f"{k.split(' ', 1)[1].split(':', 1)[1]} {v[0]:.3f}"
                for k, v in sorted(h.items())
                if k.startswith("exchange ")
            ]
            lines.append(f"      {ARM_TITLE[arm]:<15} " + ", ".join(parts))
        # Ray: driver-side per-message time vs time inside the ClientApp.
        for arm, h in ((plain, hp), (secure, hs)):
            entries = client_entries(arm)
            by_label: dict[str, list[dict]] = defaultdict(list)
            for e in entries:
                by_label[e["label"]].append(e)
            cells = []
            for key, (seconds, count) in sorted(h.items()):
                if not key.startswith("ray "):
                    continue
                label = key[4:]
                app = sum(e["total"] for e in by_label.get(label, [])) / measured[arm]
                per = count or 1
                cells.append(
                    f"{label.split(':')[1]}: {count:.0f} msg, Ray {1e3 * seconds / per:.0f} ms/msg "
                    f"(app {1e3 * app / per:.0f}, transport {1e3 * (seconds - app) / per:.0f})"
                )
            if cells:
                lines.append(f"    Ray per message, {ARM_TITLE[arm]}: " + "; ".join(cells))
        if family == "fedsilo":
            entries = client_entries(secure)
            parts: dict[str, float] = defaultdict(float)
            for e in entries:
                for name, seconds in e["parts"].items():
                    parts[name] += seconds
            plain_parts: dict[str, float] = defaultdict(float)
            for e in client_entries(plain):
                for name, seconds in e["parts"].items():
                    plain_parts[name] += seconds
            app_secure = sum(e["total"] for e in entries) / measured[secure]
            app_plain = sum(e["total"] for e in client_entries(plain)) / measured[plain]
            lines.append(
                f"    peers' ClientApp time, summed over peers: plain {app_plain:.3f} s, "
                f"secure {app_secure:.3f} s (2 workers run them)"
            )
            order = sorted(parts, key=lambda k: (k.startswith("  "), -parts[k]))
            for name in order:
                if name.startswith("  "):
                    continue
                base = plain_parts.get(name, 0.0) / measured[plain]
                lines.append(
                    f"      {name:<40} {parts[name] / measured[secure]:7.3f} s"
                    + (f"   (plain {base:.3f})" if base else "")
                )
            for name in order:
                if name.startswith("  "):
                    lines.append(f"      {name:<40} {parts[name] / measured[secure]:7.3f} s")
            host_names = [k for k in hs if not k.startswith(("exchange ", "ray "))]
            if host_names:
                lines.append("    host-side work (s per round):")
                for name in sorted(host_names, key=lambda k: -hs[k][0]):
                    lines.append(f"      {name:<40} {hs[name][0]:7.3f} s  ({hs[name][1]:.0f} calls)")
            sizes: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
            for e in entries:
                sizes[e["label"]].append(
                    (e["in_arrays"] + e["in_configs"], e["out_arrays"] + e["out_configs"], e["state"])
                )
            plain_sizes = [
                (e["in_arrays"] + e["in_configs"], e["out_arrays"] + e["out_configs"])
                for e in client_entries(plain)
                if e["label"] == "fedsilo:train" and not e["error"]
            ]
            cells = [
                f"{label.split(':')[1]} in {np.mean([s[0] for s in v]) / 1e3:.1f} kB / "
                f"out {np.mean([s[1] for s in v]) / 1e3:.1f} kB"
                for label, v in sorted(sizes.items())
            ]
            if plain_sizes:
                cells.append(
                    f"plain train in {np.mean([s[0] for s in plain_sizes]) / 1e3:.1f} kB / "
                    f"out {np.mean([s[1] for s in plain_sizes]) / 1e3:.1f} kB"
                )
            lines.append("    message sizes per peer: " + "; ".join(cells))
            states = [s[2] for v in sizes.values() for s in v]
            if states:
                lines.append(
                    f"    context.state per peer: up to {max(states) / 1e3:.1f} kB "
                    f"(plain arm: up to {max([e['state'] for e in client_entries(plain)] or [0]) / 1e3:.1f} kB)"
                )
        else:
            cells = [
                f"{k.split('.', 1)[1]} {v[0]:.3f}" for k, v in sorted(hs.items()) if k.startswith("SecAggPlusWorkflow.")
            ]
            if cells:
                lines.append("    SecAggPlusWorkflow stages (host wall s): " + ", ".join(cells))
    return lines


# ======================================================================== main
def _fmt(x: float) -> str:
    return "  n/a" if x != x else f"{x:5.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one row (188k/0/10), 2 rounds per arm: a smoke run")
    parser.add_argument(
        "--rows", default=None, help=f"comma-separated SIZE/DROPOUT%%/PEERS (default {','.join(FULL_ROWS)})"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per arm, the first one a warm-up (default 4; 3 for 100-peer rows; 2 with --quick)",
    )
    parser.add_argument("--no-anchor", action="store_true", help="skip Flower's legacy arms")
    parser.add_argument(
        "--anchor-at-100",
        action="store_true",
        help="also run Flower's legacy arms at 100 peers (Flower's SecAgg+ takes ~2 min per round there: +5-7 min)",
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="no overhead profile")
    parser.add_argument(
        "--grid-pull",
        type=float,
        default=None,
        metavar="S",
        help="what-if: the ServerApp's InMemoryGrid polls for replies every S seconds instead of "
        "Flower's 0.1 s (grid.pull_interval, a public attribute fedsilo could set)",
    )
    parser.add_argument(
        "--engine-poll",
        type=float,
        default=None,
        metavar="S",
        help="what-if: the Simulation Engine picks up new messages every S seconds instead of "
        "0.1 s (patches flwr's vce_api.add_messages_to_queue in this process only)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="Flower's log")
    args = parser.parse_args(argv)

    rows = [Row.parse(r) for r in (args.rows.split(",") if args.rows else (QUICK_ROWS if args.quick else FULL_ROWS))]
    explicit_rounds = args.rounds
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}; "
        f"seed {args.seed}; DP-SGD (local) in every arm; round 1 of each arm is a warm-up"
    )
    results = []
    bench_start = time.time()
    for row in rows:
        arms = ARMS
        if args.no_anchor or (row.peers >= 100 and not args.anchor_at_100):
            arms = ARMS[:2]
        args.rounds = explicit_rounds or (2 if args.quick else (3 if row.peers >= 100 else 4))
        if args.rounds < 2:
            raise SystemExit("--rounds must be at least 2 (round 1 is a warm-up)")
        blocks = 3 * (len(arms) // 2)
        print(
            f"-- row {row.label}: {blocks} blocks of {args.rounds} rounds in one simulation "
            f"(plain, secure, plain per family); load average {os.getloadavg()[0]:.1f} ...",
            flush=True,
        )
        result = run_row(row, args, arms)
        plan: RowPlan = result["plan"]
        print(
            f"   {plan.n_params:,} parameters (mlp {HIDDEN[row.size]}, {result['info']['n_features']} features), "
            f"{result['info']['rows']:,} rows, largest bank {plan.max_train:,} training rows; "
            f"simulation {result['elapsed']:.0f} s (Ray start included); load average now "
            f"{os.getloadavg()[0]:.1f}"
        )
        for arm in arms:
            for i, t in enumerate(plan.times[arm]):
                whole, _ = t.round_times(plan.rounds)
                rounds = ", ".join(f"{x:.2f}" for x in whole)
                extra = f"; failed replies per round {dict(sorted(t.errors.items()))}" if row.dropout > 0 else ""
                if t.aborted:
                    extra += f"; ABORTED rounds {sorted(t.aborted)}"
                halted = sorted(r for r in t.evaluate if r not in t.train)
                if halted:
                    extra += f"; HALTED rounds (no aggregate) {halted}"
                print(
                    f"   {ARM_TITLE[arm] + ('' if len(plan.times[arm]) == 1 else f' #{i + 1}'):<17} "
                    f"rounds 2..{plan.rounds}: {rounds} s{extra}"
                )
        results.append(result)

    print()
    print(
        f"{'params':>6} {'drop':>4} {'peers':>5} | {'plain s/rd':>10} {'secure s/rd':>11} {'ratio':>5} "
        f"{'train':>5} {'goal':>5} | {'Flower plain':>12} {'SecAgg+':>8} {'ratio':>5} {'train':>5}"
    )
    last = []
    for result in results:
        row, f = result["row"], result["figures"]
        ratio = f["fedsilo-secure"]["round"] / f["fedsilo-plain"]["round"]
        train_ratio = f["fedsilo-secure"]["train"] / f["fedsilo-plain"]["train"]
        anchor = anchor_train = float("nan")
        fp = fs = float("nan")
        if "flower-secaggplus" in f:
            fp, fs = f["flower-plain"]["round"], f["flower-secaggplus"]["round"]
            anchor = fs / fp
            anchor_train = f["flower-secaggplus"]["train"] / f["flower-plain"]["train"]
        goal = GOAL.get(row.dropout)
        print(
            f"{row.size:>6} {row.dropout:>4.0%} {row.peers:>5} | {f['fedsilo-plain']['round']:>10.2f} "
            f"{f['fedsilo-secure']['round']:>11.2f} {_fmt(ratio)} {_fmt(train_ratio)} "
            f"{('≤' + format(goal, '.2f')) if goal else '':>5} | {_fmt(fp):>12} {_fmt(fs):>8} "
            f"{_fmt(anchor)} {_fmt(anchor_train)}"
        )
        anchor_text = "n/a" if anchor != anchor else f"{anchor:.2f} train={anchor_train:.2f}"
        last.append(
            f"secagg_overhead_ratio[{row.size},dropout={row.dropout:.0%},peers={row.peers}]={ratio:.2f} "
            f"train={train_ratio:.2f} goal<={goal} flower_secaggplus_ratio={anchor_text}"
        )
    print(
        "(s/rd: median seconds per round, train + evaluate; ratio: secure / plain of the same family in the "
        "same simulation; train: the training phase only)"
    )
    if args.profile:
        print()
        print("Where a secure round's extra time goes (per measured round; host = this process, peers = Ray actors):")
        for result in results:
            print(f"- {result['row'].label}")
            for line in profile_report(result):
                print(line)
    print()
    print(f"total bench time {time.time() - bench_start:.0f} s")
    for line in last:
        print(line)


if __name__ == "__main__":
    main()
