"""A stateful accountant over one mechanism history, checkpointable like Opacus'."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting.compose import epsilon_spent
from fedsilo.privacy.accounting.mechanism import Mechanism
from fedsilo.privacy.accounting.validate import check_accountant


class Accountant:
    """Tracks the DP-SGD steps taken on one data source and reports ε spent so far.

    Mirrors Opacus' ``IAccountant``: :meth:`step`, :meth:`get_epsilon`, ``history``,
    :meth:`state_dict` / :meth:`load_state_dict`. The state dict has Opacus' layout
    (``{"mechanism": "rdp", "history": [[σ, q, steps], ...]}``) and is JSON-serializable,
    so the state of an Opacus accountant can be loaded here and vice versa.

    Assumption: every step recorded here ran on the same records; δ is that source's δ.
    """

    def __init__(self, accountant: str = "rdp", history: Iterable[Mechanism] = ()) -> None:
        self.mechanism = check_accountant(accountant)
        self._history: list[Mechanism] = []
        for m in history:
            if not isinstance(m, Mechanism):
                raise ConfigError(f"expected a Mechanism, got {type(m).__name__}")
            self._append(m)

    def _append(self, m: Mechanism) -> None:
        if m.steps == 0:
            return
        last = self._history[-1] if self._history else None
        if last and (last.noise_multiplier, last.sample_rate) == (
            m.noise_multiplier,
            m.sample_rate,
        ):
            self._history[-1] = Mechanism(last.noise_multiplier, last.sample_rate, last.steps + m.steps)
        else:
            self._history.append(m)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` steps at this noise multiplier and sample rate; a run
        identical to the last one is merged into it to keep the history compact."""
        self._append(Mechanism(noise_multiplier, sample_rate, steps))

    def get_epsilon(self, delta: float) -> float:
        """ε spent by the whole history at ``delta`` (composed, see ``epsilon_spent``)."""
        return epsilon_spent(self._history, delta, self.mechanism)

    @property
    def history(self) -> list[Mechanism]:
        """A copy of the history, oldest run first."""
        return list(self._history)

    def __len__(self) -> int:
        """Number of runs in the (compacted) history, as in Opacus."""
        return len(self._history)

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serializable snapshot: ``{"mechanism": name, "history": [[σ, q, steps], ...]}``."""
        return {
            "mechanism": self.mechanism,
            "history": [[m.noise_multiplier, m.sample_rate, m.steps] for m in self._history],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace the state by ``state_dict`` (ours or an Opacus accountant's).

        Raises ConfigError, leaving the state unchanged, if it is malformed or was made
        by a different accounting mechanism.
        """
        if not isinstance(state_dict, Mapping) or not {"mechanism", "history"} <= set(state_dict):
            raise ConfigError("an accountant state dict needs the keys 'mechanism' and 'history'")
        if state_dict["mechanism"] != self.mechanism:
            raise ConfigError(
                f"cannot load a {state_dict['mechanism']!r} accountant state into a "
                f"{self.mechanism!r} accountant; create Accountant({state_dict['mechanism']!r})"
            )
        runs: list[Mechanism] = []
        for entry in state_dict["history"]:
            if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 3:
                raise ConfigError(f"history entries must be [noise_multiplier, sample_rate, steps], got {entry!r}")
            runs.append(Mechanism(*entry))
        fresh = Accountant(self.mechanism, runs)
        self._history = fresh._history
