"""PromptGrid's liveness: lost job nodes are left out of sampling, and too few left ends the job at once."""

import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.peers.flower_compat.messages import ErrorCode
from fedsilo.peers.server.polling_grid import PeersLost, PromptGrid
from fedsilo.strategies.factory import build_strategy


class _Inner:
    """A SuperLink as the ServerApp sees it: `online` nodes; a message to a node not online gets the
    SuperLink's NODE_UNAVAILABLE error reply, others a reply from their node."""

    def __init__(self, online: set[int], forgers: frozenset[int] = frozenset()) -> None:
        self.online = online
        self.forgers = forgers  # online, but answer with a NODE_UNAVAILABLE error of their own
        self.stored: dict[str, Message] = {}

    def get_node_ids(self):
        return sorted(self.online)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message_id = f"m{len(self.stored)}"
            message.metadata.__dict__["_message_id"] = message_id
            self.stored[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids):
        replies = []
        for message_id in message_ids:
            message = self.stored[message_id]
            if message.metadata.dst_node_id in self.online - self.forgers:
                replies.append(Message(RecordDict({"c": ConfigRecord({"ok": 1})}), reply_to=message))
            else:
                replies.append(Message(Error(ErrorCode.NODE_UNAVAILABLE, "node unavailable"), reply_to=message))
        return replies


def _messages(nodes):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    return [Message(RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=n, message_type="train") for n in nodes]


def test_a_node_gone_offline_is_lost_and_never_sampled_again_even_if_it_returns():
    inner = _Inner({1, 2, 3})
    grid = PromptGrid(inner, interval=0.0, nodes=[1, 2, 3, 99])
    grid.watch([1, 2, 3], minimum=2)
    assert list(grid.get_node_ids()) == [1, 2, 3]
    inner.online.discard(3)
    assert list(grid.get_node_ids()) == [1, 2] and grid.lost == {3} and grid.alive == [1, 2]
    inner.online.add(3)  # back after it was dropped: the job goes on without it
    assert list(grid.get_node_ids()) == [1, 2]


def test_the_superlinks_unavailable_reply_marks_its_destination_lost():
    inner = _Inner({1, 2})
    grid = PromptGrid(inner, interval=0.0)
    grid.watch([1, 2, 3], minimum=2)
    replies = grid.send_and_receive(_messages([1, 2, 3]), timeout=5)
    assert len(replies) == 3 and sum(r.has_error() for r in replies) == 1
    assert grid.lost == {3}


def test_a_peer_cannot_get_another_lost_by_an_error_reply_of_its_own():
    """A reply is matched to the message it answers: node 1 forging "node unavailable" loses only itself."""
    inner = _Inner({1, 2, 3}, forgers=frozenset({1}))
    grid = PromptGrid(inner, interval=0.0)
    grid.watch([1, 2, 3], minimum=2)
    grid.send_and_receive(_messages([1, 2, 3]), timeout=5)
    assert grid.lost == {1} and grid.alive == [2, 3]


def test_below_the_minimum_the_grid_raises_naming_the_lost_nodes():
    inner = _Inner({1, 2})
    grid = PromptGrid(inner, interval=0.0)
    grid.watch([1, 2], minimum=2)
    inner.online.discard(2)
    with pytest.raises(PeersLost, match=r"lost node\(s\) 2 .*1 node\(s\) left, the job needs at least 2") as lost:
        grid.get_node_ids()
    assert lost.value.lost == frozenset({2})


def test_an_unwatched_grid_passes_the_nodes_through():
    inner = _Inner({1, 2, 3})
    grid = PromptGrid(inner, interval=0.0, nodes=[1, 2])
    assert list(grid.get_node_ids()) == [1, 2]
    inner.online = set()
    assert list(grid.get_node_ids()) == [] and grid.lost == set()


def test_rounds_sample_from_the_survivors_when_min_nodes_is_given():
    inner = build_strategy("fedavg", 3, min_nodes=2).inner.inner  # Observed(ReplyGuard(FedAvg))
    assert (inner.min_available_nodes, inner.min_train_nodes, inner.min_evaluate_nodes) == (2, 2, 2)
    inner = build_strategy("fedavg", 3).inner.inner
    assert (inner.min_available_nodes, inner.min_train_nodes, inner.min_evaluate_nodes) == (3, 3, 3)


def test_a_deployed_job_goes_on_with_as_few_peers_as_secagg_and_its_owner_allow():
    from fedsilo.errors import ConfigError
    from fedsilo.peers.job import JobConfig, SecAggSpec
    from fedsilo.peers.server.deployed import job_min_peers, survivors_needed

    def job(peers, **extra):
        return JobConfig(label="Y", encoder_path="", peers=peers, **extra)

    assert survivors_needed(job(3), 100, "standard") == 2  # SecAgg+ threshold for 3 peers: one may drop
    assert survivors_needed(job(2), 100, "standard") == 2  # for 2 peers: none may
    assert survivors_needed(job(3, secagg=SecAggSpec(mode="off")), 100, "standard") == 1
    assert job_min_peers("3") == 3 and job_min_peers(None) == 1 and job_min_peers("0") == 1
    with pytest.raises(ConfigError, match="FEDSILO_JOB_MIN_PEERS must be a whole number"):
        job_min_peers("two")


def test_the_finish_skips_a_lost_peer_but_not_a_live_peers_error():
    from fedsilo.errors import FedsiloError
    from fedsilo.peers.server.deployed import announce_finish

    inner = _Inner({1, 2})  # node 3 is offline: the SuperLink answers for it
    grid = PromptGrid(inner, interval=0.0)
    grid.watch([1, 2, 3], minimum=2)
    _messages([])  # the ServerApp's task identity
    announce_finish(grid, [1, 2, 3], "job")
    assert grid.lost == {3}
    inner = _Inner({1, 2, 3}, forgers=frozenset())
    inner.pull_messages = lambda ids: [
        Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "boom"), reply_to=inner.stored[i]) for i in ids
    ]
    with pytest.raises(FedsiloError, match="query.finish: .*boom"):
        announce_finish(PromptGrid(inner, interval=0.0), [1], "job")
