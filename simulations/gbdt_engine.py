"""`fedsilo simulate --model gbdt --engine flower`: the boosting app pair on Flower's Simulation Engine.

The banks are virtual SuperNodes (Ray actors) running the ClientApp a peer daemon runs
(`fedsilo.peers.client.app`, its ``query.gbdt`` handler `fedsilo.peers.gbdt.client_app`):
each reads its own table from the harness's banks directory and the job's encoder, derives
its release plan, its SecAgg+ configurations and noise from the run config (`GBDTJob`), signs
its session keys with its simulated consortium identity (`fedsilo.simulations.engine`), keeps
its session and its record of spent releases in its node's ``context.state``, and refuses a
release beyond the plan. The host is the deployed host's loop (`host_gbdt`) in a ServerApp.

Two simulation-only steps frame the job, through one more query (``query.gbdtbank``, answered
by `bank_facts`): before it, the host asks every node which bank it is (its partition id, as
the neural simulation's banks name themselves in their replies), so the trees, ledgers and
card use the same bank names as the in-process run; after it, every bank reports how many
releases it recorded as spent, which is what the harness commits to its ledger (the bank's
own accountant, as for the neural models).

Flower's engine hands out queued messages every 0.1 s, and its in-memory grid looks for
replies every 0.1 s (``InMemoryGrid.pull_interval``); a boosting job is many short exchanges
(three per release), so both wait `DISPATCH_INTERVAL` instead (`prompt_dispatch`, and the
grid's public attribute).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsilo.errors import FedsiloError
from fedsilo.peers.client.app import build_client_app
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.flower_compat.simulation import prompt_dispatch
from fedsilo.peers.gbdt.client_app import recorded_spent
from fedsilo.peers.gbdt.federation import BoostResult
from fedsilo.peers.gbdt.job import GBDTJob
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.peers.gbdt.server_app import REPLY_TIMEOUT_SECONDS, host_gbdt
from fedsilo.peers.job import JobConfig
from fedsilo.peers.server.deployed import wait_for_peers
from fedsilo.simulations.engine import EngineSettings, run_flower_simulation
from fedsilo.simulations.federation import fedsilo_version
from fedsilo.simulations.population import bank_name

FACTS_QUERY = "gbdtbank"
FACTS_KEY = "fedsilo.gbdt.bank"
DISPATCH_INTERVAL = 0.002  # seconds between the engine's passes handing out messages (Flower: 0.1)


def bank_facts(msg: Message, context: Context) -> Message:
    """A simulated bank's index (its partition id) and the releases it has recorded as spent in the job."""
    job = JobConfig.from_run_config(context.run_config)
    spent = recorded_spent(context, job, GBDTJob.from_run_config(context.run_config))
    record = ConfigRecord({"index": int(context.node_config["partition-id"]), "spent": len(spent)})
    return Message(RecordDict({FACTS_KEY: record}), reply_to=msg)


def simulation_client_app() -> ClientApp:
    """The peers' ClientApp with the simulation's ``query.gbdtbank`` handler."""
    app = build_client_app()
    app.query(FACTS_QUERY)(bank_facts)
    return app


@dataclass
class EngineHost:
    """The host's side: boosts over the grid, keeps the result (or the error) for the harness."""

    terms: GBDTJob
    encoder: TabularEncoder
    on_tree: Callable[[int, GBDTModel], None] | None = None
    result: BoostResult | None = None
    bank_spent: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None

    def run(self, grid: Grid) -> None:
        if hasattr(grid, "pull_interval"):  # Flower's in-memory grid polls for replies every 0.1 s (module docstring)
            grid.pull_interval = DISPATCH_INTERVAL
        nodes = wait_for_peers(grid, self.terms.banks)
        index = {u: i for u, (i, _) in _facts(grid, nodes).items()}
        if sorted(index.values()) != list(range(self.terms.banks)):
            raise FedsiloError(f"the simulated banks name themselves {sorted(index.values())}, not 0..n-1")
        names = {u: bank_name(i) for u, i in index.items()}
        self.result = host_gbdt(grid, self.terms, names, self.encoder, on_tree=self.on_tree)
        self.bank_spent = {names[u]: spent for u, (_, spent) in _facts(grid, nodes).items()}


def _facts(grid: Grid, nodes: list[int]) -> dict[int, tuple[int, int]]:
    messages = [Message(RecordDict(), dst_node_id=u, message_type=f"query.{FACTS_QUERY}") for u in nodes]
    facts = {}
    for reply in grid.send_and_receive(messages, timeout=REPLY_TIMEOUT_SECONDS):
        u = reply.metadata.src_node_id
        if reply.has_error():
            raise FedsiloError(f"simulated bank node {u} answered {reply.error.reason}")
        record = reply.content.config_records[FACTS_KEY]
        facts[u] = (int(record["index"]), int(record["spent"]))
    if set(facts) != set(nodes):
        raise FedsiloError(f"{len(nodes) - len(facts)} simulated banks did not answer the host")
    return facts


def _server_app(host: EngineHost) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            host.run(grid)
        except BaseException as error:  # handed to the harness: Flower's engine would only log it
            host.error = error

    return app


def boost_on_engine(
    job: JobConfig,
    terms: GBDTJob,
    frames: Mapping[int, pd.DataFrame],
    encoder: TabularEncoder,
    work: Path,
    engine: EngineSettings = EngineSettings(),
    on_tree: Callable[[int, GBDTModel], None] | None = None,
) -> tuple[BoostResult, dict[str, int]]:
    """Boost ``terms`` over the banks' raw ``frames`` (bank index -> table) on the engine.

    Returns the host's result and, per bank name, the releases that bank recorded as spent.
    ``job`` gives the label, the split (test fraction, seed) and the job id (``terms.session``).
    """
    banks_dir = work / "banks"
    banks_dir.mkdir(parents=True, exist_ok=True)
    for i, frame in frames.items():
        frame.to_parquet(banks_dir / f"{bank_name(i)}.parquet", index=False)
    encoder_path = work / "encoder.json"
    encoder_path.write_text(encoder.to_json())
    job = replace(job, encoder_path=str(encoder_path), banks_dir=str(banks_dir), job_id=terms.session)
    host = EngineHost(terms, encoder, on_tree)
    run_config = {**job.to_run_config(), **terms.to_run_config()}
    with prompt_dispatch(DISPATCH_INTERVAL):  # three exchanges per release: Flower's 0.1 s dispatch would dominate
        run_flower_simulation(
            _server_app(host), simulation_client_app(), terms.banks, run_config, work / "app", fedsilo_version(), engine
        )
    if host.error is not None:
        raise host.error
    if host.result is None:
        raise FedsiloError("the boosting host did not finish: run again with FEDSILO_VERBOSE=1 to see Flower's log")
    return host.result, host.bank_spent
