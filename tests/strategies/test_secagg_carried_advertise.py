"""A round's evaluation carries the next round's SecAgg+ key advertisement (`SecureAggregation(rounds=...)`).

The strategy runs under Flower's own `Strategy.start`; each message is answered in
this process by the peer's real `secagg_mod` (its own Context per peer) around a
small app that evaluates and trains deterministically, so the protocol and the
aggregate are the real ones.
"""

import numpy as np
from _consortium import identity_configs
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.peers.client.mods.secagg import secagg_mod
from fedsilo.peers.job import JobConfig, secagg_config
from fedsilo.strategies.secagg import SECAGG_CONFIG_KEY, SecureAggregation
from fedsilo.strategies.secagg.wire import read_stage

SHAPE = (4, 3)


def _delta(node: int) -> np.ndarray:
    return np.full(SHAPE, 0.01 * (node % 7 + 1), dtype=np.float32)


def _app(msg: Message, context: Context) -> Message:
    node = msg.metadata.dst_node_id
    assert SECAGG_CONFIG_KEY not in msg.content.config_records or msg.metadata.message_type == "train"
    if msg.metadata.message_type == "evaluate":
        metrics = MetricRecord({"eval-loss": float(node % 5), "num-examples": 10})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)
    weights = msg.content["arrays"]["w"].numpy()
    return Message(
        RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(weights + _delta(node))}),
                "metrics": MetricRecord({"num-examples": 10, "train-loss": 0.1}),
            }
        ),
        reply_to=msg,
    )


class PeersInProcess(Grid):
    """Answers every message with the peer's `secagg_mod` around `_app`, recording (type, stage) of each exchange."""

    def __init__(self, nodes: list[int], job: JobConfig, identity_dir, suite: str = "standard") -> None:
        self.nodes = nodes
        configs = identity_configs(identity_dir, nodes, suite)
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config=configs[n], state=RecordDict(), run_config=job.to_run_config())
            for n in nodes
        }
        self.exchanges: list[tuple[str, str | None]] = []

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if not messages:  # an aborted round trains no one
            return []
        first = messages[0]
        stage = read_stage(first.content)[0] if SECAGG_CONFIG_KEY in first.content.config_records else None
        self.exchanges.append((first.metadata.message_type, stage))
        replies = []
        for msg in messages:
            reply = secagg_mod(msg, self.contexts[msg.metadata.dst_node_id], _app)
            reply.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
            replies.append(reply)
        return replies

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError


class RecordingFedAvg(FedAvg):
    """FedAvg that records (source node, message type) of each training reply it aggregates."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.aggregated: list[list[tuple[int, str]]] = []

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self.aggregated.append([(r.metadata.src_node_id, r.metadata.message_type) for r in replies])
        return super().aggregate_train(server_round, replies)


def _run(tmp_path, nodes: list[int], fraction_train: float, carry: bool, suite: str = "standard", host_suite=None):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    job = JobConfig(label="y", encoder_path=str(tmp_path / "e.json"), job_id="carried", peers=len(nodes))
    grid = PeersInProcess(nodes, job, tmp_path / f"consortium-{fraction_train}-{carry}-{suite}", suite)
    inner = RecordingFedAvg(
        fraction_train=fraction_train,
        min_train_nodes=round(fraction_train * len(nodes)),
        min_available_nodes=len(nodes),
        min_evaluate_nodes=len(nodes),
    )
    config = secagg_config(job, suite=host_suite or suite)
    strategy = SecureAggregation(inner, config, rounds=3 if carry else None)
    initial = ArrayRecord({"w": Array(np.zeros(SHAPE, dtype=np.float32))})
    result = strategy.start(
        grid=grid, initial_arrays=initial, num_rounds=3, train_config=ConfigRecord(), evaluate_config=ConfigRecord()
    )
    return grid, strategy, result


def test_each_later_round_has_no_advertise_exchange_and_the_model_is_the_same(tmp_path):
    nodes = [11, 12, 13, 14]
    grid, strategy, result = _run(tmp_path, nodes, 1.0, carry=True)
    train = [("train", s) for s in ("share", "mask", "check", "unmask")]
    assert grid.exchanges == [
        ("train", "advertise"),
        *train,
        ("evaluate", "advertise"),
        *train,
        ("evaluate", "advertise"),
        *train,
        ("evaluate", None),
    ]
    assert strategy.aborted_rounds == {} and strategy.refusals == {} and strategy.dropouts == {}
    # the inner strategy aggregates one message per round, the secure sum, from no peer: node 0
    assert strategy.inner.aggregated == [[(0, "train")]] * 3
    mean_delta = np.mean([_delta(n) for n in nodes], axis=0)
    np.testing.assert_allclose(result.arrays["w"].numpy(), 3 * mean_delta, atol=1e-3)  # SecAgg+ quantization
    # the inner strategy saw the evaluations without the carried keys: same metrics as without carrying
    plain_grid, _, plain = _run(tmp_path, nodes, 1.0, carry=False)
    assert len(plain_grid.exchanges) == 3 * 6
    np.testing.assert_allclose(result.arrays["w"].numpy(), plain.arrays["w"].numpy(), atol=1e-3)
    assert dict(result.evaluate_metrics_clientapp[3]) == dict(plain.evaluate_metrics_clientapp[3])


def test_a_round_that_samples_other_peers_than_the_evaluated_ones_advertises_itself(tmp_path):
    grid, strategy, _ = _run(tmp_path, [11, 12, 13, 14], 0.75, carry=True)  # train: 3 of the 4 evaluated
    assert [e for e in grid.exchanges if e == ("train", "advertise")] == [("train", "advertise")] * 3
    assert strategy.aborted_rounds == {} and strategy.refusals == {}


def test_a_peer_whose_evaluation_fails_sends_no_keys_and_sits_out_the_next_round(tmp_path):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    job = JobConfig(label="y", encoder_path=str(tmp_path / "e.json"), job_id="carried", peers=4)
    grid = PeersInProcess([11, 12, 13, 14], job, tmp_path / "consortium")
    strategy = SecureAggregation(FedAvg(min_available_nodes=4), secagg_config(job), rounds=2)
    arrays = ArrayRecord({"w": Array(np.zeros(SHAPE, dtype=np.float32))})
    messages = list(strategy.configure_evaluate(1, arrays, ConfigRecord(), grid))
    assert {read_stage(m.content)[:2] for m in messages} == {("advertise", 2)}

    def failing(msg, _context):
        return Message(Error(code=1, reason="no test rows"), reply_to=msg)

    replies = {}
    for msg in messages:
        node = msg.metadata.dst_node_id
        replies[node] = secagg_mod(msg, grid.contexts[node], failing if node == 12 else _app)
        replies[node].metadata.__dict__["_src_node_id"] = node
    assert replies[12].has_error() and not replies[11].has_error()
    replies = list(replies.values())
    strategy.aggregate_evaluate(1, replies)
    assert all(r.has_error() or SECAGG_CONFIG_KEY in r.content.config_records for r in replies)
    out = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    assert ("train", "advertise") not in grid.exchanges
    assert sorted(m.metadata.dst_node_id for m in out) == [11, 13, 14]
    assert "no test rows" in strategy.dropouts[2][12]


def test_a_gm_consortium_aggregates_under_the_gm_suite(tmp_path):
    """The real strategy and every peer's real `secagg_mod`, in a gm consortium: SM2 round keys,
    SM2-signed advertisements, SM4-GCM shares, SM4-CTR masks; the model moves by the exact mean."""
    nodes = [11, 12, 13, 14]
    grid, strategy, result = _run(tmp_path, nodes, 1.0, carry=True, suite="gm")
    assert strategy.config.suite == "gm"
    assert strategy.aborted_rounds == {} and strategy.refusals == {} and strategy.dropouts == {}
    mean_delta = np.mean([_delta(n) for n in nodes], axis=0)
    np.testing.assert_allclose(result.arrays["w"].numpy(), 3 * mean_delta, atol=1e-3)
    state = grid.contexts[11].state["fedsilo.secagg.client"]
    assert '"enc_public_key": "04' in str(state["state"])  # the neighbours' keys it holds: SM2 points


def test_a_host_on_the_standard_suite_refuses_a_gm_consortiums_keys_by_name(tmp_path):
    """A host whose SecAgg+ server runs another suite than the peers' manifests (it cannot make them
    change): every advertisement is refused naming the suite, the round aborts, nothing is unmasked."""
    nodes = [11, 12, 13, 14]
    _, strategy, result = _run(tmp_path, nodes, 1.0, carry=False, suite="gm", host_suite="standard")
    assert set(strategy.refusals[1]) == set(nodes)
    assert all(
        "standard suite: an agreement public key (X25519) is 32 bytes, not 65" in r
        for r in strategy.refusals[1].values()
    )
    assert set(strategy.aborted_rounds) == {1, 2, 3}
    assert strategy.inner.aggregated == [[], [], []] and "w" not in result.arrays  # no round released anything
