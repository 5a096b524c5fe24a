"""Small files of pure accounting results, shared by every process on the machine.

Calibrating a noise multiplier and computing the RDP of one subsampled-Gaussian step are
pure functions of their arguments, of the Opacus version and of the RDP orders, and
they are slow (a fraction of a second to seconds each). A simulation runs them in many
processes (the harness, every Ray worker) for the same few arguments; this store keeps
each result in one small JSON file under `$FEDSILO_CACHE` (default
`$XDG_CACHE_HOME/fedsilo`, else `~/.cache/fedsilo`), one directory per kind, written
atomically, so each is computed at most once per machine. A file that cannot be read or
written is ignored and the caller computes the value. Floats are written with `repr`
(what `json` does), so a value read back is the exact float that was computed.

Assumption: the directory is as trusted as the code. Its values set noise and ε (a
forged file could under-state what a job spends), so it must be writable only by the
user running fedsilo, as `~/.cache` is.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any


def root() -> Path:
    """The directory all kinds of cached results live under."""
    return Path(
        os.environ.get("FEDSILO_CACHE")
        or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fedsilo")
    )


def opacus_version() -> str:
    """The installed Opacus version: part of every key, since Opacus computes the values."""
    try:
        return metadata.version("opacus")
    except metadata.PackageNotFoundError:
        return "unknown"


def key(parts: list[Any]) -> str:
    """A file name for `parts` (JSON-serialisable: pass floats as `repr` strings)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def load(kind: str, name: str) -> dict[str, Any] | None:
    """The record stored under `kind`/`name`, or None when absent or unreadable."""
    try:
        record = json.loads((root() / kind / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def save(kind: str, name: str, record: dict[str, Any]) -> None:
    """Store `record` under `kind`/`name` atomically; failures are ignored (see module doc)."""
    path = root() / kind / f"{name}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(record))
        os.replace(partial, path)
    except OSError:
        pass
