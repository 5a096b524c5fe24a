"""The project's own exception types.

Every error a user can cause (a bad config, a malformed update, a refused job, an
exhausted budget) is raised as one of these, with a message that says what was wrong
and what to do. They live in the lowest layer so that every layer can raise them.
"""


class FedsiloError(Exception):
    """Base class of every error fedsilo raises on purpose."""


class ConfigError(FedsiloError):
    """A configuration value or flag is missing, malformed or out of range."""


class DataError(FedsiloError):
    """Input data cannot be used as given (missing column, empty partition, ...)."""


class BudgetExceeded(FedsiloError):
    """A job would spend more privacy budget than a data source has left."""


class LedgerError(FedsiloError):
    """A privacy-ledger operation is invalid (unknown source or job, double commit)."""


class CryptoSuiteError(FedsiloError):
    """A key, signature or ciphertext does not verify or does not belong to the consortium's crypto suite."""


class ProtocolError(FedsiloError):
    """A protocol message is malformed, out of order, replayed or unauthenticated."""


class PrivacyAuditFailed(FedsiloError):
    """A privacy audit measured more leakage than the claimed guarantee allows.

    Raised when the empirical ε lower bound of a one-run canary audit exceeds the ε the
    run claims: at the audit's stated confidence the claim is false, which means a bug
    (a missing noise call, a mis-wired accountant), not bad luck.

    `result`: the audited run (a `SimulationResult`) when the Python API ran it, else None.
    """

    result: object = None


class PsiError(FedsiloError):
    """A private-set-intersection or anonymous-query operation cannot proceed."""


class QuotaExceeded(PsiError):
    """A querier asked a list holder for more identifiers than its quota allows."""


class StaleEpoch(PsiError):
    """A query names a key epoch the list holder no longer (or never) served."""


class PsiFrameError(ProtocolError, PsiError):
    """A PSI peer's frame is malformed, out of order or of another protocol or session.

    Both a :class:`ProtocolError` (a bad message) and a :class:`PsiError` (the PSI run
    cannot proceed), so callers catching either see it.
    """
