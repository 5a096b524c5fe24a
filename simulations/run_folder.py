"""A run folder that appears whole or not at all.

Files are written into a hidden sibling (`.NAME.partial`) and renamed into place when
the run succeeds; on any error the partial folder is removed, so a failed run never
leaves a half-written folder behind.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType


def new_run_name(prefix: str = "run") -> str:
    return f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S-%f')}"


class RunFolder:
    """`with RunFolder(out_dir) as folder: ... folder.path / "file"` then `folder.final`."""

    def __init__(self, out_dir: str | Path, name: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.name = name or new_run_name()
        self.final = self.out_dir / self.name
        self.path = self.out_dir / f".{self.name}.partial"

    def __enter__(self) -> RunFolder:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.final.exists():
            raise FileExistsError(f"run folder {self.final} already exists")
        self.path.mkdir()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.path.rename(self.final)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
