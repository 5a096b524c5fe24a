"""Training on Flower's Deployment Engine: one SuperLink per job at the host, one SuperNode per peer.

`host_training` and `join_training` start a job's processes and return at once;
`.wait()` blocks until the job ends and always stops the processes (`.stop()` too).
See `peers.deployment.host` and `peers.deployment.join` for what runs where.

Names are imported on first use, so that the SuperNode launcher
(`python -m peers.deployment.supernode`) does not pay for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DeploymentError": "peers.deployment.processes",
    "HostedTraining": "peers.deployment.host",
    "TrainingResult": "peers.deployment.host",
    "host_training": "peers.deployment.host",
    "JoinedTraining": "peers.deployment.join",
    "JoinResult": "peers.deployment.join",
    "join_training": "peers.deployment.join",
    "TLSFiles": "peers.deployment.tls",
    "node_auth_keypair": "peers.deployment.tls",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'peers.deployment' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
