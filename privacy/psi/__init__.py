"""Risk-list sharing without disclosure: private set intersection and anonymous query.

Pure library code (no network): each side is a state machine over byte messages that
a transport (the peer daemon) carries.

* :mod:`fedsilo.privacy.psi.protocol` — DH private set intersection: :class:`PsiReceiver`,
  :class:`PsiSender`, :class:`Mode` (to the receiver, to both, cardinality only).
* :mod:`fedsilo.privacy.psi.kkrt` — OT-extension private set intersection (KKRT16):
  :class:`KkrtReceiver`, :class:`KkrtSender`, the same modes but cardinality, about ten
  times less CPU than the DH protocol; :mod:`fedsilo.privacy.psi.ot` (base OTs, PRG, bit
  transposes), :mod:`fedsilo.privacy.psi.cuckoo`, :mod:`fedsilo.privacy.psi.otwire` (its frames).
* :mod:`fedsilo.privacy.psi.query` — anonymous query with labels: :class:`ListHolder`
  publishes an :class:`EncryptedTable` per key epoch and answers blinded queries under
  a :class:`QueryQuota`; a :class:`Querier` reads the labels of what it asked.
* :mod:`fedsilo.privacy.psi.identifiers` — the canonical form of identifiers.
* :mod:`fedsilo.privacy.psi.x25519` — PSI's group, X25519 with hashing onto the curve and
  refusal of twist, small-order and non-canonical elements; :mod:`fedsilo.privacy.psi.group`
  — the query's group, ristretto255 (its scalars can be inverted); both from libsodium.
* :mod:`fedsilo.privacy.psi.groups` — which group each crypto suite runs in: the two above
  under ``standard``; under ``gm`` :mod:`fedsilo.privacy.psi.sm2`, the SM2 curve with RFC 9380
  hashing (SSWU, SM3), its point arithmetic in Tongsuo (:mod:`fedsilo.privacy.psi.tongsuo_ec`).
* :mod:`fedsilo.privacy.psi.wire` — framing; :mod:`fedsilo.privacy.psi.parallel` — :class:`Workers`,
  batches on every core.

Assumptions for every guarantee: both parties are semi-honest (follow the protocol,
try to learn more from what they see); DDH is hard in the prime-order subgroup of
Curve25519 (PSI) and DDH and one-more-DH in ristretto255 (queries), or both on
sm2p256v1 under the gm suite; SHA-512 and HKDF (SM3 and its KDF under gm) behave as
random oracles.
"""

from fedsilo.privacy.psi.identifiers import canonical, split_typed
from fedsilo.privacy.psi.kkrt import KkrtReceiver, KkrtSender
from fedsilo.privacy.psi.parallel import Workers
from fedsilo.privacy.psi.protocol import Mode, PsiReceiver, PsiResult, PsiSender, exchange
from fedsilo.privacy.psi.query import EncryptedTable, ListHolder, PendingQuery, Querier
from fedsilo.privacy.psi.quota import MemoryQuota, QueryQuota, QueryRecord, SQLiteQuota

__all__ = [
    "canonical",
    "split_typed",
    "Workers",
    "KkrtReceiver",
    "KkrtSender",
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
