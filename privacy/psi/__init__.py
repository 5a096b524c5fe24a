"""Risk-list sharing without disclosure: private set intersection and anonymous query.

Pure library code (no network): each side is a state machine over byte messages that
a transport (the peer daemon) carries.

* :mod:`privacy.psi.protocol` — DH private set intersection: :class:`PsiReceiver`,
  :class:`PsiSender`, :class:`Mode` (to the receiver, to both, cardinality only).
* :mod:`privacy.psi.query` — anonymous query with labels: :class:`ListHolder`
  publishes an :class:`EncryptedTable` per key epoch and answers blinded queries under
  a :class:`QueryQuota`; a :class:`Querier` reads the labels of what it asked.
* :mod:`privacy.psi.identifiers` — the canonical form of identifiers.
* :mod:`privacy.psi.x25519` — PSI's group, X25519 with hashing onto the curve and
  refusal of twist, small-order and non-canonical elements; :mod:`privacy.psi.group`
  — the query's group, ristretto255 (its scalars can be inverted); both from libsodium.
* :mod:`privacy.psi.wire` — framing; :mod:`privacy.psi.parallel` — :class:`Workers`,
  batches on every core.

Assumptions for every guarantee: both parties are semi-honest (follow the protocol,
try to learn more from what they see); DDH is hard in the prime-order subgroup of
Curve25519 (PSI) and DDH and one-more-DH in ristretto255 (queries); SHA-512 and HKDF
behave as random oracles.
"""

from privacy.psi.identifiers import canonical, split_typed
from privacy.psi.parallel import Workers
from privacy.psi.protocol import Mode, PsiReceiver, PsiResult, PsiSender, exchange
from privacy.psi.query import EncryptedTable, ListHolder, PendingQuery, Querier
from privacy.psi.quota import MemoryQuota, QueryQuota, QueryRecord, SQLiteQuota

__all__ = [
    "canonical",
    "split_typed",
    "Workers",
    "Mode",
    "PsiReceiver",
    "PsiResult",
    "PsiSender",
    "exchange",
    "EncryptedTable",
    "ListHolder",
    "PendingQuery",
    "Querier",
    "MemoryQuota",
    "QueryQuota",
    "QueryRecord",
    "SQLiteQuota",
]
