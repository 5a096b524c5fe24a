"""Joining a hosted job: a SuperNode running the fedsilo ClientApp, next to the peer's data.

`join_training` starts, under one `Supervisor`, `flower-supernode` through
`fedsilo.peers.deployment.supernode` (which shortens its polling waits and runs the fedsilo
ClientApp in its own process, imported once: see that module), connecting to the
host's SuperLink over TLS (verifying it against the consortium CA), authenticating
with the peer's node key (`node_auth_keypair`), in `--isolation process` (its unused
Runtime API listens on 127.0.0.1 only), with node config `data-path` (the peer's own
table; it never leaves the machine), `state-dir` (`work_dir`, where it first opens the
peer's privacy record of the job with the job's ε cap: `node_state.open_record`), the
job it accepted (`job-id`, `secagg` on or off, and a transfer job's `shared` parameters and
`vocabulary`: the ClientApp holds the host to them)
and, for a secure-aggregation job, where its consortium identity is (its key,
certificate, the CA and the manifest: the ClientApp signs its SecAgg+ keys with that
key, read from this machine's disk, and verifies the other peers' against the manifest).

`wait` returns once the host has announced the end of the job, with what this peer's
own accountant recorded (`fedsilo.peers.client.node_state`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedsilo.errors import ConfigError
from fedsilo.peers.client import node_state
from fedsilo.peers.deployment.host import _wait_until_listening, free_port, job_environment
from fedsilo.peers.deployment.local_ca import make_local_tls
from fedsilo.peers.deployment.processes import DeploymentError, Supervisor, venv_command
from fedsilo.peers.deployment.supernode import POLL_ENV
from fedsilo.peers.deployment.tls import node_key_path
from fedsilo.peers.flower_app import CLIENT_APP_ENV, PARTY_NODE_KEY
from fedsilo.peers.identity.round_keys import IdentityFiles
from fedsilo.peers.job import JobConfig
from fedsilo.privacy.accounting import Mechanism

POLL_SECONDS = 0.2
# The ClientApp records the end when the host's `finish` message arrives, before the
# SuperNode has sent its reply: stopping at once can cut that reply off and fail the
# host's run ("Node Unavailable"). The SuperNode gets this long to deliver it.
FINISH_GRACE_SECONDS = 5.0
CONNECT_RETRIES = 3
VERTICAL_POLL_SECONDS = "0.01"  # a split vertical job's SuperNode poll (see `join_training`)
REFUSED_MARK = "Failed to activate SuperNode"  # what flower-supernode logs when the SuperLink rejects its key


@dataclass(frozen=True)
class JoinResult:
    """What this peer's accountant spent in the job, for its ledger commit."""

    spent: list[Mechanism]


def _node_config(
    data_path: Path, state_dir: Path, job: JobConfig, identity: IdentityFiles | None, party: Path | None = None
) -> str:
    """Flower's `--node-config` string (TOML values)."""
    entries = {
        **({PARTY_NODE_KEY: party} if party is not None else {}),
        "data-path": data_path,
        "state-dir": state_dir,
        "job-id": job.job_id,
        "secagg": job.secagg.mode,
        "shared": ",".join(job.shared),  # the ClientApp holds the host's run config to these two
        "vocabulary": ",".join(job.vocabulary),
        # a gbdt job's accepted terms, held against the host's: hex of their JSON (Flower's node-config
        # parser takes no quotes nor spaces inside a value)
        "gbdt-terms": json.dumps(job.boost_run_config()).encode().hex() if job.model.kind == "gbdt" else "",
        **(identity.node_config() if identity is not None else {}),
    }
    return " ".join(f"{key}={json.dumps(str(value))}" for key, value in entries.items())


@dataclass(frozen=True)
class SealTarget:
    """gm suite: seal the Fleet traffic to the job's `host` with this peer's identity (`fleet_seal`)."""

    identity_dir: Path
    manifest: Path
    host: str


@dataclass
class JoinedTraining:
    job: JobConfig
    work_dir: Path
    fleet_address: str
    supervisor: Supervisor

    def wait(self, timeout: float | None = None) -> JoinResult:
        """Block until the host announces the job's end; DeploymentError if a process dies or on timeout.

        The peer's processes are stopped when this returns or raises (after the end,
        once the finish reply has had FINISH_GRACE_SECONDS to leave).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                self._check()
                record = node_state.read_privacy(self.work_dir, self.job.job_id)
                if record is not None and record.finished:
                    time.sleep(FINISH_GRACE_SECONDS)
                    return JoinResult(list(record.spent))
                if deadline is not None and time.monotonic() > deadline:
                    raise DeploymentError(
                        f"job {self.job.job_id} did not finish at this peer within {timeout:.0f} s; "
                        f"its processes were stopped"
                    )
                time.sleep(POLL_SECONDS)
        finally:
            self.stop()

    def _check(self) -> None:
        try:
            self.supervisor.check()
        except DeploymentError as error:
            supernode = next(c for c in self.supervisor.children if c.name == "supernode")
            if REFUSED_MARK in supernode.log_tail():
                raise DeploymentError(
                    f"the SuperLink at {self.fleet_address} refused this peer's SuperNode for job "
                    f"{self.job.job_id}: its node key is not one the host authorized "
                    f"(log: {supernode.log_path})"
                ) from error
            raise

    def stop(self) -> None:
        """Stop the SuperNode (and, with `warm=False`, its ClientApp processes); idempotent."""
        self.supervisor.stop()


def join_training(
    job: JobConfig,
    work_dir: Path,
    fleet_address: str,
    ca_cert: Path,
    node_key_dir: Path,
    data_path: Path,
    runtime_port: int | None = None,
    warm: bool = True,
    identity: IdentityFiles | None = None,
    seal: SealTarget | None = None,
    party: Path | None = None,
) -> JoinedTraining:
    """Start this peer's SuperNode, with the ClientApp in its process, for `job`; return at once.

    `warm=False` runs Flower's stock `flower-supernode` in subprocess isolation
    instead (its SuperExec starts one `flwr-clientapp` process per message, with
    Flower's own polling waits): the baseline `bench/deployed_round.py --stock` measures.
    `identity` (this peer's consortium identity files) is required for a secure-aggregation job.
    With `party` (a split vertical job: the party file its daemon wrote, `fedsilo.peers.vertical.apps`) the
    SuperNode runs the vertical parties' ClientApp on it, and only for a run whose app declares that one; it
    polls every VERTICAL_POLL_SECONDS: a split job is two small exchanges per batch, one node at a time, so
    the poll is a large share of each (×9 → ×4.9 the simulated epoch in `bench/deployed_vertical.py
    --scheme split`, 0.05 s → 0.01 s).
    With `seal` (gm suite) the SuperNode talks to a loopback `fleet_seal` forwarder, which seals
    every Fleet payload end to end to the job's host.
    """
    if job.secagg.enabled and identity is None:
        raise ConfigError(
            f"job {job.job_id} aggregates securely: give this peer's consortium identity files "
            f"(its key, certificate, the CA and the manifest) to sign its SecAgg+ keys"
        )
    key = node_key_path(node_key_dir)
    if not key.is_file():
        raise ConfigError(f"no SuperNode key in {node_key_dir}: create it with node_auth_keypair first")
    if not Path(ca_cert).is_file():
        raise ConfigError(f"the consortium CA certificate {ca_cert} does not exist")
    if not Path(data_path).is_file():
        raise ConfigError(f"the data source {data_path} does not exist: check the peer's data sources")
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    # The ε cap every round is checked against: from the job this peer accepted, on its disk, never from the host.
    node_state.open_record(work_dir, job.job_id, node_state.PrivacyCap(job.dp.epsilon, job.dp.delta, job.dp.accountant))
    runtime = f"127.0.0.1:{runtime_port or free_port()}"
    supervisor = Supervisor(
        work_dir / "logs",
        job_environment(work_dir, {CLIENT_APP_ENV: "vertical", POLL_ENV: VERTICAL_POLL_SECONDS} if party else None),
    )
    try:
        superlink, roots = fleet_address, str(ca_cert)
        if seal is not None:
            superlink, roots = _start_seal_forwarder(supervisor, work_dir, fleet_address, seal)
        launcher = (
            [sys.executable, "-m", "fedsilo.peers.deployment.supernode"] if warm else [venv_command("flower-supernode")]
        )
        supervisor.start(
            "supernode",
            [
                *launcher,
                "--superlink",
                superlink,
                "--root-certificates",
                roots,
                "--auth-supernode-private-key",
                str(key),
                "--isolation",
                "process" if warm else "subprocess",
                "--host",
                "127.0.0.1",
                "--port",
                runtime.rsplit(":", 1)[1],
                "--max-retries",
                str(CONNECT_RETRIES),
                "--node-config",
                _node_config(Path(data_path).resolve(), work_dir, job, identity, party),
            ],
        )
        return JoinedTraining(job, work_dir, fleet_address, supervisor)
    except BaseException:
        supervisor.stop()
        raise


def _start_seal_forwarder(
    supervisor: Supervisor, work_dir: Path, fleet_address: str, seal: SealTarget
) -> tuple[str, str]:
    """Start the loopback `fleet_seal` forwarder; (its address, the CA file the SuperNode checks it with)."""
    local = make_local_tls(work_dir / "seal-tls")
    port = free_port()
    supervisor.start(
        "fleet-seal",
        [
            sys.executable,
            "-m",
            "fedsilo.peers.deployment.fleet_seal",
            "--listen",
            f"127.0.0.1:{port}",
            "--gateway",
            fleet_address,
            "--host-member",
            seal.host,
            "--identity",
            str(seal.identity_dir),
            "--manifest",
            str(seal.manifest),
            "--cert",
            str(local.cert),
            "--key",
            str(local.key),
        ],
    )
    _wait_until_listening("127.0.0.1", port, "the Fleet seal forwarder", supervisor)
    return f"127.0.0.1:{port}", str(local.ca_cert)
