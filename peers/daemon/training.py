"""Running a job's training for the daemon: the host's SuperLink, a participant's SuperNode.

Thin, blocking adapters over `fedsilo.peers.deployment` (the daemon calls them in a worker
thread, outside its mailbox): which files and keys of the peer each engine process
gets, and where a job's working directory is. A participant whose source declares an
id column trains on a copy of its table without that column, written in the job's
working directory on the same machine; in a transfer job that copy is the institution's
table in the order its encoder reads it (`fedsilo.peers.data.vocabulary.institution_table`:
the shared-vocabulary columns, NaN where it lacks one, then its own columns).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from fedsilo.peers.daemon.config import DataSource
from fedsilo.peers.daemon.sealing import seals
from fedsilo.peers.data.bank import read_table
from fedsilo.peers.data.vocabulary import institution_table
from fedsilo.peers.deployment import (
    HostedTraining,
    JoinedTraining,
    TLSFiles,
    TrainingResult,
    host_training,
    join_training,
    node_auth_keypair,
)
from fedsilo.peers.deployment.join import SealTarget
from fedsilo.peers.deployment.processes import REGISTRY_NAME, stop_leftover_processes
from fedsilo.peers.identity.consortium import SIGNING_KEY, Identity
from fedsilo.peers.identity.round_keys import IdentityFiles
from fedsilo.peers.job import JobConfig
from fedsilo.privacy.accounting import Mechanism

NODE_KEY_DIR = "node-key"
_FLEET_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}):([0-9]{1,5})")


def is_fleet_address(value: object) -> bool:
    """Whether a host's `fleet_address` is HOST:PORT (a DNS name, IPv4 or [IPv6] and a port 1..65535), so
    that the string the host sends can only ever be the SuperNode's `--superlink` value, never an option."""
    match = _FLEET_ADDRESS.fullmatch(value) if isinstance(value, str) else None
    return match is not None and 1 <= int(match.group(2)) <= 65535


def node_public_key(state_dir: Path) -> str:
    """This peer's SuperNode authentication public key (created once under the state directory)."""
    return node_auth_keypair(state_dir / NODE_KEY_DIR).decode()


def start_hosting(
    job: JobConfig,
    state_dir: Path,
    identity: Identity,
    peers: int,
    node_keys: Sequence[str],
    min_peers: int = 1,
    vertical: bool = False,
) -> HostedTraining:
    """Start the job's SuperLink (serving this peer's certificate) for `peers` accepted peers; the run
    fails once fewer than `min_peers` (the job's min-participants) are left."""
    member = identity.manifest.member(identity.name)
    host = urlsplit(member.address).hostname if member and member.address else "127.0.0.1"
    return host_training(
        replace(job, peers=peers),
        state_dir / "jobs" / job.job_id / "host",
        TLSFiles(identity.ca_path, identity.cert_path, identity.key_path),
        [k.encode() for k in node_keys],
        host=host or "127.0.0.1",
        suite=identity.manifest.suite,
        seal_identity=(identity.key_path.parent, identity.manifest_path) if seals(identity) else None,
        min_peers=min_peers,
        vertical=vertical,
    )


def finish_hosting(hosted: HostedTraining, timeout: float) -> TrainingResult:
    """Wait for the job's end, at most `timeout` seconds (the policy's wall time; then it fails)."""
    return hosted.wait(timeout=timeout)


def peer_work_dir(state_dir: Path, job_id: str) -> Path:
    """This peer's SuperNode directory for a job (its durable privacy record, a split vertical job's party)."""
    return state_dir / "jobs" / job_id / "peer"


def start_joining(
    job: JobConfig,
    state_dir: Path,
    identity: Identity,
    fleet_address: str,
    source: DataSource,
    host: str = "",
    party: Path | None = None,
) -> JoinedTraining:
    """Start this peer's SuperNode for `job`; under the gm suite its Fleet traffic is sealed to `host`.
    `party`: a split vertical job's party file (`roles.vertical_split`), which the SuperNode plays."""
    work_dir = peer_work_dir(state_dir, job.job_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    data_path = source.path
    if party is not None:
        data_path = party  # the party holds this peer's encoded rows of the shared customers; no table copy
    elif source.id_column or job.vocabulary:
        frame = read_table(source.path).drop(columns=[source.id_column] if source.id_column else [], errors="ignore")
        if job.vocabulary:
            frame = institution_table(frame, job.vocabulary, job.label)
        data_path = work_dir / "table.parquet"
        frame.to_parquet(data_path, index=False)
    signing = identity.key_path.parent / SIGNING_KEY if identity.signing_key is not None else None
    files = IdentityFiles(identity.key_path, identity.cert_path, identity.ca_path, identity.manifest_path, signing)
    seal = SealTarget(identity.key_path.parent, identity.manifest_path, host) if seals(identity) else None
    return join_training(
        job,
        work_dir,
        fleet_address,
        identity.ca_path,
        state_dir / NODE_KEY_DIR,
        data_path,
        identity=files,
        seal=seal,
        party=party,
    )


def finish_joining(joined: JoinedTraining, timeout: float) -> list[Mechanism]:
    """Wait for the job's end (at most `timeout` seconds, the policy's wall time), then what this
    peer's accountant spent."""
    return list(joined.wait(timeout=timeout).spent)


def spent_so_far(state_dir: Path, job_id: str) -> list[Mechanism]:
    """What this peer's accountant recorded for the job (after a failure or a restart)."""
    from fedsilo.peers.client import node_state

    record = node_state.read_privacy(state_dir / "jobs" / job_id / "peer", job_id)
    return list(record.spent) if record else []


def stop_orphaned_processes(state_dir: Path) -> dict[str, list[str]]:
    """Stop engine processes a previous run of the daemon left running, per job id.

    Called once at start, before any job runs: every SuperLink, ServerApp, SuperNode or
    ClientApp still registered under a job's folder belongs to a daemon that died
    without stopping it (SIGKILL, power loss).
    """
    stopped: dict[str, list[str]] = {}
    for registry in sorted((state_dir / "jobs").glob(f"*/*/logs/{REGISTRY_NAME}")):
        names = stop_leftover_processes(registry.parent)
        if names:
            stopped.setdefault(registry.parents[2].name, []).extend(names)
    return stopped
