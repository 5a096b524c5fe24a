"""Running a job's training for the daemon: the host's SuperLink, a participant's SuperNode.

Thin, blocking adapters over `fedsilo.peers.deployment` (the daemon calls them in a worker
thread, outside its mailbox): which files and keys of the peer each engine process
gets, and where a job's working directory is. A participant whose source declares an
id column trains on a copy of its table without that column, written in the job's
working directory on the same machine; in a transfer job that copy is the institution's
table in the order its encoder reads it (`fedsilo.peers.data.vocabulary.institution_table`:
the shared-vocabulary columns, NaN where it lacks one, then its own columns). A transfer
job with shared customers stores the train/test side its institutions agreed for each row
(`store_agreed_sides`, from `fedsilo.peers.shared_holdout`) in the job's directory; the copy
then carries them in `SPLIT_COLUMN`, which the ClientApp's split keeps
(`fedsilo.peers.data.bank.split_rows`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from fedsilo.errors import DataError
from fedsilo.peers.daemon.config import DataSource
from fedsilo.peers.daemon.sealing import seals
from fedsilo.peers.data.bank import TEST, TRAIN, read_table, split_rows
from fedsilo.peers.data.encoding import SPLIT_COLUMN
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
AGREED_SIDES = "agreed-sides.npy"
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


def _sides_path(state_dir: Path, job_id: str) -> Path:
    return state_dir / "jobs" / job_id / AGREED_SIDES


def store_agreed_sides(state_dir: Path, job_id: str, sides: np.ndarray, rows: int) -> None:
    """Keep the agreed TRAIN/TEST side of each of the source's `rows` rows for the job (written atomically).

    DataError, with nothing written, unless `sides` holds one TRAIN or TEST per row.
    """
    sides = np.asarray(sides)
    if sides.shape != (rows,) or not np.isin(sides, (TRAIN, TEST)).all():
        raise DataError(
            f"the agreed split must give each of the source's {rows} rows a side, {TRAIN} (train) or {TEST} "
            f"(test); got {sides.shape[0] if sides.ndim == 1 else sides.shape} value(s): nothing stored"
        )
    path = _sides_path(state_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, sides.astype(np.int8))
    os.replace(partial, path)


def agreed_sides(state_dir: Path, job_id: str) -> np.ndarray | None:
    """The sides stored by `store_agreed_sides` for the job, or None."""
    path = _sides_path(state_dir, job_id)
    return np.load(path, allow_pickle=False) if path.exists() else None


def working_table(job: JobConfig, state_dir: Path, source: DataSource) -> Path:
    """The table this peer's SuperNode reads for `job`: the source itself, or a copy in the job's directory
    without its id column, in a transfer job's column order, carrying the agreed sides (module docstring)."""
    work_dir = peer_work_dir(state_dir, job.job_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    data_path = source.path
    sides = agreed_sides(state_dir, job.job_id)
    if source.id_column or job.vocabulary or sides is not None:
        frame = read_table(source.path).drop(columns=[source.id_column] if source.id_column else [], errors="ignore")
        if sides is not None:
            if len(sides) != len(frame):
                raise DataError(
                    f"the split agreed for job {job.job_id} covers {len(sides)} rows, but data source "
                    f"{source.name} now has {len(frame)}: the table changed since the agreement; run the job again"
                )
            frame[SPLIT_COLUMN] = sides
        if job.vocabulary:
            frame = institution_table(frame, job.vocabulary, job.label)
        data_path = work_dir / "table.parquet"
        frame.to_parquet(data_path, index=False)
    return Path(data_path)


def training_rows(job: JobConfig, state_dir: Path, source: DataSource) -> int:
    """How many rows this peer's SuperNode trains on in `job`: the training side of `working_table`'s
    split, computed as its ClientApp computes it (`split_rows`, honouring the agreed sides)."""
    frame = read_table(working_table(job, state_dir, source))
    return len(split_rows(frame, job.label, job.train.test_fraction, job.train.seed)[0])


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
    # the party holds this peer's encoded rows of the shared customers; no table copy
    data_path = party if party is not None else working_table(job, state_dir, source)
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
