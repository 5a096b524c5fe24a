"""A Grid that collects replies promptly under the Deployment Engine.

Flower 1.42's `HttpGrid.send_and_receive` (the ServerApp's grid under the Deployment
Engine) waits 3 s between two pulls of replies, so every message exchange of a round
(secure aggregation has four in training, plus evaluation) costs up to 3 s of idle
waiting. `PromptGrid` wraps any Grid and implements `send_and_receive` with the
Grid's own public `push_messages`/`pull_messages`, pulling every `interval` seconds;
everything else is the wrapped grid's. The semantics are Flower's: replies are
collected until all arrived or `timeout` passed.

A prompt pull meets a second wait: a reply is listed as soon as its SuperNode pushed
the message, before its objects arrive, and `HttpGrid` then retries the missing
objects with Flower's backoff (1 s, doubling). Wrapping an `HttpGrid` therefore also
starts that backoff at `interval` (capped at 4 × `interval`) in the ServerApp's
process: the same retries, sooner (`fedsilo.peers.flower_compat.grid`). The
job's SuperLink holds a pull for an object not pushed yet until it arrives
(`fedsilo.peers.deployment.long_poll`), so these retries happen only when a hold ends empty.
It also runs `HttpGrid`'s object pushes and pulls on reused threads instead of a new
thread pool per message (`fedsilo.peers.flower_compat.object_pools`).

Every message is sent with its content packed (`fedsilo.peers.packed_content`: the whole
RecordDict travels as one Flower record, so a message is three Flower objects and every
hop makes that many fewer HTTP requests), those three objects ride inside the push and
pull requests themselves (`fedsilo.peers.flower_compat.inline_objects`), and every reply is unpacked before the
strategy sees it (a malformed one becomes an error reply); the fedsilo ClientApp's
`packed_content_mod` does the reverse at the peer.

`exchanges` records, for every `send_and_receive`, the message type, how many
messages went out, how long pushing them took and how long until the last reply
was in (wall seconds), and the name and shape of every array the replies carried
(what the host received, for audits: a transfer job's host must never receive a
peer's private parameter): the deployed ServerApp writes them into `metrics.json`,
and `bench/deployed_round.py` prints them per SecAgg+ stage.

With `nodes`, the grid shows only those node ids (`get_node_ids`): the nodes the job
host registered for the job's accepting peers. Flower's Control API has no account
authentication in its open-source distribution, so a node registered by anyone else
on the same SuperLink is never sampled.

Liveness (`watch`, deployed jobs): once every job node has connected, the grid
watches them. A job node the SuperLink no longer lists as online (its heartbeats
stopped, `fedsilo.peers.flower_compat.heartbeat`), or whose message the SuperLink
answered with `NODE_UNAVAILABLE`, is lost for the rest of the job: `get_node_ids`
leaves it out, so the strategy samples the survivors, and raises `PeersLost`
(naming the lost node ids) as soon as fewer than `minimum` job nodes are left, so
the job ends at once instead of Flower waiting for nodes that will not come back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedsilo.errors import FedsiloError
from fedsilo.peers.flower_compat.grid import Run, carry_small_messages, is_deployment_grid, prompt_object_pulls
from fedsilo.peers.flower_compat.messages import ErrorCode
from fedsilo.peers.flower_compat.object_pools import reuse_object_threads
from fedsilo.peers.packed_content import pack_message, unpack_reply

# The job's SuperLink holds a pull that finds nothing until something is pushed
# (`fedsilo.peers.deployment.long_poll`), so this pause only keeps a SuperLink without long
# polling from being asked in a hot loop. It follows a pull that returned some replies
# but not all; 50 ms there cost up to 50 ms per exchange.
DEFAULT_INTERVAL_SECONDS = 0.005


@dataclass(frozen=True)
class Exchange:
    """One `send_and_receive`: what went out, and its wall time (push, then until the last reply)."""

    message_type: str
    messages: int
    replies: int
    push_seconds: float
    seconds: float
    arrays: tuple[str, ...] = ()  # every distinct "name shape" of an array the replies carried

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PeersLost(FedsiloError):
    """Fewer job nodes are left than the job can continue with; `lost` names the ones that stopped answering."""

    def __init__(self, lost: frozenset[int], alive: int, minimum: int) -> None:
        self.lost = lost
        super().__init__(
            f"lost node(s) {', '.join(str(n) for n in sorted(lost))} (they stopped answering); "
            f"{alive} node(s) left, the job needs at least {minimum}"
        )


class PromptGrid(Grid):
    def __init__(
        self, inner: Grid, interval: float = DEFAULT_INTERVAL_SECONDS, nodes: Iterable[int] | None = None
    ) -> None:
        self.inner = inner
        self.interval = interval
        self.nodes = None if nodes is None else frozenset(nodes)
        self.exchanges: list[Exchange] = []
        self.watched: frozenset[int] = frozenset()
        self.lost: set[int] = set()
        self.minimum = 1
        self._destinations: dict[str, int] = {}
        if is_deployment_grid(inner):
            prompt_object_pulls(interval)
            carry_small_messages()
            reuse_object_threads()

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def watch(self, nodes: Iterable[int], minimum: int) -> None:
        """From now on, a node of `nodes` that goes offline is lost; fewer than `minimum` left raises `PeersLost`."""
        self.watched = frozenset(nodes)
        self.minimum = minimum

    @property
    def alive(self) -> list[int]:
        """The watched nodes not lost (sorted)."""
        return sorted(self.watched - self.lost)

    def get_node_ids(self) -> Iterable[int]:
        ids = self.inner.get_node_ids()
        ids = ids if self.nodes is None else [i for i in ids if i in self.nodes]
        if not self.watched:
            return ids
        self.lost.update(self.watched - set(ids))
        self._check_alive()
        return [i for i in ids if i in self.watched and i not in self.lost]

    def _check_alive(self) -> None:
        if self.watched and len(self.watched - self.lost) < self.minimum:
            raise PeersLost(frozenset(self.lost), len(self.watched - self.lost), self.minimum)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(self.inner.push_messages([pack_message(m) for m in messages]))
        if self.watched:
            self._destinations.update((i, m.metadata.dst_node_id) for i, m in zip(ids, messages, strict=False) if i)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = [unpack_reply(m) for m in self.inner.pull_messages(message_ids)]
        for reply in replies:
            node = self._destinations.pop(reply.metadata.reply_to_message_id, None)
            if node is not None and reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE:
                self.lost.add(node)  # the SuperLink's own reply: the node is offline
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        started = time.monotonic()
        pending = set(self.push_messages(messages))
        pushed = time.monotonic()
        end = None if timeout is None else started + timeout
        replies: list[Message] = []
        while pending and (end is None or time.monotonic() < end):
            arrived = list(self.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if pending:
                time.sleep(self.interval)
        kind = messages[0].metadata.message_type if messages else ""
        self.exchanges.append(
            Exchange(
                kind, len(messages), len(replies), pushed - started, time.monotonic() - started, _array_shapes(replies)
            )
        )
        return replies


def _array_shapes(replies: list[Message]) -> tuple[str, ...]:
    """Sorted distinct "name (shape)" of every array in `replies` (error replies carry none)."""
    seen = {
        f"{name} {tuple(array.shape)}"
        for reply in replies
        if not reply.has_error()
        for record in reply.content.array_records.values()
        for name, array in record.items()
    }
    return tuple(sorted(seen))
