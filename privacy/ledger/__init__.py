"""The per-data-source privacy budget ledger (reserve, commit, release; never overspend).

:class:`PrivacyLedger` is the interface; :class:`SQLiteLedger` the embedded default,
safe across processes; :class:`InMemoryLedger` for tests and simulations.
"""

from fedsilo.privacy.ledger.base import BudgetStatus, PrivacyLedger
from fedsilo.privacy.ledger.memory import InMemoryLedger
from fedsilo.privacy.ledger.sqlite import SQLiteLedger

__all__ = ["BudgetStatus", "InMemoryLedger", "PrivacyLedger", "SQLiteLedger"]
