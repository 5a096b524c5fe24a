"""WindowedGrid: at most `window` messages of an exchange in flight, every reply collected."""

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.peers.server.windowed_grid import WindowedGrid


class _Inner:
    """A grid whose nodes answer every message one pull after it was pushed (or never)."""

    def __init__(self, silent: set[int] = frozenset()) -> None:
        self.silent = silent
        self.stored: dict[str, Message] = {}
        self.pushed: list[int] = []
        self.most_in_flight = 0

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message_id = f"m{len(self.pushed)}"
            self.pushed.append(message.metadata.dst_node_id)
            self.stored[message_id] = message
            ids.append(message_id)
        self.most_in_flight = max(self.most_in_flight, len(self.stored))
        return ids

    def pull_messages(self, message_ids):
        replies = []
        for message_id in list(message_ids):
            message = self.stored[message_id]
            if message.metadata.dst_node_id in self.silent:
                continue
            reply = Message(
                RecordDict({"c": ConfigRecord({"node": message.metadata.dst_node_id})}),
                reply_to=_with_id(message, message_id),
            )
            replies.append(reply)
            del self.stored[message_id]
        return replies


def _with_id(message: Message, message_id: str) -> Message:
    message.metadata.__dict__["_message_id"] = message_id
    return message


def _messages(n: int) -> list[Message]:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1  # as the ServerApp's process has
    return [
        Message(RecordDict({"c": ConfigRecord({"x": i})}), dst_node_id=100 + i, message_type="train") for i in range(n)
    ]


def test_every_message_is_sent_in_order_with_few_in_flight():
    inner = _Inner()
    replies = WindowedGrid(inner, window=7, interval=0.0).send_and_receive(_messages(50), timeout=10)
    assert inner.pushed == [100 + i for i in range(50)]
    assert inner.most_in_flight == 7
    assert sorted(r.content["c"]["node"] for r in replies) == [100 + i for i in range(50)]


def test_a_silent_node_holds_one_slot_until_the_timeout_and_gets_no_reply():
    inner = _Inner(silent={103})
    replies = WindowedGrid(inner, window=4, interval=0.001).send_and_receive(_messages(20), timeout=0.5)
    assert len(replies) == 19 and 103 not in {r.content["c"]["node"] for r in replies}
    assert inner.pushed == [100 + i for i in range(20)] and inner.most_in_flight == 4


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        WindowedGrid(_Inner(), window=0)
