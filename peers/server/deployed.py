"""The steps a ServerApp adds around training when the job runs on the Deployment Engine.

Under the Deployment Engine no file is shared between the host and the peers, so:

1. `fit_encoder_from_peers`: the host asks every peer (a `query.summarize` message)
   for its `BankSummary` (aggregates only, see `fedsilo.peers.data.encoding`), fits the job's
   `TabularEncoder` from them, and sends the fitted encoder back
   (`query.encoder`), which each peer keeps in its node's state directory;
2. training runs as in simulation (`JobHost`);
3. `write_result`: the final model (safetensors) and the per-round, per-peer metrics
   go into the host's output directory;
4. `announce_finish`: every peer still alive is told the job is over (`query.finish`),
   so that it can close its own accounts (what it spent, read from its own accountant's file).

Liveness: once every peer has connected, the grid watches them (`PromptGrid.watch`).
A peer whose SuperNode stops answering (no heartbeat for 10 s, see
`fedsilo.peers.flower_compat.heartbeat`) is a dropout: SecAgg+ completes the round with
the survivors and the next rounds sample only them, while at least `survivors_needed`
and the owner-signed min-participants (`job_min_peers`) are left; below that the grid raises `PeersLost` at once and the run fails.
`write_lost` records the lost node ids in `lost.json` of the output directory either
way, so the job's host can name the participants it lost.

A job travels to deployed peers with an empty `data.encoder` (see
`fedsilo.peers.deployment.host.deployment_job`); that is what selects these steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from safetensors.numpy import save_file

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.flower_compat.messages import ErrorCode
from fedsilo.peers.job import JobConfig, secagg_config
from fedsilo.peers.server.host import HostedRun
from fedsilo.strategies.secagg import SecureAggregation
from fedsilo.strategies.wrapper import find_wrapper

LOST_FILE = "lost.json"
SUMMARIZE = "query.summarize"
SEND_ENCODER = "query.encoder"
FINISH = "query.finish"
SUMMARY_KEY = "summary"
ENCODER_KEY = "encoder"
PEER_WAIT_SECONDS = 300.0
REPLY_TIMEOUT_SECONDS = 300.0


def wait_for_peers(grid: Grid, n_peers: int, timeout: float = PEER_WAIT_SECONDS) -> list[int]:
    """The ids of the first `n_peers` connected nodes; FedsiloError if they are not all there in time."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n_peers:
            return nodes[:n_peers]
        if time.monotonic() > deadline:
            raise FedsiloError(f"only {len(nodes)} of {n_peers} peers connected within {timeout:.0f} s")
        time.sleep(0.1)


def _ask(grid: Grid, nodes: Iterable[int], message_type: str, content: dict[str, Any]) -> list[Message]:
    messages = [
        Message(RecordDict({"config": ConfigRecord(content)}), dst_node_id=node, message_type=message_type)
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=REPLY_TIMEOUT_SECONDS))
    failed = [r for r in replies if r.has_error()]
    if failed:
        raise FedsiloError(f"{message_type}: node {failed[0].metadata.src_node_id} answered {failed[0].error.reason}")
    if len(replies) < len(messages):
        raise FedsiloError(
            f"{message_type}: {len(messages) - len(replies)} peer(s) did not answer "
            f"within {REPLY_TIMEOUT_SECONDS:.0f} s"
        )
    return replies


def fit_encoder_from_peers(grid: Grid, nodes: list[int], job_id: str, label: str) -> TabularEncoder:
    """Gather every peer's summary, fit the encoder, hand it to every peer."""
    replies = _ask(grid, nodes, SUMMARIZE, {"job-id": job_id, "label": label})
    summaries = [BankSummary.from_dict(json.loads(str(r.content["config"][SUMMARY_KEY]))) for r in replies]
    encoder = TabularEncoder.fit(summaries, label)
    _ask(grid, nodes, SEND_ENCODER, {"job-id": job_id, ENCODER_KEY: encoder.to_json()})
    return encoder


def announce_finish(grid: Grid, nodes: list[int], job_id: str) -> None:
    """Tell every node of `nodes` that the job is over. A node lost meanwhile (the SuperLink's
    `NODE_UNAVAILABLE` reply) is skipped; any other error reply raises FedsiloError, as `_ask` does."""
    messages = [
        Message(RecordDict({"config": ConfigRecord({"job-id": job_id})}), dst_node_id=node, message_type=FINISH)
        for node in nodes
    ]
    replies = grid.send_and_receive(messages, timeout=REPLY_TIMEOUT_SECONDS)
    failed = [r for r in replies if r.has_error() and r.error.code != ErrorCode.NODE_UNAVAILABLE]
    if failed:
        raise FedsiloError(f"{FINISH}: node {failed[0].metadata.src_node_id} answered {failed[0].error.reason}")


def survivors_needed(job: JobConfig, n_params: int, suite: str) -> int:
    """Fewest peers a round can run with: SecAgg+'s released-sum minimum for the job's peers, else 1."""
    if not job.secagg.enabled:
        return 1
    config = secagg_config(job, n_params, suite)
    return max(config.min_survivors or 0, config.graph_parameters_for(job.per_round).threshold)


def job_min_peers(value: str | None) -> int:
    """The owner-signed min-participants the host passed (`FEDSILO_JOB_MIN_PEERS`); 1 when unset."""
    try:
        return max(1, int(value or 1))
    except ValueError:
        raise ConfigError(f"FEDSILO_JOB_MIN_PEERS must be a whole number of peers, got {value!r}") from None


def write_lost(directory: Path, lost: Iterable[int]) -> None:
    """`lost.json`: the node ids the job lost (sorted), for the host to name their peers."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOST_FILE).write_text(json.dumps({"lost": sorted(lost)}) + "\n")


class RoundClock:
    """Wall time of each round: from the end of the previous round's evaluation (or the start) to the end of its own."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.seconds: dict[int, float] = {}

    def on_round(self, stage: str, server_round: int, _metrics: list[dict], _errors: list[str]) -> None:
        if stage == "evaluate":
            now = time.monotonic()
            self.seconds[server_round] = now - self.last
            self.last = now


def write_result(
    directory: Path,
    job_id: str,
    outcome: HostedRun,
    seconds: dict[int, float] | None = None,
    exchanges: Iterable[dict[str, Any]] = (),
) -> None:
    """`model.safetensors` and `metrics.json` (per round: each peer's train/evaluate metrics, wall time;
    `exchanges`: the grid's message exchanges in order, see `fedsilo.peers.server.polling_grid.Exchange`)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in outcome.weights.items()},
        str(directory / "model.safetensors"),
        metadata={"fedsilo.job": job_id},
    )
    strategy = outcome.strategy
    secure = find_wrapper(strategy, SecureAggregation)
    rounds = sorted(set(strategy.train) | set(strategy.evaluate))
    per_round = [
        {
            "round": r,
            "seconds": (seconds or {}).get(r),
            "train": strategy.train.get(r, []),
            "evaluate": strategy.evaluate.get(r, []),
            "errors": strategy.errors.get(r, []),
            "secure_aggregation": None
            if secure is None
            else {
                "dropped": {str(k): v for k, v in secure.dropouts.get(r, {}).items()},
                "refused": {str(k): v for k, v in secure.refusals.get(r, {}).items()},
                "aborted": secure.aborted_rounds.get(r),
            },
        }
        for r in rounds
    ]
    (directory / "metrics.json").write_text(
        json.dumps({"job": job_id, "rounds": per_round, "exchanges": list(exchanges)}, indent=2) + "\n"
    )


def job_nodes(value: str | None) -> list[int]:
    """The node ids the host registered for the job (comma-separated)."""
    try:
        nodes = [int(part) for part in (value or "").split(",") if part.strip()]
    except ValueError:
        nodes = []
    if not nodes:
        raise ConfigError(
            "a deployed job's ServerApp needs FEDSILO_JOB_NODES (the registered node ids); "
            "start it with peers.deployment.host_training"
        )
    return nodes


def output_directory(value: str | None) -> Path:
    if not value:
        raise ConfigError(
            "a deployed job's ServerApp needs FEDSILO_HOST_OUTPUT (the host's result directory); "
            "start it with peers.deployment.host_training"
        )
    return Path(value)
