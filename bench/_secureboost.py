"""A SecureBoost-style vertical GBDT (Cheng et al., "SecureBoost: A Lossless Federated Learning Framework",
IEEE Intelligent Systems 2021, arXiv:1901.08755), the baseline of bench/vertical_gbdt.py. Bench only.

Parties: the active party (label holder: the broker) and one passive party (feature party:
the bank), over the shared training customers in the PSI order. For every tree:

1. the broker computes the logistic gradients ``g = p - y`` and hessians ``h = p (1 - p)``,
   encodes them in fixed point (``round(x · 2^SCALE_BITS)`` mod n) and Paillier-encrypts
   each one (the obfuscation ``r^n mod n²`` is the cost: by default computed mod p² and
   q² and joined by CRT, which the key owner can do; ``crt=False`` calls ``phe``'s
   ``raw_encrypt``); it sends
   the 2 · rows ciphertexts to the bank once per tree;
2. per level, the broker sends the instance space of every open node (one node slot per
   row); the bank returns, for every (open node, its feature group, bin), the encrypted
   sums of g and h (homomorphic addition: a product mod n², done on gmpy2 integers);
3. the broker decrypts them (CRT, ``raw_decrypt``), puts them next to its own plaintext
   histograms and picks the best cut with the same code as every fedsilo GBDT
   (`fedsilo.strategies.gbdt.tree`); if the cut is the bank's, it sends (node, group,
   bin) and the bank stores the threshold in its lookup table and answers a record id and
   the node's left/right partition (a bitmap); the broker routes its rows;
4. leaf values from the broker's own plaintext g, h per leaf (it knows every row's leaf).

Scoring walks the trees at the broker and asks the bank ``goes_left(record, rows)`` at
each of the bank's nodes (its thresholds never leave it).

Lossless: the decrypted per-bin sums equal the plaintext fixed-point sums exactly
(checked every level when ``check=True``), so the trees are those of a centralized
GBDT on the union of the columns up to the fixed-point rounding (2^-40 per value).

Leakage (no DP guarantee anywhere): the bank learns the instance space of every node at
every level (which of its customers fall together, hence the broker's tree partition),
the number of trees and levels; the broker learns which party and which of its bins
every split uses, the left/right partition of every node (so the bank's bin order of
each training customer at each split), and the model's leaves. Gradients are hidden by
Paillier from the bank (semantic security under the DCR assumption).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import numpy as np

try:
    import gmpy2
    from phe import paillier
except ImportError as missing:  # pragma: no cover - bench-only dependency
    raise SystemExit(
        f"bench/vertical_gbdt.py's SecureBoost baseline needs python-paillier and gmpy2 ({missing}): "
        "pip install phe==1.5.0 gmpy2"
    ) from None

from fedsilo.strategies.gbdt import BinLayout, Tree, TreeParams
from fedsilo.strategies.gbdt.tree import SPLIT

SCALE_BITS = 40


@dataclass
class Costs:
    """Counts and seconds of each Paillier operation and the bytes each way."""

    encryptions: int = 0
    additions: int = 0
    decryptions: int = 0
    seconds_encrypt: float = 0.0
    seconds_add: float = 0.0
    seconds_decrypt: float = 0.0
    seconds_plain: float = 0.0  # the broker's own histograms, split search, routing, leaves
    bytes_to_bank: int = 0
    bytes_to_broker: int = 0
    per_tree: list[float] = field(default_factory=list)


class Bank:
    """The passive party: its binned columns of the shared training rows, its lookup table."""

    def __init__(self, bins: np.ndarray, layout: BinLayout, public_key: paillier.PaillierPublicKey, costs: Costs):
        self.bins, self.layout, self.costs = bins, layout, costs
        self.n2 = gmpy2.mpz(public_key.nsquare)
        self.records: list[tuple[int, int]] = []  # record id -> (its group, bin cut): never sent
        self.g: list = []
        self.h: list = []

    def receive_gradients(self, g: list, h: list) -> None:
        self.g, self.h = [gmpy2.mpz(c) for c in g], [gmpy2.mpz(c) for c in h]

    def histograms(self, slot: np.ndarray, nodes: int) -> list[list]:
        """Encrypted ``(nodes × its bins × 2)`` sums (flat, slot-major) for the instance spaces ``slot``."""
        started = time.perf_counter()
        total, offsets = self.layout.total_bins, self.layout.offsets
        acc_g = [gmpy2.mpz(1)] * (nodes * total)
        acc_h = [gmpy2.mpz(1)] * (nodes * total)
        n2 = self.n2
        rows = np.flatnonzero(slot >= 0)
        keys = slot[rows, None] * total + offsets[None, :] + self.bins[rows]
        for r, row_keys in zip(rows.tolist(), keys.tolist(), strict=True):
            g, h = self.g[r], self.h[r]
            for k in row_keys:
                acc_g[k] = acc_g[k] * g % n2
                acc_h[k] = acc_h[k] * h % n2
        self.costs.additions += 2 * len(rows) * len(offsets)
        self.costs.seconds_add += time.perf_counter() - started
        return [acc_g, acc_h]

    def split(self, group: int, cut: int, rows: np.ndarray) -> tuple[int, np.ndarray]:
        """Store (group, cut) as a new record; the record id and which of ``rows`` go left."""
        self.records.append((group, cut))
        return len(self.records) - 1, self.bins[rows, group] <= cut

    def goes_left(self, record: int, bins: np.ndarray) -> np.ndarray:
        group, cut = self.records[record]
        return bins[:, group] <= cut


def _fixed(values: np.ndarray) -> np.ndarray:
    """Fixed point: ``round(x · 2^SCALE_BITS)`` as int64 (|x| ≤ 1 and ≤ 2^22 rows: sums stay below 2^63)."""
    return np.round(values * 2.0**SCALE_BITS).astype(np.int64)


def _decode(value: int, n: int) -> int:
    return value - n if value > n // 2 else value


class SecureBoost:
    """The active party's loop (see the module docstring); ``check`` asserts the sums exact every level."""

    def __init__(
        self,
        own_bins: np.ndarray,
        own_layout: BinLayout,
        bank_bins: np.ndarray,
        bank_layout: BinLayout,
        joined: BinLayout,
        key_bits: int,
        check: bool = True,
        crt: bool = True,
    ) -> None:
        self.own_bins, self.own_layout, self.joined = own_bins, own_layout, joined
        self.costs = Costs()
        started = time.perf_counter()
        self.public, self.private = paillier.generate_paillier_keypair(n_length=key_bits)
        self.seconds_keygen = time.perf_counter() - started
        self.n = self.public.n
        self.cipher_bytes = (self.public.nsquare.bit_length() + 7) // 8
        self.bank = Bank(bank_bins, bank_layout, self.public, self.costs)
        self.check = check
        self.encrypt = self._encrypt_crt if crt else self.public.raw_encrypt
        p, q = gmpy2.mpz(self.private.p), gmpy2.mpz(self.private.q)
        self._p2, self._q2, self._n2 = p * p, q * q, gmpy2.mpz(self.public.nsquare)
        self._p2_inv = gmpy2.invert(self._p2, self._q2)
        self.trees: list[Tree] = []
        self.records: list[dict[int, int]] = []  # per tree: node -> the bank's record id

    def _encrypt_crt(self, m: int) -> int:
        """``(1 + n m) r^n mod n²`` with ``r^n`` computed mod p² and q² (the key owner's shortcut), r from the OS."""
        n = self.n
        r = gmpy2.mpz(secrets.randbelow(n - 1) + 1)
        a, b = gmpy2.powmod(r, n, self._p2), gmpy2.powmod(r, n, self._q2)
        rn = a + self._p2 * ((b - a) * self._p2_inv % self._q2)
        return int((1 + n * m) % self._n2 * rn % self._n2)

    def fit(self, y: np.ndarray, trees: int, params: TreeParams, learning_rate: float) -> None:
        n_rows, g_own = len(y), len(self.own_layout.groups)
        margin = np.zeros(n_rows)
        c = self.costs
        for _ in range(trees):
            tree_started = time.perf_counter()
            started = time.perf_counter()
            p = 1.0 / (1.0 + np.exp(-margin))
            g, h = p - y, p * (1.0 - p)
            gi, hi = _fixed(g), _fixed(h)
            c.seconds_plain += time.perf_counter() - started
            started = time.perf_counter()
            eg = [self.encrypt(int(v) % self.n) for v in gi]
            eh = [self.encrypt(int(v) % self.n) for v in hi]
            c.seconds_encrypt += time.perf_counter() - started
            c.encryptions += 2 * n_rows
            c.bytes_to_bank += 2 * n_rows * self.cipher_bytes
            self.bank.receive_gradients(eg, eh)
            tree, records = Tree(params.depth), {}
            node = np.zeros(n_rows, dtype=np.int64)
            for _level in range(params.depth):
                nodes = tree.open_nodes()
                if not nodes:
                    break
                slot_of = np.full(tree.state.shape[0], -1, dtype=np.int64)
                slot_of[nodes] = np.arange(len(nodes))
                slot = slot_of[node]
                c.bytes_to_bank += n_rows  # one node slot (int8) per row: the instance spaces
                enc = self.bank.histograms(slot, len(nodes))
                bank_total = self.bank.layout.total_bins
                c.bytes_to_broker += 2 * len(nodes) * bank_total * self.cipher_bytes
                started = time.perf_counter()
                dec = np.array(
                    [[_decode(self.private.raw_decrypt(int(v)), self.n) for v in part] for part in enc], dtype=object
                )
                c.seconds_decrypt += time.perf_counter() - started
                c.decryptions += dec.size
                started = time.perf_counter()
                bank_sums = (dec.T.astype(np.float64) / 2.0**SCALE_BITS).reshape(len(nodes), bank_total, 2)
                own_sums = _plain_histograms(self.own_bins, self.own_layout, slot, len(nodes), g, h)
                if self.check:
                    exact = _plain_histograms(self.bank.bins, self.bank.layout, slot, len(nodes), gi, hi, integer=True)
                    if not (dec.T.reshape(len(nodes), bank_total, 2) == exact).all():
                        raise AssertionError("a decrypted Paillier sum differs from the plaintext fixed-point sum")
                decisions = tree.grow(np.concatenate([own_sums, bank_sums], axis=1), self.joined, params)
                for d in decisions:
                    if d.get("leaf"):
                        continue
                    rows = np.flatnonzero(node == d["node"])
                    if d["group"] < g_own:
                        left = self.own_bins[rows, d["group"]] <= d["cut"]
                    else:
                        record, left = self.bank.split(d["group"] - g_own, d["cut"], rows)
                        records[d["node"]] = record
                        c.bytes_to_bank += 12
                        c.bytes_to_broker += 4 + (len(rows) + 7) // 8
                    node[rows] = 2 * d["node"] + 1 + (~left)
                c.seconds_plain += time.perf_counter() - started
            started = time.perf_counter()
            tree.close()
            leaves = tree.leaves()
            slot_of = np.full(tree.state.shape[0], -1, dtype=np.int64)
            slot_of[leaves] = np.arange(len(leaves))
            k = slot_of[node]
            totals = np.stack([np.bincount(k, g, len(leaves)), np.bincount(k, h, len(leaves))], axis=-1)
            tree.set_leaf_values(totals, params)
            margin += learning_rate * tree.value[node]
            self.trees.append(tree)
            self.records.append(records)
            c.seconds_plain += time.perf_counter() - started
            c.per_tree.append(time.perf_counter() - tree_started)
        self.learning_rate = learning_rate

    def predict_margin(self, own_bins: np.ndarray, bank_bins: np.ndarray) -> np.ndarray:
        """Scores of new rows: the broker walks its trees, the bank answers at its own nodes from its records."""
        g_own = len(self.own_layout.groups)
        margin = np.zeros(own_bins.shape[0])
        for tree, records in zip(self.trees, self.records, strict=True):
            node = np.zeros(own_bins.shape[0], dtype=np.int64)
            for _ in range(tree.depth):
                for split in np.flatnonzero(tree.state == SPLIT):
                    rows = np.flatnonzero(node == split)
                    if not len(rows):
                        continue
                    if tree.group[split] < g_own:
                        left = own_bins[rows, tree.group[split]] <= tree.threshold[split]
                    else:
                        left = self.bank.goes_left(records[int(split)], bank_bins[rows])
                    node[rows] = 2 * split + 1 + (~left)
            margin += self.learning_rate * tree.value[node]
        return margin


def _plain_histograms(
    bins: np.ndarray,
    layout: BinLayout,
    slot: np.ndarray,
    nodes: int,
    g: np.ndarray,
    h: np.ndarray,
    integer: bool = False,
) -> np.ndarray:
    """``(nodes, bins, 2)`` sums of (g, h) per (open node, group, bin); ``integer``: exact int64 sums (fixed point)."""
    total, offsets = layout.total_bins, layout.offsets
    rows = np.flatnonzero(slot >= 0)
    index = (slot[rows, None] * total + offsets[None, :] + bins[rows]).ravel()
    size = nodes * total
    if integer:
        out = np.zeros((size, 2), dtype=np.int64)
        np.add.at(out[:, 0], index, np.repeat(g[rows], bins.shape[1]))
        np.add.at(out[:, 1], index, np.repeat(h[rows], bins.shape[1]))
        return out.reshape(nodes, total, 2)
    gs = np.bincount(index, np.repeat(g[rows], bins.shape[1]), minlength=size)
    hs = np.bincount(index, np.repeat(h[rows], bins.shape[1]), minlength=size)
    return np.stack([gs, hs], axis=-1).reshape(nodes, total, 2)


def phe_api_costs(key_bits: int, count: int) -> dict[str, float]:
    """µs per operation of phe's own API (encode + encrypt, raw_encrypt, EncryptedNumber addition, decrypt + decode)."""
    public, private = paillier.generate_paillier_keypair(n_length=key_bits)
    values = np.random.default_rng(0).normal(size=count).tolist()
    started = time.perf_counter()
    enc = [public.encrypt(v) for v in values]
    t_enc = time.perf_counter() - started
    started = time.perf_counter()
    for v in values:
        public.raw_encrypt(int(v * 2**SCALE_BITS) % public.n)
    t_raw = time.perf_counter() - started
    started = time.perf_counter()
    total = enc[0]
    for e in enc[1:]:
        total = total + e
    t_add = time.perf_counter() - started
    started = time.perf_counter()
    for e in enc:
        private.decrypt(e)
    t_dec = time.perf_counter() - started
    return {
        "encrypt_us": 1e6 * t_enc / count,
        "raw_encrypt_us": 1e6 * t_raw / count,
        "add_us": 1e6 * t_add / max(1, count - 1),
        "decrypt_us": 1e6 * t_dec / count,
    }
