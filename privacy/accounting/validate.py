"""The one check of a privacy guarantee's parameters: ε, δ and the accountant's name.

Every place that takes these from a user (a job's `[dp]`, a simulation's settings, a
peer's `[sources.*]` and `[policy]`, a ledger's budget, the accounting functions) calls
these three functions, so a value refused in one place is refused in all, with the same
words. `name` is the key as the caller's user wrote it (`dp.epsilon`,
`sources.retail.delta`), so the message points at the line to fix.

Rules:

- ε: a real number (not a bool), finite and > 0.
- δ: a real number (not a bool) in the open interval (0, 1).
- accountant: one of `ACCOUNTANTS`.

This module imports nothing but the standard library and the project's errors: a
configuration is checked without loading numpy, torch or Opacus.
"""

from __future__ import annotations

import math
import numbers

from fedsilo.errors import ConfigError

#: The supported accountants: Opacus' PRVAccountant and RDPAccountant, by their Opacus names.
ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")


def _number(value: object) -> float | None:
    """`value` as a float if it is a real number (numpy's included, a bool not), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def _shown(value: object, number: float | None) -> str:
    """The refused value as a message shows it: a number as a float, anything else as its repr."""
    return repr(value) if number is None else repr(number)


def check_epsilon(epsilon: object, name: str = "epsilon", hint: str = "") -> float:
    """`epsilon` as a float if it is a finite number > 0, else ConfigError naming `name`.

    `hint`, when given, is appended to the message: what the user can do instead.
    """
    number = _number(epsilon)
    if number is None or not (math.isfinite(number) and number > 0):
        raise ConfigError(
            f"{name} must be > 0 and finite (got {_shown(epsilon, number)})" + (f"; {hint}" if hint else "")
        )
    return number


def check_delta(delta: object, name: str = "delta") -> float:
    """`delta` as a float if it is a number in (0, 1), else ConfigError naming `name`."""
    number = _number(delta)
    if number is None or not 0 < number < 1:
        raise ConfigError(f"{name} must be in (0, 1) (got {_shown(delta, number)}); 1e-5 or 1/(10·rows) are usual")
    return number


def check_accountant(accountant: object, name: str = "accountant") -> str:
    """`accountant` if it names a supported accountant, else ConfigError naming `name`."""
    if not (isinstance(accountant, str) and accountant in ACCOUNTANTS):
        raise ConfigError(f"{name} {accountant!r} is unknown: valid choices are {', '.join(ACCOUNTANTS)}")
    return accountant
