"""Privacy accounting: a small facade over Opacus' RDP and PRV accountants.

- :class:`Mechanism` — one run of the Poisson-subsampled Gaussian mechanism.
- :func:`epsilon_spent` — ε of a whole history, composed by one Opacus accountant.
- :func:`calibrate_noise` — the smallest noise multiplier that fits a target ε.
- :class:`Accountant` — a stateful, checkpointable history.
- `validate` — the one check of ε, δ and accountant names, for every configuration.
- `planning` — a job's noise from public numbers (local DP-SGD and distributed DP).
"""

from fedsilo.privacy.accounting.accountant import Accountant
from fedsilo.privacy.accounting.compose import calibrate_noise, epsilon_spent
from fedsilo.privacy.accounting.mechanism import Mechanism
from fedsilo.privacy.accounting.validate import ACCOUNTANTS

__all__ = ["ACCOUNTANTS", "Accountant", "Mechanism", "calibrate_noise", "epsilon_spent"]
