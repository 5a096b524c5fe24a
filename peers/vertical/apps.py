"""Split learning on Flower: a relaying ServerApp and one ClientApp for the label holder and the feature parties.

The ServerApp (:class:`Relay`) is the orchestrator and holds nothing private: no row,
no model, no label. It learns which node is which party (each says so), forwards every
message of :mod:`.messages` between the label holder and the feature parties (as
RecordDicts, :mod:`.records`) and counts their bytes. Every decision is a party's: the
label holder picks the batches and says when an epoch and the training end; a feature
party answers only what it is asked and refuses what it was not (the checks of
:mod:`.parties`). A party's refusal comes back as an error reply and stops the run with
its message (:class:`~fedsilo.errors.ProtocolError`).

One batch is two exchanges. The relay sends the label holder the feature parties'
embeddings of the current batch; the holder steps and answers with the gradients for
each party and the requests of its next batch. The relay then sends each feature party
its gradients and its next request in one message; the party applies the gradients
before it computes the next embeddings, so the steps happen in the order of
:func:`fedsilo.peers.vertical.training.train` and, without DP, give the same model.
Scoring (held-out customers) and the end of the job (each party writes its own part)
follow.

Where each party's state lives: the ClientApp is stateless between messages. A party is
its data (read once per process from its own file, :func:`write_party_file`: fixed for
the job) and its mutable state (model parameters, release counts, the batch it awaits
gradients for, the holder's place in its schedule), which is kept in the node's Flower
``context.state`` (:mod:`.state`) and put back into the party at every message. Flower
hands a node's Context to whichever Ray worker runs its next message, so the party
continues where it stopped in any worker; a process-local store would not.

Under Flower's Deployment Engine (a vertical job of the split scheme between peer
daemons, :mod:`fedsilo.peers.daemon.roles.vertical_split`) each SuperNode's node config
names its party file (``vertical-party``, written by its own daemon from its own rows),
its ``state-dir`` and the ``job-id``: the party's final state is written there, and so is
its durable privacy record (:mod:`fedsilo.peers.client.node_state`): what its accountant
has charged is written before each reply (and so each release) leaves, and the record is
marked finished at the end, which is what the peer's daemon commits to its ledger. The
ServerApp is :mod:`fedsilo.peers.vertical.deployed`: the same :class:`Relay`.

Message types: ``query.vertical_hello`` (who are you), ``query.vertical_connect`` (the
holder checks the parties' alignments), ``train.vertical_step`` (holder),
``train.vertical_embed`` (feature party: gradients and/or a request),
``evaluate.vertical_score`` (holder: requests for the held-out rows, then their
embeddings), ``query.vertical_finish`` (each party writes its final state).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from safetensors.numpy import load_file, save_file

from fedsilo.errors import FedsiloError, ProtocolError
from fedsilo.peers.client import node_state
from fedsilo.peers.client.local_training import limit_threads
from fedsilo.peers.flower_app import PARTY_NODE_KEY
from fedsilo.peers.flower_compat.grid import is_simulation_grid
from fedsilo.peers.packed_content import packed_content_mod
from fedsilo.peers.server.polling_grid import PromptGrid
from fedsilo.peers.server.windowed_grid import WindowedGrid
from fedsilo.peers.vertical import records
from fedsilo.peers.vertical.messages import BatchRequest, Embeddings, Gradients
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder
from fedsilo.peers.vertical.state import export_state, import_state
from fedsilo.peers.vertical.training import EpochStats
from fedsilo.privacy.noise_source import SecureNoise, SeededNoise

__all__ = [
    "PARTIES_DIR_KEY",
    "Relay",
    "build_client_app",
    "final_state_file",
    "party_file",
    "read_final_state",
    "write_party_file",
]

PARTIES_DIR_KEY = "vertical.parties-dir"  # run config: where each node finds its party file (by partition id)
STATE_KEY = "fedsilo.vertical.state"
SCHEDULE_KEY = "fedsilo.vertical.schedule"
HOLDER, FEATURE = "holder", "feature"
PULL_INTERVAL = 0.005

Tap = Callable[[str, str, RecordDict], None]


# --------------------------------------------------------------------------- a party's own files


@dataclass(frozen=True)
class Plan:
    """The label holder's schedule: ``epochs`` passes over its training index in batches, shuffled from ``seed``."""

    epochs: int = 1
    batch_size: int = 128
    seed: int = 0


def party_file(directory: Path, node: int) -> Path:
    """The file of the party simulated node ``node`` (its partition id) plays."""
    return Path(directory) / f"node-{node}.pickle"


def final_state_file(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.final.safetensors"


def write_party_file(
    directory: Path, node: int, party: FeatureParty | LabelHolder, plan: Plan, noise_seed: int | None
) -> Path:
    """Write what node ``node`` needs to play ``party`` (its data and fresh model; the holder's ``plan``).

    ``noise_seed``: a seeded noise source (``--reproducible`` only); otherwise the node
    draws its noise from ``SecureNoise``. The party's own noise object is not written.
    """
    path = party_file(directory, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    noise, party.noise = party.noise, None
    try:
        role = HOLDER if isinstance(party, LabelHolder) else FEATURE
        path.write_bytes(pickle.dumps({"role": role, "party": party, "plan": plan, "noise_seed": noise_seed}))
    finally:
        party.noise = noise
    return path


def read_final_state(directory: Path, name: str) -> dict[str, np.ndarray]:
    """What party ``name`` wrote when the job finished (:func:`fedsilo.peers.vertical.state.export_state`)."""
    return load_file(str(final_state_file(directory, name)))


@lru_cache(maxsize=8)
def _load(path: str, stamp: float) -> dict[str, Any]:
    loaded = pickle.loads(Path(path).read_bytes())
    party = loaded["party"]
    if party.dp is not None:
        party.noise = SecureNoise() if loaded["noise_seed"] is None else SeededNoise(loaded["noise_seed"])
    return loaded


def _party(context: Context, fresh: bool = False) -> dict[str, Any]:
    """This node's party, its state put back from the Context (``fresh``: as built, for the first message)."""
    own = context.node_config.get(PARTY_NODE_KEY)
    directory = context.run_config.get(PARTIES_DIR_KEY)
    if own:
        path = Path(str(own))
    elif directory:
        path = party_file(Path(str(directory)), int(context.node_config.get("partition-id", 0)))
    else:
        raise ProtocolError(
            f"neither the node config names {PARTY_NODE_KEY} nor the run config {PARTIES_DIR_KEY}: this ClientApp "
            "plays vertical parties only"
        )
    if fresh:
        _load.cache_clear()
    loaded = _load(str(path), path.stat().st_mtime)
    if not fresh:
        if STATE_KEY not in context.state:
            raise ProtocolError(f"{loaded['party'].name}: a message before the hello: refused")
        import_state(loaded["party"], {k: v.numpy() for k, v in context.state[STATE_KEY].items()})
    return loaded


def _keep(context: Context, party: FeatureParty | LabelHolder, finished: bool = False) -> None:
    """Keep the party's state in the Context; deployed, write its durable privacy record first (see the docstring)."""
    _record(context, party, finished)
    context.state[STATE_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in export_state(party).items()})


def _record(context: Context, party: FeatureParty | LabelHolder, finished: bool) -> None:
    """Deployed (``state-dir`` and ``job-id`` in the node config): the party's accountant spending, durably."""
    state_dir, job_id = context.node_config.get("state-dir"), context.node_config.get("job-id")
    if not state_dir or not job_id:
        return
    directory, job = Path(str(state_dir)), str(job_id)
    spent = tuple(party.accountant.mechanisms()) if party.accountant is not None else ()
    with node_state.job_lock(directory, job):
        record = node_state.read_privacy(directory, job)
        if record is None or record.cap is None:
            raise ProtocolError(f"{party.name}: job {job} has no privacy record opened by its daemon: refused")
        if record.finished and not finished:
            raise ProtocolError(f"{party.name}: job {job} has ended at this peer; nothing more is released")
        node_state.write_privacy(directory, replace(record, spent=spent, finished=record.finished or finished))


def _final_directory(context: Context) -> Path:
    """Where a party writes its final state: its own ``state-dir`` when deployed, else the run's parties dir."""
    own = context.node_config.get("state-dir") if context.node_config.get(PARTY_NODE_KEY) else None
    return Path(str(own or context.run_config[PARTIES_DIR_KEY]))


def _reply(message: Message, content: RecordDict) -> Message:
    return Message(content, reply_to=message)


# --------------------------------------------------------------------------- the ClientApp


def _hello(message: Message, context: Context) -> Message:
    """Who this node plays; the first hello starts the party fresh, a later one changes nothing (no reset of counts)."""
    limit_threads()
    started = STATE_KEY in context.state
    loaded = _party(context, fresh=not started)
    party = loaded["party"]
    info: dict[str, Any] = {"role": loaded["role"], "party": party.name}
    if loaded["role"] == FEATURE:
        hello = party.hello()
        info.update(shared=int(hello["shared"]), digest=str(hello["digest"]), width=int(hello["width"]))
    if not started:
        _keep(context, party)
        if loaded["role"] == HOLDER:
            context.state[SCHEDULE_KEY] = ConfigRecord({"epoch": 1, "cursor": 0, "batch": 0, "loss": 0.0})
    return _reply(message, RecordDict({"hello": ConfigRecord(info)}))


def _connect(message: Message, context: Context) -> Message:
    holder = _party(context)["party"]
    hellos = [dict(message.content[key]) for key in message.content if key.startswith("hello.")]
    linked = [link.party for link in holder.links]
    hellos.sort(key=lambda hello: linked.index(hello["party"]) if hello["party"] in linked else len(linked))
    holder.connect(hellos)  # in its links' order; refuses a party it is not linked with
    return _reply(message, RecordDict({"links": ConfigRecord({"parties": [link.party for link in holder.links]})}))


def _order(holder: LabelHolder, seed: int, epoch: int) -> np.ndarray:
    """The holder's training order of ``epoch`` (as :func:`~.training.train` draws it: one generator, epoch by epoch)."""
    rng = np.random.default_rng(seed)
    for _ in range(epoch - 1):
        rng.permutation(holder.train_index)
    return rng.permutation(holder.train_index)


def _step(message: Message, context: Context) -> Message:
    """The label holder: step on the embeddings of its pending batch (if any), then ask for its next batch."""
    limit_threads()
    loaded = _party(context)
    holder, plan = loaded["party"], loaded["plan"]
    schedule = dict(context.state[SCHEDULE_KEY])
    epoch, cursor, batch = int(schedule["epoch"]), int(schedule["cursor"]), int(schedule["batch"])
    if epoch > plan.epochs:
        raise ProtocolError(f"{holder.name}: training has ended; no step is due: refused")
    order = _order(holder, plan.seed, epoch)
    out, status = RecordDict(), {"epoch": epoch, "epoch_done": False, "done": False}
    received = [s for s in records.slots(message.content) if s.startswith("embeddings.")]
    if received:
        index = order[cursor : cursor + plan.batch_size]
        if not len(index) or batch == 0:
            raise ProtocolError(f"{holder.name}: embeddings arrived for no batch it asked: refused")
        embeddings = [records.decode(message.content, f"embeddings.{k}", Embeddings) for k in range(len(holder.links))]
        loss, gradients = holder.step(batch, index, embeddings)
        for k, gradient in enumerate(gradients):
            records.encode(gradient, f"gradients.{k}", out)
        schedule["loss"] = float(schedule["loss"]) + loss * len(index)
        cursor += len(index)
        if cursor >= len(order):
            status.update(epoch_done=True, loss=float(schedule["loss"]) / len(order))
            epoch, cursor, schedule["loss"] = epoch + 1, 0, 0.0
            order = _order(holder, plan.seed, epoch) if epoch <= plan.epochs else order[:0]
    elif batch:
        raise ProtocolError(f"{holder.name}: a step without the embeddings of batch {batch}: refused")
    if epoch <= plan.epochs:
        batch += 1
        index = order[cursor : cursor + plan.batch_size]
        for k in range(len(holder.links)):
            records.encode(holder.request(k, index, batch), f"request.{k}", out)
    else:
        status["done"] = True
    status["epsilon"] = holder.accountant.spent() if holder.accountant is not None else 0.0
    context.state[SCHEDULE_KEY] = ConfigRecord(
        {"epoch": epoch, "cursor": cursor, "batch": batch, "loss": schedule["loss"]}
    )
    _keep(context, holder)
    out["status"] = ConfigRecord(status)
    return _reply(message, out)


def _embed(message: Message, context: Context) -> Message:
    """A feature party: apply the gradients it is sent, then answer the request it is sent."""
    limit_threads()
    party = _party(context)["party"]
    out = RecordDict()
    given = records.slots(message.content)
    if "gradients" in given:
        party.apply(records.decode(message.content, "gradients", Gradients))
    if "request" in given:
        records.encode(party.embed(records.decode(message.content, "request", BatchRequest)), "embeddings", out)
    if not {"gradients", "request"} & set(given):
        raise ProtocolError(f"{party.name}: a message with neither gradients nor a request: refused")
    _keep(context, party)
    out["status"] = ConfigRecord({"epsilon": party.accountant.spent() if party.accountant is not None else 0.0})
    return _reply(message, out)


def _score(message: Message, context: Context) -> Message:
    """The label holder: first the scoring requests for its held-out rows, then their probabilities (kept)."""
    limit_threads()
    holder = _party(context)["party"]
    out = RecordDict()
    index = holder.test_index
    received = [s for s in records.slots(message.content) if s.startswith("embeddings.")]
    if not received:
        for k in range(len(holder.links)):
            records.encode(holder.request(k, index, 0, training=False), f"request.{k}", out)
    else:
        embeddings = [records.decode(message.content, f"embeddings.{k}", Embeddings) for k in range(len(holder.links))]
        context.state["fedsilo.vertical.scores"] = ArrayRecord(
            {"probabilities": Array(holder.predict(0, index, embeddings))}
        )
        out["status"] = ConfigRecord({"scored": len(index)})
    _keep(context, holder)
    return _reply(message, out)


def _finish(message: Message, context: Context) -> Message:
    """Each party writes its final state (and the holder its held-out probabilities) into its own directory."""
    loaded = _party(context)
    party = loaded["party"]
    state = export_state(party)
    if "fedsilo.vertical.scores" in context.state:
        state["scores.probabilities"] = context.state["fedsilo.vertical.scores"]["probabilities"].numpy()
    directory = _final_directory(context)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(final_state_file(directory, party.name)))
    _record(context, party, finished=True)
    return _reply(message, RecordDict({"status": ConfigRecord({"party": party.name})}))


def build_client_app() -> ClientApp:
    """The ClientApp every party of a vertical job runs (its role comes from its own party file)."""
    app = ClientApp(mods=[packed_content_mod])
    app.query("vertical_hello")(_hello)
    app.query("vertical_connect")(_connect)
    app.train("vertical_step")(_step)
    app.train("vertical_embed")(_embed)
    app.evaluate("vertical_score")(_score)
    app.query("vertical_finish")(_finish)
    return app


# --------------------------------------------------------------------------- the ServerApp: a relay


@dataclass
class Relay:
    """The orchestrator: forwards messages between the parties, holds nothing private (module docstring).

    ``tap(direction, party, content)`` sees every RecordDict relayed between the parties
    (``"to_holder"``: a feature party's embeddings; ``"to_party"``: the holder's requests and
    gradients), as it is relayed. ``on_epoch`` gets each epoch's statistics; ``history``
    keeps them.
    """

    parties: int
    nodes: list[int] | None = None  # deployed: only these node ids (the host registered them for the job)
    tap: Tap | None = None
    on_epoch: Callable[[EpochStats], None] | None = None
    history: list[EpochStats] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    error: BaseException | None = None  # what stopped the run (the engine only logs a ServerApp's exception)
    grid: Grid | None = None  # the grid the relay ran on (deployed: a PromptGrid, whose `exchanges` it recorded)

    def _send(self, grid: Grid, sends: list[tuple[int, str, RecordDict]]) -> dict[int, RecordDict]:
        messages = [Message(content, dst_node_id=node, message_type=kind) for node, kind, content in sends]
        replies = {m.metadata.src_node_id: m for m in grid.send_and_receive(messages)}
        for node, kind, _ in sends:
            reply = replies.get(node)
            who = self.names.get(node, f"node {node}")
            if reply is None:
                raise FedsiloError(f"{who} did not answer {kind}: the vertical job stops")
            if reply.has_error():
                raise ProtocolError(f"{who} refused {kind}: {reply.error.reason}")
        return {node: replies[node].content for node, _, _ in sends}

    def _see(self, direction: str, node: int, content: RecordDict) -> None:
        if self.tap is not None:
            self.tap(direction, self.names[node], content)

    def _nodes(self, grid: Grid) -> tuple[int, list[int]]:
        """(the label holder's node, the feature parties' nodes in the holder's order), after checking the alignments."""
        nodes = self._wait_for_nodes(grid)
        hellos = self._send(grid, [(n, "query.vertical_hello", RecordDict()) for n in nodes])
        info = {n: dict(c["hello"]) for n, c in hellos.items()}
        self.names = {n: str(i["party"]) for n, i in info.items()}
        holders = [n for n in nodes if info[n]["role"] == HOLDER]
        if len(holders) != 1:
            raise ProtocolError(f"a vertical job has one label holder; {len(holders)} nodes say they are one")
        holder = holders[0]
        others = [n for n in nodes if n != holder]
        hello = RecordDict(
            {
                f"hello.{i}": ConfigRecord({k: v for k, v in info[n].items() if k != "role"})
                for i, n in enumerate(others)
            }
        )
        links = self._send(grid, [(holder, "query.vertical_connect", hello)])[holder]["links"]["parties"]
        by_name = {self.names[n]: n for n in others}
        return holder, [by_name[name] for name in links]

    def run(self, grid: Grid, context: Context) -> list[EpochStats]:
        """Hello, connect, train (the holder's schedule), score the held-out customers, finish."""
        if is_simulation_grid(grid):
            grid = WindowedGrid(grid, interval=PULL_INTERVAL)
        else:
            grid = PromptGrid(grid, nodes=self.nodes)
        self.grid = grid
        holder, feature_nodes = self._nodes(grid)
        stats, started, content = EpochStats(1, 0.0), time.perf_counter(), RecordDict()
        while True:
            answer = self._send(grid, [(holder, "train.vertical_step", content)])[holder]
            status = dict(answer["status"])
            outs = {node: RecordDict() for node in feature_nodes}
            for k, node in enumerate(feature_nodes):
                if f"gradients.{k}.fields" in answer:
                    message = records.decode(answer, f"gradients.{k}", Gradients)
                    stats.bytes_to_parties += len(message.to_bytes())
                    records.encode(message, "gradients", outs[node])
            finished = stats if status["epoch_done"] else None
            if finished is not None:
                finished.loss = float(status["loss"])
                stats = EpochStats(finished.epoch + 1, 0.0)
            for k, node in enumerate(feature_nodes):
                if f"request.{k}.fields" in answer:
                    message = records.decode(answer, f"request.{k}", BatchRequest)
                    stats.bytes_to_parties += len(message.to_bytes())
                    records.encode(message, "request", outs[node])
                self._see("to_party", node, outs[node])
            # frozen bottoms: no gradient comes back, so the last step leaves the parties nothing to do
            due = [(node, "train.vertical_embed", outs[node]) for node in feature_nodes if len(outs[node])]
            replies = self._send(grid, due) if due else {}
            if finished is not None:
                finished.seconds = time.perf_counter() - started
                started = time.perf_counter()
                epsilon = {self.names[holder]: float(status["epsilon"])}
                epsilon |= {self.names[n]: float(r["status"]["epsilon"]) for n, r in replies.items()}
                finished.epsilon = {k: v for k, v in epsilon.items() if v}
                self.history.append(finished)
                if self.on_epoch is not None:
                    self.on_epoch(finished)
            if status["done"]:
                break
            content = self._embeddings(feature_nodes, replies, stats)
        self._score(grid, holder, feature_nodes)
        self._send(grid, [(n, "query.vertical_finish", RecordDict()) for n in (holder, *feature_nodes)])
        return self.history

    def _embeddings(
        self, feature_nodes: list[int], replies: dict[int, RecordDict], stats: EpochStats | None
    ) -> RecordDict:
        """The feature parties' embeddings, one slot per party in the holder's order, for the holder."""
        content = RecordDict()
        for k, node in enumerate(feature_nodes):
            self._see("to_holder", node, replies[node])
            message = records.decode(replies[node], "embeddings", Embeddings)
            if stats is not None:
                stats.bytes_to_holder += len(message.to_bytes())
            records.encode(message, f"embeddings.{k}", content)
        return content

    def _score(self, grid: Grid, holder: int, feature_nodes: list[int]) -> None:
        """The held-out customers: one more release of each at every feature party; the holder keeps the scores."""
        asked = self._send(grid, [(holder, "evaluate.vertical_score", RecordDict())])[holder]
        outs = {}
        for k, node in enumerate(feature_nodes):
            outs[node] = records.encode(records.decode(asked, f"request.{k}", BatchRequest), "request")
            self._see("to_party", node, outs[node])
        replies = self._send(grid, [(node, "train.vertical_embed", outs[node]) for node in feature_nodes])
        self._send(grid, [(holder, "evaluate.vertical_score", self._embeddings(feature_nodes, replies, None))])

    def _wait_for_nodes(self, grid: Grid, timeout: float = 120.0) -> list[int]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) == self.parties:
                return nodes
            if len(nodes) > self.parties:
                raise ProtocolError(f"{len(nodes)} nodes joined a vertical job of {self.parties} parties: refused")
            time.sleep(0.05)
        raise FedsiloError(f"{self.parties} parties were expected; {len(list(grid.get_node_ids()))} connected")


def relay_server_app(relay: Relay) -> ServerApp:
    """A ServerApp whose main runs ``relay``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            relay.run(grid, context)
        except BaseException as error:
            relay.error = error
            raise

    return app
