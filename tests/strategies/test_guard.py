"""ReplyGuard: malformed training replies are refused before aggregation."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.strategies.guard import ReplyGuard, check_train_reply

EXPECTED = {"w": (2, 3), "b": (2,)}


def _reply(arrays, weight=10, node=5):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    ins = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=node, message_type="train")
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": weight}),
        }
    )
    reply = Message(content, reply_to=ins)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


def good(scale=1.0):
    return {"w": np.full((2, 3), scale, np.float32), "b": np.zeros(2, np.float32)}


def test_well_formed_reply_passes():
    assert check_train_reply(_reply(good()), EXPECTED, "num-examples") is None


@pytest.mark.parametrize(
    "arrays, weight, fragment",
    [
        ({"w": np.full((2, 3), np.nan, np.float32), "b": np.zeros(2, np.float32)}, 10, "NaN"),
        ({"w": np.full((2, 3), np.inf, np.float32), "b": np.zeros(2, np.float32)}, 10, "NaN or infinite"),
        ({"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}, 10, "shape (3, 2)"),
        ({"w": np.zeros((2, 3), np.float32)}, 10, "missing ['b']"),
        ({**good(), "extra": np.zeros(1, np.float32)}, 10, "unexpected ['extra']"),
        ({"w": np.zeros((2, 3), np.int64), "b": np.zeros(2, np.float32)}, 10, "dtype int64"),
        (good(), 0, "positive finite"),
        (good(), float("nan"), "positive finite"),
    ],
)
def test_malformed_replies_are_refused(arrays, weight, fragment):
    reason = check_train_reply(_reply(arrays, weight), EXPECTED, "num-examples")
    assert reason is not None and fragment in reason


def test_guard_drops_bad_reply_and_aggregates_the_rest_exactly():
    guard = ReplyGuard(FedAvg(min_available_nodes=1))
    guard._expected = EXPECTED
    replies = [
        _reply(good(1.0), weight=1, node=1),
        _reply(good(4.0), weight=3, node=2),
        _reply({"w": np.full((2, 3), np.nan, np.float32), "b": np.zeros(2, np.float32)}, 5, node=3),
    ]
    arrays, _ = guard.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 3), (1 * 1.0 + 3 * 4.0) / 4))
    assert [(r.server_round, r.node_id) for r in guard.refusals] == [(1, 3)]
    assert "NaN" in guard.refusals[0].reason
