"""What the researcher sees while a simulation runs: stages and a per-round progress bar.

Progress goes to stderr, so that stdout carries only the summary (and, with `--json`,
the machine-readable line last).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    """Rich progress on stderr; `quiet=True` prints nothing."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self._bar: RichProgress | None = None
        self._task = None
        self._eps = 0.0

    def stage(self, text: str) -> None:
        self.console.print(f"[bold cyan]•[/] {text}")

    def warn(self, text: str) -> None:
        """A line the user should act on (e.g. a column left out of the features)."""
        self.console.print(f"[bold yellow]! warning:[/] {escape(text)}")

    def start_rounds(self, rounds: int) -> None:
        self._bar = RichProgress(
            TextColumn("  rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._bar.add_task("rounds", total=rounds, status="waiting for banks")
        self._bar.start()

    def finish_rounds(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def round_callback(self, rounds: int) -> Callable[[str, int, list[dict], list[str]], None]:
        """A strategy observer callback that advances the bar after each round's evaluation."""

        def on_round(stage: str, server_round: int, metrics: list[dict], errors: list[str]) -> None:
            if self._bar is None or self._task is None:
                return
            if stage == "train":
                eps = [m.get("epsilon", 0.0) for m in metrics]
                self._eps = max([self._eps, *eps])
                status = f"round {server_round}: {len(metrics)} updates"
                if errors:
                    status += f", {len(errors)} failed"
                self._bar.update(self._task, status=status)
                return
            aucs = [m["auc"] for m in metrics if isinstance(m.get("auc"), float) and math.isfinite(m["auc"])]
            mean_auc = sum(aucs) / len(aucs) if aucs else float("nan")
            self._bar.update(
                self._task, completed=server_round, status=f"banks' mean AUC {mean_auc:.3f}  ε ≤ {self._eps:.2f}"
            )

        return on_round
