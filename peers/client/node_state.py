"""What a deployed peer's ClientApp keeps on its own disk, per job, under its node's state directory.

A SuperNode's node config names `state-dir` (a directory of that peer only). For each
job the ClientApp writes there:

- `<job>.encoder.json`: the job's encoder, as the host sent it (in a transfer job, the
  host's shared-vocabulary encoder followed by this peer's own-columns encoder, which it
  fitted from its own rows: `fedsilo.peers.data.vocabulary`);
- `<job>.privacy.json`: the peer's durable record of the job: the job's (ε, δ,
  accountant) as this peer accepted it (`cap`, written by `open_record` before its
  SuperNode starts), the mechanisms it has run so far in the job (`spent`), appended
  and rewritten atomically after every training round before the update leaves the
  ClientApp, and `finished`, set when the host announces the end of the job;
- `<job>.private.safetensors`: in transfer setups, the weights this peer never sends
  (its own input block, a private head), rewritten after every training round, with
  the job id in the file's metadata.

So the peer commits to its ledger what its own accountant recorded, not what the host
reports, and the per-job ε cap reads this file, not the ClientApp's memory: a restarted
ClientApp (or SuperNode) resumes from every round already released. Files are replaced
atomically; a reader never sees half a file; `job_lock` serialises the ClientApp
processes of one peer over a job's record.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as safetensors_bytes

from fedsilo.errors import ConfigError
from fedsilo.peers.job import JobConfig
from fedsilo.privacy.accounting import Mechanism

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _stem(job_id: str) -> str:
    if not job_id:
        raise ConfigError("a job id is needed to keep a peer's job state")
    return _SAFE.sub("_", job_id)


def encoder_file(state_dir: Path, job_id: str) -> Path:
    return Path(state_dir) / f"{_stem(job_id)}.encoder.json"


def with_node_encoder(job: JobConfig, node_config: Mapping[str, object]) -> JobConfig:
    """The job with the encoder its host sent this deployed peer, when the run config names none.

    A job travels to deployed peers with an empty `data.encoder`; what needs the model's
    input width (the parameter count of distributed DP's noise) then reads the copy
    under the node's state directory. In a transfer job (a shared vocabulary) the copy is
    this institution's own encoder, whose first inputs are the vocabulary's: their
    count becomes `model.shared_features`. Unchanged under simulation (no state-dir).
    """
    state_dir = node_config.get("state-dir")
    if job.encoder_path or not state_dir:
        return job
    path = encoder_file(Path(str(state_dir)), job.job_id)
    job = replace(job, encoder_path=str(path))
    if job.vocabulary and path.exists():  # transfer: the shared block's width is the vocabulary's
        from fedsilo.peers.data.encoding import TabularEncoder
        from fedsilo.peers.data.vocabulary import shared_feature_count

        width = shared_feature_count(TabularEncoder.from_json(path.read_text()), job.vocabulary)
        job = replace(job, model=replace(job.model, shared_features=width))
    return job


def privacy_file(state_dir: Path, job_id: str) -> Path:
    return Path(state_dir) / f"{_stem(job_id)}.privacy.json"


def private_weights_file(state_dir: Path, job_id: str) -> Path:
    return Path(state_dir) / f"{_stem(job_id)}.private.safetensors"


def write_atomic(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class PrivacyCap:
    """The job's privacy target as this peer accepted it: no round may bring ε past `epsilon`."""

    epsilon: float
    delta: float
    accountant: str


@dataclass(frozen=True)
class JobPrivacy:
    """A peer's own record of a job: its cap, what it spent, and whether the job has ended."""

    job_id: str
    spent: tuple[Mechanism, ...]
    finished: bool = False
    cap: PrivacyCap | None = None


def write_privacy(state_dir: Path, record: JobPrivacy) -> None:
    cap = (
        None
        if record.cap is None
        else {"epsilon": record.cap.epsilon, "delta": record.cap.delta, "accountant": record.cap.accountant}
    )
    write_atomic(
        privacy_file(state_dir, record.job_id),
        json.dumps(
            {
                "job": record.job_id,
                "finished": record.finished,
                "cap": cap,
                "spent": [m.to_dict() for m in record.spent],
            }
        )
        + "\n",
    )


def read_privacy(state_dir: Path, job_id: str) -> JobPrivacy | None:
    """The peer's record of `job_id`, or None if it has none."""
    path = privacy_file(state_dir, job_id)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        cap = data.get("cap")
        record = JobPrivacy(
            job_id,
            tuple(Mechanism.from_dict(m) for m in data["spent"]),
            bool(data["finished"]),
            None if cap is None else PrivacyCap(float(cap["epsilon"]), float(cap["delta"]), str(cap["accountant"])),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{path} is not a readable privacy record ({error}): it is this peer's account of job "
            f"{job_id}; restore it from a backup, never delete it"
        ) from None
    if data.get("job") != job_id:
        raise ConfigError(f"{path} belongs to job {data.get('job')!r}, not {job_id!r}: two job ids map to one file")
    return record


def open_record(state_dir: Path, job_id: str, cap: PrivacyCap) -> JobPrivacy:
    """Write the job's record with its `cap` before this peer trains in it; keep what it already holds.

    Raises ConfigError if the record holds another cap (the job's terms changed).
    """
    with job_lock(state_dir, job_id):
        record = read_privacy(state_dir, job_id)
        if record is not None and record.cap is not None:
            if record.cap != cap:
                raise ConfigError(
                    f"the privacy record of job {job_id} holds the cap {record.cap}, not {cap}: "
                    "a job's privacy terms never change once it started"
                )
            return record
        record = replace(record, cap=cap) if record is not None else JobPrivacy(job_id, (), cap=cap)
        write_privacy(state_dir, record)
        return record


@contextmanager
def job_lock(state_dir: Path, job_id: str) -> Iterator[None]:
    """Hold an exclusive lock on the job's record (across processes) for a read-check-write."""
    path = Path(state_dir) / f".{_stem(job_id)}.privacy.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_private_weights(path: Path, job_id: str, weights: dict[str, np.ndarray]) -> None:
    """Keep a bank's private weights for `job_id` at `path` (safetensors, replaced atomically)."""
    write_atomic(
        path, safetensors_bytes({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata={"job": job_id})
    )


def read_private_weights(path: Path, job_id: str) -> dict[str, np.ndarray] | None:
    """The private weights kept at `path` for `job_id`, or None if the bank has none yet."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="np") as handle:
            owner = (handle.metadata() or {}).get("job")
            if owner != job_id:
                raise ConfigError(f"{path} holds private weights of job {owner!r}, not {job_id!r}")
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as error:
        raise ConfigError(
            f"{path} is not a readable safetensors file ({error}): delete it to start the bank's private weights afresh"
        ) from None
