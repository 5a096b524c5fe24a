"""Training on Flower's Deployment Engine: one SuperLink per job at the host, one SuperNode per peer.

`host_training` and `join_training` start a job's processes and return at once;
`.wait()` blocks until the job ends and always stops the processes (`.stop()` too).
See `peers.deployment.host` and `peers.deployment.join` for what runs where.
"""

from peers.deployment.host import HostedTraining, TrainingResult, host_training
from peers.deployment.join import JoinedTraining, JoinResult, join_training
from peers.deployment.processes import DeploymentError
from peers.deployment.tls import TLSFiles, node_auth_keypair

__all__ = ["DeploymentError", "HostedTraining", "JoinResult", "JoinedTraining", "TLSFiles", "TrainingResult",
           "host_training", "join_training", "node_auth_keypair"]
