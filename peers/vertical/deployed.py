"""The ServerApp of a vertical job of the split scheme under Flower's Deployment Engine: the relay, nothing private.

The label holder's daemon hosts the job (:mod:`fedsilo.peers.daemon.roles.vertical_split`):
its SuperLink runs this ServerApp, which runs the simulation's relay
(:class:`fedsilo.peers.vertical.apps.Relay`) over the two nodes the host registered
(``FEDSILO_JOB_NODES``: the label holder's own SuperNode and the feature party's). The
relay holds no row, no model and no label; every decision is a party's. It writes into
``FEDSILO_HOST_OUTPUT`` only what it saw in the clear: the epochs' statistics (loss as
the label holder reported it, bytes each way, seconds) and the exchanges (message type,
timings, the name and shape of every array the replies carried), in ``metrics.json``. The parties write their own parts into their own state directories.
``client_app`` is the parties' ClientApp (:func:`fedsilo.peers.vertical.apps.build_client_app`),
which each party's SuperNode runs.
"""

from __future__ import annotations

import json
import os

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsilo.peers.flower_app import HOST_OUTPUT_ENV, JOB_NODES_ENV
from fedsilo.peers.server.deployed import job_nodes, output_directory
from fedsilo.peers.server.polling_grid import PromptGrid
from fedsilo.peers.vertical.apps import Relay, build_client_app

METRICS_FILE = "metrics.json"

app = ServerApp()
client_app = build_client_app()  # every party's ClientApp (its role comes from its own party file)


@app.main()
def main(grid: Grid, context: Context) -> None:
    output = output_directory(os.environ.get(HOST_OUTPUT_ENV))
    nodes = job_nodes(os.environ.get(JOB_NODES_ENV))
    relay = Relay(len(nodes), nodes=nodes)
    history = relay.run(grid, context)
    exchanges = [e.to_dict() for e in relay.grid.exchanges] if isinstance(relay.grid, PromptGrid) else []
    metrics = {"scheme": "split", "epochs": [vars(stats) for stats in history], "exchanges": exchanges}
    (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
