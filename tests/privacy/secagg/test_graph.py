"""The SecAgg+ graph: O(log n) degree, complete for small n, threshold derived as stated."""

from __future__ import annotations

import math

import pytest
from scipy.stats import hypergeom

from fedsilo.errors import ConfigError
from fedsilo.privacy.secagg import build_graph, graph_parameters

SEED = bytes(range(32))


def test_sparse_degree_is_logarithmic_for_1000_nodes():
    g = build_graph(range(1000), SEED, dropout_fraction=0.05, collusion_fraction=0.05)
    k = g.degree
    assert not g.params.complete
    assert k <= 10 * math.log2(1000)  # ~ 62 here: O(log n), far below n - 1 = 999
    assert all(len(g.neighbours[u]) == k for u in g.nodes)  # k-regular
    assert all(u in g.neighbours[v] for u in g.nodes for v in g.neighbours[u])  # undirected
    assert all(u not in g.neighbours[u] for u in g.nodes)
    # growing n tenfold (and a hundredfold) adds only a few neighbours
    k4 = graph_parameters(10_000, 0.05, 0.05).degree
    k5 = graph_parameters(100_000, 0.05, 0.05).degree
    assert k < k4 < k5 < 1.5 * k


def test_complete_for_small_n():
    for n in (2, 5, 10, 30):
        g = build_graph(range(n), SEED)
        assert g.params.complete and g.degree == n - 1
        assert all(g.neighbours[u] == set(range(n)) - {u} for u in range(n))


@pytest.mark.parametrize(
    ("n", "delta", "gamma"), [(5, 0.3, 0.1), (40, 0.3, 0.1), (1000, 0.05, 0.05), (1000, 0.1, 0.05), (300, 0.2, 0.1)]
)
def test_threshold_follows_the_stated_rule(n, delta, gamma):
    p = graph_parameters(n, delta, gamma)
    C, D = math.floor(gamma * n + 1e-9), math.floor(delta * n + 1e-9)
    k, t, h = p.degree, p.threshold, p.degree + 1
    # c: smallest count whose hypergeometric tail, union-bounded over n nodes, is <= 2**-(sigma+1)
    eps = 2.0 ** -(p.security_bits + 1) / n
    sf = lambda c: hypergeom.sf(c, n - 1, C, k)  # noqa: E731  P[X > c]
    assert sf(p.max_corrupt_neighbours) <= eps * (1 + 1e-6)
    if p.max_corrupt_neighbours > 0:
        assert sf(p.max_corrupt_neighbours - 1) > eps * (1 - 1e-6)
    assert t == (h + p.max_corrupt_neighbours) // 2 + 1  # majority of holders plus colluders
    assert t > p.max_corrupt_neighbours  # colluders alone never reach t
    assert 2 * (t - p.max_corrupt_neighbours) > h - p.max_corrupt_neighbours  # no two disjoint honest quorums
    assert h - p.max_dropped_holders >= t  # survivors can reconstruct
    if p.complete:
        assert (p.max_corrupt_neighbours, p.max_dropped_holders) == (C, D)
    # recomputed independently (scipy), the rule holds at k and fails at every smaller even k
    if not p.complete:
        assert _rule_holds(n, k, C, D, p.security_bits, p.correctness_bits)
        assert not any(_rule_holds(n, j, C, D, p.security_bits, p.correctness_bits) for j in range(2, k, 2))


def _bound(n, marked, k, bits):
    eps = 2.0**-bits / n
    return next(c for c in range(k + 1) if hypergeom.sf(c, n - 1, marked, k) <= eps * (1 + 1e-6))


def _rule_holds(n, k, C, D, sigma, eta):
    c = _bound(n, C, k, sigma + 1) if C else 0
    d = 1 + _bound(n, D - 1, k, eta) if D > 1 else min(D, 1)
    t = (k + 1 + c) // 2 + 1
    w = k // 2
    split = n * math.comb(C + D, w) / math.comb(n, w)  # a run of k/2 removed nodes
    return k + 1 - d >= t and split <= 2.0 ** -(sigma + 1)


def test_deterministic_from_the_round_seed():
    nodes = list(range(200))
    a = build_graph(nodes, SEED, 0.1, 0.05)
    b = build_graph(reversed(nodes), SEED, 0.1, 0.05)
    c = build_graph(nodes, bytes(32), 0.1, 0.05)
    assert not a.params.complete
    assert a.neighbours == b.neighbours
    assert a.neighbours != c.neighbours


def test_infeasible_targets_are_a_config_error():
    with pytest.raises(ConfigError, match="cannot tolerate"):
        graph_parameters(5, 0.6, 0.2)
    with pytest.raises(ConfigError):
        graph_parameters(1, 0.1, 0.1)
    with pytest.raises(ConfigError):
        build_graph([1, 1, 2], SEED)
