"""Privacy accounting: a small facade over Opacus' RDP and PRV accountants.

- :class:`Mechanism` — one run of the Poisson-subsampled Gaussian mechanism.
- :func:`epsilon_spent` — ε of a whole history, composed by one Opacus accountant.
- :func:`calibrate_noise` — the smallest noise multiplier that fits a target ε.
- :class:`Accountant` — a stateful, checkpointable history.
"""

from fedsilo.privacy.accounting.accountant import Accountant
from fedsilo.privacy.accounting.compose import ACCOUNTANTS, calibrate_noise, epsilon_spent
from fedsilo.privacy.accounting.mechanism import Mechanism

__all__ = ["ACCOUNTANTS", "Accountant", "Mechanism", "calibrate_noise", "epsilon_spent"]
