"""Training on Flower's Deployment Engine: one SuperLink per job at the host, one SuperNode per peer.

`host_training` and `join_training` start a job's processes and return at once;
`.wait()` blocks until the job ends and always stops the processes (`.stop()` too).
See `fedsilo.peers.deployment.host` and `fedsilo.peers.deployment.join` for what runs where.

Names are imported on first use, so that the SuperNode launcher
(`python -m fedsilo.peers.deployment.supernode`) does not pay for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DeploymentError": "fedsilo.peers.deployment.processes",
    "HostedTraining": "fedsilo.peers.deployment.host",
    "TrainingResult": "fedsilo.peers.deployment.host",
    "host_training": "fedsilo.peers.deployment.host",
    "JoinedTraining": "fedsilo.peers.deployment.join",
    "JoinResult": "fedsilo.peers.deployment.join",
    "join_training": "fedsilo.peers.deployment.join",
    "TLSFiles": "fedsilo.peers.deployment.tls",
    "node_auth_keypair": "fedsilo.peers.deployment.tls",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fedsilo.peers.deployment' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
