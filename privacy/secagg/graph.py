"""The SecAgg+ communication graph and its reconstruction threshold.

Construction
------------
Nodes are placed on a circle in the order of ``HMAC-SHA256(round_seed, node_id)`` -- a
uniformly random permutation derived from the public round seed -- and each node is
joined to the ``k/2`` nearest nodes on either side (the Harary graph H(n, k), k even,
as in Bell et al. 2020). Every node therefore has degree exactly k, and for a fixed
node u the set of its k neighbours is a uniformly random k-subset of the other n - 1
nodes (the permutation is uniform). A peer shares its secrets among its *holders*
``N(u) + {u}`` (h = k + 1 holders, the node keeps one share itself, as in Bonawitz
et al. 2017).

Deriving k and t from targets (our conservative rule)
-----------------------------------------------------
Targets: a tolerated dropout fraction delta, a tolerated colluding fraction gamma
(clients colluding with the server), security ``sigma`` bits and correctness ``eta``
bits. Let ``C = floor(gamma n)`` corrupt and ``D = floor(delta n)`` dropped nodes,
chosen independently of the round seed (static adversary; the seed is fixed after
corruption, e.g. a hash of the signed job and round, or the server's fresh randomness
under the honest-but-curious model). For each even k the number of corrupt
neighbours of an honest node is exactly hypergeometric HG(n-1, C, k); we compute
its tail exactly (integers, ``math.comb``) and take

* ``c`` = smallest count with ``n * P[HG(n-1, C, k) > c] <= 2**-(sigma+1)``;
* ``d`` = ``1 + `` the same for ``HG(n-1, D-1, k)`` at ``2**-eta`` (a dropped node loses
  its own share too; HG(D) <= 1 + HG(D-1) stochastically, so this also covers a
  surviving node whose neighbours drop), ``d = 0`` when D = 0;
* ``t = floor((h + c) / 2) + 1``: more than half of the holders plus the corrupt ones,
  so (i) the c colluders alone never reach t, and (ii) two disjoint groups of honest
  holders cannot both reach t -- a server that tells some holders "u survived" and
  others "u dropped" can never obtain both ``b_u`` and ``s_u``;
* robustness: ``h - d >= t`` (enough holders survive to reconstruct);
* connectivity (sparse graphs only): removing the corrupt and dropped nodes must not
  split the honest survivors, else masks cancel per component and the server learns
  partial sums. Splitting H(n, k) needs two runs of k/2 consecutive removed nodes;
  we require ``n * C(C+D, k/2) / C(n, k/2) <= 2**-(sigma+1)`` (one run), conservative.

The smallest even k meeting all conditions is used. When ``n <= complete_graph_max``
or no k < n - 1 qualifies, the complete graph (k = n - 1) is used with the same rule
(there the counts are exact: c = C, d = D). If even that fails, the targets are
infeasible for n and ConfigError says so. Union bounds over the n nodes give a total
failure probability <= 2**-sigma for privacy and <= 2**-eta for completing the round.
k grows as O(sigma + log n) (Bell et al.'s O(log n) degree at fixed sigma).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fedsilo.errors import ConfigError

__all__ = ["GraphParameters", "Graph", "graph_parameters", "build_graph"]

_ORDER_LABEL = b"fedsilo/secagg/v1/graph|"


@dataclass(frozen=True)
class GraphParameters:
    """Degree and threshold for n nodes, with the bounds they were derived from."""

    n_nodes: int
    degree: int  # k: neighbours per node (holders h = k + 1)
    threshold: int  # t: shares needed to reconstruct a secret
    complete: bool
    corrupt: int  # C = floor(gamma n)
    dropped: int  # D = floor(delta n)
    max_corrupt_neighbours: int  # c
    max_dropped_holders: int  # d
    security_bits: int
    correctness_bits: int

    @property
    def holders(self) -> int:
        return self.degree + 1


@dataclass(frozen=True)
class Graph:
    """A round's communication graph: ``neighbours[u]`` excludes u itself."""

    nodes: tuple[int, ...]
    neighbours: Mapping[int, frozenset[int]]
    params: GraphParameters

    @property
    def threshold(self) -> int:
        return self.params.threshold

    @property
    def degree(self) -> int:
        return self.params.degree

    def holders(self, node: int) -> frozenset[int]:
        """The nodes holding shares of ``node``'s secrets: its neighbours and itself."""
        return self.neighbours[node] | {node}


def _fraction_count(fraction: float, n: int) -> int:
    return math.floor(fraction * n + 1e-9)


def _hypergeometric_bound(population: int, marked: int, draws: int, n: int, bits: int) -> int:
    """Smallest c with ``n * P[HG(population, marked, draws) > c] <= 2**-bits`` (exact)."""
    if marked <= 0 or draws <= 0:
        return 0
    total = math.comb(population, draws)
    scale = n << bits
    hi = min(marked, draws)
    lo = max(0, draws - (population - marked))
    tail = 0  # P[X >= j] * total, accumulated from the top
    for j in range(hi, lo, -1):
        tail += math.comb(marked, j) * math.comb(population - marked, draws - j)
        if tail * scale > total:  # P[X > j - 1] too large: the bound is j
            return j
    return lo


def _check(n: int, k: int, C: int, D: int, sigma: int, eta: int, complete: bool) -> tuple[int, int, int] | None:
    h = k + 1
    c = _hypergeometric_bound(n - 1, C, k, n, sigma + 1)
    d = 0 if D == 0 else 1 + _hypergeometric_bound(n - 1, D - 1, k, n, eta)
    t = (h + c) // 2 + 1
    if h - d < t:
        return None
    if not complete:
        w = k // 2
        removed = C + D
        if removed >= w and n * math.comb(removed, w) << (sigma + 1) > math.comb(n, w):
            return None
    return c, d, t


@functools.lru_cache(maxsize=512)
def graph_parameters(
    n: int,
    dropout_fraction: float,
    collusion_fraction: float,
    security_bits: int = 40,
    correctness_bits: int = 30,
    complete_graph_max: int = 30,
) -> GraphParameters:
    """Degree k and threshold t for n nodes under the stated targets (see module doc)."""
    if not isinstance(n, int) or n < 2:
        raise ConfigError(f"secure aggregation needs at least 2 peers, got {n!r}")
    for name, value in (("dropout_fraction", dropout_fraction), ("collusion_fraction", collusion_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"secagg {name} must lie in [0, 1), got {value!r}")
    if security_bits < 1 or correctness_bits < 1:
        raise ConfigError("secagg security_bits and correctness_bits must be >= 1")
    C = _fraction_count(collusion_fraction, n)
    D = _fraction_count(dropout_fraction, n)
    if n > complete_graph_max:
        for k in range(2, n - 1, 2):
            found = _check(n, k, C, D, security_bits, correctness_bits, complete=False)
            if found:
                c, d, t = found
                return GraphParameters(n, k, t, False, C, D, c, d, security_bits, correctness_bits)
    k = n - 1
    found = _check(n, k, C, D, security_bits, correctness_bits, complete=True)
    if not found:
        raise ConfigError(
            f"secagg cannot tolerate {D} dropouts (dropout_fraction={dropout_fraction}) and "
            f"{C} colluders (collusion_fraction={collusion_fraction}) among {n} peers: the "
            f"threshold floor((n + {C})/2) + 1 would exceed the {n - D} peers left; lower "
            f"the fractions or add peers"
        )
    c, d, t = found
    return GraphParameters(n, k, t, True, C, D, c, d, security_bits, correctness_bits)


def _order_key(round_seed: bytes, node: int) -> bytes:
    return hmac.new(round_seed, _ORDER_LABEL + node.to_bytes(8, "big"), hashlib.sha256).digest()


def build_graph(
    node_ids: Iterable[int],
    round_seed: bytes,
    dropout_fraction: float = 0.3,
    collusion_fraction: float = 0.1,
    *,
    security_bits: int = 40,
    correctness_bits: int = 30,
    complete_graph_max: int = 30,
) -> Graph:
    """Deterministic graph for a round: same inputs, same graph, on every peer."""
    nodes = tuple(sorted(node_ids))
    if len(set(nodes)) != len(nodes):
        raise ConfigError("secagg node ids must be distinct")
    if any(not isinstance(u, int) or not 0 <= u < 1 << 64 for u in nodes):
        raise ConfigError("secagg node ids must be integers in [0, 2**64)")
    if not isinstance(round_seed, bytes) or len(round_seed) < 16:
        raise ConfigError("secagg round seed must be at least 16 bytes")
    params = graph_parameters(
        len(nodes),
        dropout_fraction,
        collusion_fraction,
        security_bits,
        correctness_bits,
        complete_graph_max,
    )
    return Graph(nodes=nodes, neighbours=_neighbours(nodes, round_seed, params.degree, params.complete), params=params)


@functools.lru_cache(maxsize=8)  # every in-process peer of a simulation builds the same graph
def _neighbours(nodes: tuple[int, ...], round_seed: bytes, degree: int, complete: bool) -> Mapping[int, frozenset[int]]:
    if complete:
        everyone = frozenset(nodes)
        table = {u: everyone - {u} for u in nodes}
    else:
        order = sorted(nodes, key=lambda u: _order_key(round_seed, u))
        n, half = len(order), degree // 2
        table = {
            u: frozenset(order[(i + j) % n] for j in range(-half, half + 1) if j != 0) for i, u in enumerate(order)
        }
    return MappingProxyType(table)
