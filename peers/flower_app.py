"""The Flower App descriptor of a fedsilo job.

Flower reads a job's run config from the `[tool.flwr.app.config]` table of an app's
`pyproject.toml` (a FAB under the Deployment Engine, an app directory under the
Simulation Engine). `write_app_descriptor` writes that file for one job, so both
engines hand the ClientApp and ServerApp the same `context.run_config`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CLIENT_APP = "fedsilo.peers.client.app:app"
SERVER_APP = "fedsilo.peers.server.app:app"
# a vertical job of the split scheme (`fedsilo.peers.vertical.deployed`): the relay, and the parties' ClientApp
VERTICAL_CLIENT_APP = "fedsilo.peers.vertical.deployed:client_app"
VERTICAL_SERVER_APP = "fedsilo.peers.vertical.deployed:app"
PARTY_NODE_KEY = "vertical-party"  # node config: a split vertical job's party file, written by the peer's daemon
CLIENT_APP_ENV = "FEDSILO_CLIENT_APP"  # "vertical": a peer's SuperNode runs VERTICAL_CLIENT_APP (set by the peer)
HOST_OUTPUT_ENV = "FEDSILO_HOST_OUTPUT"  # where a deployed ServerApp writes its result (set by the host)
JOB_NODES_ENV = "FEDSILO_JOB_NODES"  # the node ids a deployed ServerApp may use, comma-separated (set by the host)
JOB_MIN_PEERS_ENV = "FEDSILO_JOB_MIN_PEERS"  # the owner-signed min-participants: fewer survivors end the job


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_app_descriptor(directory: Path, run_config: Mapping[str, Any], version: str, vertical: bool = False) -> Path:
    """Write `directory/pyproject.toml` describing the fedsilo app with `run_config` (`vertical`: the split
    scheme's relay and parties, `fedsilo.peers.vertical.deployed`)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[project]",
        'name = "fedsilo-job"',
        f'version = "{version}"',
        'description = "A fedsilo training job"',
        'license = "Apache-2.0"',
        "",
        "[tool.flwr.app]",
        'publisher = "fedsilo"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{VERTICAL_SERVER_APP if vertical else SERVER_APP}"',
        f'clientapp = "{VERTICAL_CLIENT_APP if vertical else CLIENT_APP}"',
        "",
        "[tool.flwr.app.config]",
    ]
    lines += [f"{json.dumps(key)} = {_toml_value(value)}" for key, value in run_config.items()]
    path = directory / "pyproject.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
