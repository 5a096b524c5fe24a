"""What a deployed peer's ClientApp keeps on its own disk, per job, under its node's state directory.

A SuperNode's node config names `state-dir` (a directory of that peer only). For each
job the ClientApp writes there:

- `<job>.encoder.json`: the job's encoder, as the host sent it;
- `<job>.privacy.json`: the mechanisms this peer's accountant has run so far in the
  job (`spent`), rewritten atomically after every training round, and `finished`,
  set when the host announces the end of the job.

So the peer commits to its ledger what its own accountant recorded, not what the host
reports. Files are replaced atomically; a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from privacy.accounting import Mechanism
from privacy.errors import ConfigError

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _stem(job_id: str) -> str:
    if not job_id:
        raise ConfigError("a job id is needed to keep a peer's job state")
    return _SAFE.sub("_", job_id)


def encoder_file(state_dir: Path, job_id: str) -> Path:
    return Path(state_dir) / f"{_stem(job_id)}.encoder.json"


def privacy_file(state_dir: Path, job_id: str) -> Path:
    return Path(state_dir) / f"{_stem(job_id)}.privacy.json"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class JobPrivacy:
    """A peer's own record of a job: what it spent, and whether the job has ended."""

    job_id: str
    spent: tuple[Mechanism, ...]
    finished: bool = False


def write_privacy(state_dir: Path, record: JobPrivacy) -> None:
    write_atomic(privacy_file(state_dir, record.job_id), json.dumps({
        "job": record.job_id, "finished": record.finished, "spent": [m.to_dict() for m in record.spent]}) + "\n")


def read_privacy(state_dir: Path, job_id: str) -> JobPrivacy | None:
    """The peer's record of `job_id`, or None if it never trained in it."""
    path = privacy_file(state_dir, job_id)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("job") != job_id:
        raise ConfigError(f"{path} belongs to job {data.get('job')!r}, not {job_id!r}: two job ids map to one file")
    return JobPrivacy(job_id, tuple(Mechanism.from_dict(m) for m in data["spent"]), bool(data["finished"]))
