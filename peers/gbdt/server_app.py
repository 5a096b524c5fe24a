"""The host's side of a boosting job over Flower messages: the ServerApp drives trees level by level.

`host_gbdt` runs the same loop as the in-process simulation (`fedsilo.peers.gbdt.federation.boost`):
per tree, one SecAgg+ release of the level histograms per level and one of the leaf
totals, in multi-release sessions (`fedsilo.strategies.gbdt.SecureSession`). Only the
transport differs: each session stage goes to every bank at once as ``query.gbdt``
messages (`FlowerExchange`, encoded by `fedsilo.peers.gbdt.wire`) and the answers that
come back within the timeout are delivered; a bank that does not answer is a dropout
of that stage, one that answers with an error (its own refusal, e.g. a histogram
outside the clipped range, named by the bank) is recorded as refused. Below the
session's threshold a release aborts before anything is unmasked: nothing is released
and the tree stops there.

The banks are `RemoteBank`s: the host keeps, per bank, the release it asked for (kind
and tree being grown) and the trees it finished, which travel with the next mask call.
The host never sends a bank a noise level, a plan or a configuration: each bank
derives those from the job's run config (`fedsilo.peers.gbdt.job.GBDTJob`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fedsilo.errors import FedsiloError, ProtocolError
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.errors import Refused
from fedsilo.peers.gbdt.bins import layout_from_encoder
from fedsilo.peers.gbdt.federation import BoostResult, boost
from fedsilo.peers.gbdt.job import GBDTJob
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.peers.gbdt.wire import MESSAGE_TYPE, call_content, read_answer, tree_state
from fedsilo.peers.job import JobConfig
from fedsilo.privacy.secagg import Verifier
from fedsilo.strategies.gbdt.tree import Tree

REPLY_TIMEOUT_SECONDS = 300.0
MODEL_FILE = "model.json"


class RemoteBank:
    """A bank as the host's loop sees it: a name, a node id, its requested release and the finished trees."""

    def __init__(self, name: str, node_id: int) -> None:
        self.name = name
        self.node_id = node_id
        self.kind: str | None = None
        self.tree: Tree | None = None
        self.finished: list[Tree] = []

    def start_tree(self) -> None:
        """Nothing to do here: the bank computes its gradients when a release reaches it."""

    def request(self, kind: str, tree: Tree) -> None:
        self.kind, self.tree = kind, tree

    def finish_tree(self, tree: Tree, learning_rate: float) -> None:
        self.finished.append(tree)


class FlowerExchange:
    """`fedsilo.strategies.gbdt.secure_session.Exchange` over a Flower grid (see the module docstring)."""

    def __init__(self, grid: Grid, banks: Mapping[int, RemoteBank], timeout: float = REPLY_TIMEOUT_SECONDS) -> None:
        self.grid = grid
        self.banks = dict(banks)
        self.timeout = timeout
        self.messages = 0  # sent so far (for the run's metrics)

    def __call__(self, method: str, calls: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        messages = []
        for u, args in calls.items():
            extra = None
            if method == "session_mask":
                bank = self.banks[u]
                assert bank.tree is not None
                extra = {
                    "kind": bank.kind,
                    "tree": tree_state(bank.tree),
                    "model": [t.to_dict() for t in bank.finished],
                }
            content = call_content(method, args, extra)
            messages.append(Message(content, dst_node_id=u, message_type=MESSAGE_TYPE))
        if not messages:
            return {}
        self.messages += len(messages)
        answers: dict[int, Any] = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            u = reply.metadata.src_node_id
            if u not in calls or u in answers:
                continue  # a reply from a node not asked, or a second one: ignored
            name = self.banks[u].name
            if reply.has_error():
                answers[u] = Refused(f"bank {name} refused: {reply.error.reason}")
                continue
            try:
                answers[u] = read_answer(method, reply.content)
            except ProtocolError as error:
                answers[u] = ProtocolError(f"bank {name}: {error}")
        return answers


def host_gbdt(
    grid: Grid,
    terms: GBDTJob,
    nodes: Mapping[int, str],
    encoder: TabularEncoder,
    verifier: Verifier | None = None,
    timeout: float = REPLY_TIMEOUT_SECONDS,
    on_tree: Callable[[int, GBDTModel], None] | None = None,
) -> BoostResult:
    """Boost ``terms.trees`` trees among ``nodes`` (node id -> bank name) over ``grid``.

    ``on_tree(t, model)`` is called after each finished tree (the simulation's learning curve)."""
    if len(nodes) != terms.banks:
        raise FedsiloError(f"the job is planned for {terms.banks} banks, {len(nodes)} take part")
    layout = layout_from_encoder(encoder, terms.bins)
    plan = terms.plan()
    banks = {u: RemoteBank(name, u) for u, name in sorted(nodes.items())}
    exchange = FlowerExchange(grid, banks, timeout)
    return boost(
        list(banks.values()),  # type: ignore[arg-type]  # the loop only uses what RemoteBank has
        layout,
        terms.settings,
        plan,
        terms.row_bound,
        verifier=verifier,
        configs=terms.configs(layout, plan),
        on_tree=on_tree,
        exchange=exchange,
    )


def write_gbdt_result(directory: Path, job_id: str, result: BoostResult, encoder: TabularEncoder) -> None:
    """``model.json`` (`fedsilo.peers.gbdt.model_file`), ``encoder.json`` and ``metrics.json`` (every release)."""
    directory.mkdir(parents=True, exist_ok=True)
    result.model.save(directory / MODEL_FILE)
    (directory / "encoder.json").write_text(encoder.to_json())
    spent = {name: len(m) for name, m in result.spent.items()}
    (directory / "metrics.json").write_text(
        json.dumps(
            {"job": job_id, "trees": len(result.model.trees), "releases": result.releases, "spent_releases": spent},
            indent=2,
        )
        + "\n"
    )


def run_deployed_gbdt(grid: Grid, job: JobConfig, terms: GBDTJob, output: Path) -> BoostResult:
    """A deployed boosting job at its host, as `fedsilo.peers.server.app` runs the neural ones.

    The peers' summaries give the encoder, which every peer keeps (`fedsilo.peers.server.deployed`);
    the trees are boosted among the job's nodes; the model, encoder and metrics go to
    ``output``; every peer is told the job is over. The host checks no signature itself:
    each bank checks its neighbours' session keys against the consortium's manifest.
    """
    from fedsilo.peers.server.deployed import announce_finish, fit_encoder_from_peers, wait_for_peers

    nodes = wait_for_peers(grid, terms.banks)
    encoder = fit_encoder_from_peers(grid, nodes, job.job_id, job.label)
    result = host_gbdt(grid, terms, {u: f"node {u}" for u in nodes}, encoder)
    write_gbdt_result(output, job.job_id, result, encoder)
    announce_finish(grid, nodes, job.job_id)
    return result
