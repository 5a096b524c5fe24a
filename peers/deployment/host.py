"""Hosting a job on Flower's Deployment Engine: SuperLink, ServerApp, and the run.

`host_training` starts, for one job and under one `Supervisor`:

- `flower-superlink` (through `fedsilo.peers.deployment.superlink`, which scopes its
  Control-only middleware to Control requests) on 127.0.0.1 only: TLS with a
  loopback certificate of the job's own (`local_ca`), `--enable-supernode-auth` (only the registered node keys may
  connect), `--disable-runtime-dependency-installation`, `--isolation process`. Its
  Fleet, Control and Runtime APIs share that port, and the latter two take requests
  from any TLS client in Flower's open-source release;
- `fedsilo.peers.deployment.fleet_gateway` on the job's public address, with the host's
  consortium certificate: it forwards the Fleet API, and nothing else, to the
  SuperLink, so no one on the network can start a run or register a node key;
- `flower-superexec --plugin-type serverapp`: started here rather than by the
  SuperLink, so that it and the `flwr-serverapp` process it starts live in a process
  group this module stops;

then registers each accepted peer's node key and starts the run through the
SuperLink's Control API on 127.0.0.1 (`fedsilo.peers.flower_compat.control`) (the app descriptor of `fedsilo.peers.flower_app`, built
into a FAB with the job's run config); the ServerApp is told the registered node ids
and uses no other node (`nodes`, in the order of the keys). The ServerApp (`fedsilo.peers.server.app`) writes the final model and
the metrics into `work_dir/result` (passed to it as `FEDSILO_HOST_OUTPUT`), and the ids
of the nodes it lost during the job into `lost.json` there (`HostedTraining.lost_nodes`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedsilo.peers.deployment.local_ca import make_local_tls
from fedsilo.peers.deployment.processes import DeploymentError, Supervisor, venv_command
from fedsilo.peers.deployment.tls import TLSFiles, public_key_pem
from fedsilo.peers.flower_app import HOST_OUTPUT_ENV, JOB_MIN_PEERS_ENV, JOB_NODES_ENV, write_app_descriptor
from fedsilo.peers.flower_compat.control import COMPLETED, FINISHED, ControlClient, build_fab
from fedsilo.peers.identity.round_keys import SUITE_KEY
from fedsilo.peers.job import JobConfig
from fedsilo.peers.server.deployed import LOST_FILE
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE
from fedsilo.process import set_process_defaults

MODEL_FILE = "model.safetensors"
GBDT_MODEL_FILE = "model.json"  # a gbdt job's ensemble (`fedsilo.peers.gbdt.model_file`)
METRICS_FILE = "metrics.json"
STARTUP_TIMEOUT_SECONDS = 60.0
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
# The SuperExec asks the SuperLink for a ServerApp task every this often for the whole
# job, though it only ever gets one, at the start; `wait` asks for the run's status
# every RUN_STATUS_POLL_SECONDS. Every such request is served by the SuperLink's one
# process between the round's own requests, so they are kept rare: the job's start
# and end wait up to that long, its rounds do not.
SUPEREXEC_POLL_SECONDS = "0.5"
RUN_STATUS_POLL_SECONDS = 1.0
POLL_SECONDS = 0.2
LOOPBACK = "127.0.0.1"
LINK_CERT_DAYS = 30  # the SuperLink's loopback certificate outlives any job


@dataclass(frozen=True)
class TrainingResult:
    """What the host keeps of a finished job: the final model file and per-round metrics."""

    model_path: Path
    metrics: dict[str, Any]
    run_id: int
    encoder_path: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def job_environment(work_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a job's processes: this venv's commands first, Flower's home in `work_dir`."""
    env = dict(os.environ)
    venv_bin = str(Path(venv_command("flower-superlink")).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["FLWR_HOME"] = str(work_dir / "flwr-home")
    set_process_defaults(env)
    env.update(extra or {})
    return env


@dataclass
class HostedTraining:
    """A job being hosted; `wait` returns its result and stops its processes."""

    job: JobConfig
    work_dir: Path
    fleet_address: str
    run_id: int
    supervisor: Supervisor
    control: ControlClient
    nodes: tuple[int, ...] = ()
    vertical: bool = False  # a split vertical job: the relay writes metrics only (the parties keep their parts)
    _result: TrainingResult | None = field(default=None, repr=False)

    def status(self) -> tuple[str, str, str]:
        """(status, sub-status, details) of the run, as the SuperLink reports it."""
        return self.control.run_status(self.run_id)

    def wait(self, timeout: float | None = None) -> TrainingResult:
        """Block until the run finishes; raise DeploymentError if it fails, a process dies, or on timeout.

        The job's processes are stopped when this returns or raises.
        """
        if self._result is not None:
            return self._result
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                self.supervisor.check()
                try:
                    status, sub_status, details = self.status()
                except Exception as exc:  # pylint: disable=broad-exception-caught  # httpx/protobuf errors
                    time.sleep(POLL_SECONDS)
                    self.supervisor.check()  # the SuperLink died: say so
                    raise DeploymentError(
                        f"the SuperLink of job {self.job.job_id} stopped answering ({exc.__class__.__name__}: {exc})"
                    ) from None
                if status == FINISHED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise DeploymentError(
                        f"job {self.job.job_id} did not finish within {timeout:.0f} s "
                        f"(run {self.run_id} is {status}); its processes were stopped"
                    )
                time.sleep(RUN_STATUS_POLL_SECONDS)
            if sub_status != COMPLETED:
                raise DeploymentError(
                    f"job {self.job.job_id} {sub_status}: {details or 'no details'} "
                    f"(ServerApp log: {self.supervisor.log_dir / 'superexec.log'})"
                )
            kind = "vertical" if self.vertical else self.job.model.kind
            self._result = _read_result(self.work_dir / "result", self.run_id, kind)
            return self._result
        finally:
            self.stop()

    def lost_nodes(self) -> list[int]:
        """The node ids the ServerApp lost during the job (stopped answering): [] until it wrote any."""
        try:
            lost = json.loads((self.work_dir / "result" / LOST_FILE).read_text())["lost"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return [n for n in lost if isinstance(n, int) and n in self.nodes]

    def stop(self) -> None:
        """Stop every process this job started (idempotent)."""
        self.supervisor.stop()
        self.control.close()


def model_file_name(kind: str) -> str:
    """The file a job's ServerApp writes its model to: the ensemble's JSON for gbdt, safetensors otherwise;
    a split vertical job's relay writes no model (`kind` "vertical": its metrics stand in)."""
    return {"gbdt": GBDT_MODEL_FILE, "vertical": METRICS_FILE}.get(kind, MODEL_FILE)


def _read_result(directory: Path, run_id: int, kind: str = "mlp") -> TrainingResult:
    name = model_file_name(kind)
    model, metrics = directory / name, directory / METRICS_FILE
    if not model.is_file() or not metrics.is_file():
        raise DeploymentError(f"the ServerApp finished but wrote no {name}/{METRICS_FILE} in {directory}")
    return TrainingResult(model, json.loads(metrics.read_text()), run_id, directory / "encoder.json")


def _wait_until_listening(host: str, port: int, what: str, supervisor: Supervisor) -> None:
    """Return once `host:port` accepts connections; fail if a child dies or on timeout."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        supervisor.check()
        try:
            socket.create_connection((host, port), timeout=POLL_SECONDS).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"{what} did not listen on {host}:{port} within "
                    f"{STARTUP_TIMEOUT_SECONDS:.0f} s; see {supervisor.log_dir}"
                ) from None
            time.sleep(POLL_SECONDS)


def deployment_job(job: JobConfig) -> JobConfig:
    """The job as it travels to peers: no host paths (the encoder is fitted from the peers' summaries)."""
    return replace(job, encoder_path="", banks_dir="")


def host_training(
    job: JobConfig,
    work_dir: Path,
    tls: TLSFiles,
    node_public_keys: Sequence[bytes],
    host: str = "127.0.0.1",
    port: int | None = None,
    version: str = "0.0.0",
    suite: str = DEFAULT_SUITE,
    seal_identity: tuple[Path, Path] | None = None,
    min_peers: int = 1,
    vertical: bool = False,
) -> HostedTraining:
    """Start a SuperLink and the job's ServerApp run; return at once (see the module docstring).

    `suite` is the consortium's crypto suite (the host's manifest's): the ServerApp's SecAgg+
    server runs under it (each peer runs under its own manifest's, and refuses another's keys).

    `port` (default: a free one) is the SuperLink's single port; peers connect to
    `fleet_address` = `host:port`, verifying its certificate against `tls.ca_cert`.
    Raises DeploymentError (processes stopped) if anything fails to start. `seal_identity` (gm
    suite: the host's identity directory and manifest) makes the gateway seal every Fleet payload
    end to end (`fleet_gateway`). `min_peers` (the owner-signed min-participants): the run
    fails once fewer peers than that are left (`fedsilo.peers.server.deployed`). `vertical`: the run is a
    split vertical job's (`fedsilo.peers.vertical.deployed`: the relay ServerApp and the parties' ClientApp).
    """
    tls.check()
    if len(node_public_keys) < job.peers:
        raise DeploymentError(
            f"job {job.job_id} needs {job.peers} peers but only {len(node_public_keys)} "
            f"node keys were given: authorize every accepting peer's key"
        )
    keys = [public_key_pem(k) for k in node_public_keys]
    work_dir = Path(work_dir).resolve()
    (work_dir / "result").mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    address = f"{host}:{port}"
    link_tls = make_local_tls(work_dir / "link-tls", days=LINK_CERT_DAYS)
    link_port = free_port(LOOPBACK)
    link_address = f"{LOOPBACK}:{link_port}"
    supervisor = Supervisor(
        work_dir / "logs",
        job_environment(
            work_dir, {HOST_OUTPUT_ENV: str(work_dir / "result"), SUPEREXEC_POLL_ENV: SUPEREXEC_POLL_SECONDS}
        ),
    )
    control: ControlClient | None = None
    try:
        link = supervisor.start(
            "superlink",
            [
                sys.executable,
                "-m",
                "fedsilo.peers.deployment.superlink",
                "--ssl-ca-certfile",
                str(link_tls.ca_cert),
                "--ssl-certfile",
                str(link_tls.cert),
                "--ssl-keyfile",
                str(link_tls.key),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--isolation",
                "process",
                "--host",
                LOOPBACK,
                "--port",
                str(link_port),
            ],
        )
        control = ControlClient(link_address, Path(link_tls.ca_cert).read_bytes())
        _wait_until_listening(LOOPBACK, link_port, "the SuperLink", supervisor)
        control.list_run_ids()
        supervisor.start(
            "fleet-gateway",
            [
                sys.executable,
                "-m",
                "fedsilo.peers.deployment.fleet_gateway",
                "--listen",
                address,
                "--upstream",
                link_address,
                "--upstream-ca",
                str(link_tls.ca_cert),
                "--cert",
                str(tls.cert),
                "--key",
                str(tls.key),
                *(
                    ["--seal-identity", str(seal_identity[0]), "--seal-manifest", str(seal_identity[1])]
                    if seal_identity
                    else []
                ),
            ],
        )
        _wait_until_listening(host, port, "the fleet gateway", supervisor)
        nodes = [control.register_node(key) for key in keys]
        supervisor.start(
            "superexec",
            [
                venv_command("flower-superexec"),
                "--plugin-type",
                "serverapp",
                "--runtime-api-address",
                link_address,
                "--root-certificates",
                str(link_tls.ca_cert),
                "--parent-pid",
                str(link.process.pid),
            ],
            env={JOB_NODES_ENV: ",".join(str(n) for n in nodes), JOB_MIN_PEERS_ENV: str(min_peers)},
        )
        app_dir = work_dir / "app"
        write_app_descriptor(
            app_dir, {**deployment_job(job).to_run_config(), SUITE_KEY: suite}, version, vertical=vertical
        )
        run_id = control.start_run(build_fab(app_dir))
        if run_id is None:
            raise DeploymentError(f"the SuperLink refused to start job {job.job_id}: see {supervisor.log_dir}")
        return HostedTraining(job, work_dir, address, run_id, supervisor, control, tuple(nodes), vertical)
    except BaseException:
        supervisor.stop()
        if control is not None:
            control.close()
        raise
