"""Partitioners: disjoint and covering, skewed as asked, and clear errors."""

import numpy as np
import pytest

from fedsilo.errors import ConfigError, DataError
from fedsilo.simulations.data.partition import (
    DirichletPartitioner,
    IidPartitioner,
    QuantityPartitioner,
    parse_partitioner,
)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return (np.random.default_rng(0).random(10_000) < 0.22).astype(np.int64)


def _check_disjoint_covering(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


def _rate_spread(parts, labels):
    return float(np.std([labels[p].mean() for p in parts]))


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "quantity:1", "dirichlet:100", "QUANTITY:2.5"])
def test_disjoint_covering_deterministic(spec, labels):
    partitioner = parse_partitioner(spec)
    parts = partitioner.split(labels, 10, seed=3)
    _check_disjoint_covering(parts, len(labels))
    again = partitioner.split(labels, 10, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert all(len(p) >= 20 and len(np.unique(labels[p])) == 2 for p in parts)


def test_parse_kinds():
    assert isinstance(parse_partitioner("iid"), IidPartitioner)
    assert parse_partitioner("dirichlet:0.3") == DirichletPartitioner(alpha=0.3)
    assert parse_partitioner(" quantity:2 ") == QuantityPartitioner(alpha=2.0)
    assert parse_partitioner("dirichlet:0.3").spec == "dirichlet:0.3"


def test_dirichlet_small_alpha_skews_labels(labels):
    iid = parse_partitioner("iid").split(labels, 10, seed=0)
    skewed = parse_partitioner("dirichlet:0.3").split(labels, 10, seed=0)
    assert _rate_spread(iid, labels) < 0.02
    assert _rate_spread(skewed, labels) > 3 * _rate_spread(iid, labels)
    assert _rate_spread(skewed, labels) > 0.08


def test_quantity_skews_sizes_not_labels(labels):
    iid_sizes = [len(p) for p in parse_partitioner("iid").split(labels, 10, seed=0)]
    parts = parse_partitioner("quantity:0.5").split(labels, 10, seed=0)
    sizes = [len(p) for p in parts]
    assert max(iid_sizes) - min(iid_sizes) <= 1
    assert max(sizes) / min(sizes) > 5
    big = [p for p in parts if len(p) > 500]
    assert all(abs(labels[p].mean() - labels.mean()) < 0.05 for p in big)


@pytest.mark.parametrize("spec", ["", "random", "dirichlet", "dirichlet:", "dirichlet:abc", "iid:2", "pareto:1"])
def test_bad_spec_names_valid_forms(spec):
    with pytest.raises(ConfigError, match="dirichlet:ALPHA"):
        parse_partitioner(spec)


@pytest.mark.parametrize("spec", ["dirichlet:0", "quantity:-1", "dirichlet:nan", "quantity:inf"])
def test_alpha_must_be_positive(spec):
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        parse_partitioner(spec)


def test_direct_construction_checks_alpha():
    with pytest.raises(ConfigError, match="> 0"):
        DirichletPartitioner(alpha=0.0)


def test_too_many_banks(labels):
    with pytest.raises(DataError, match="use at most 50 banks"):
        parse_partitioner("iid").split(labels[:1000], 60, seed=0)
    with pytest.raises(DataError, match="use at most"):
        parse_partitioner("iid").split(labels[:10], 11, seed=0)


def test_impossible_skew_names_bank_and_fix(labels):
    with pytest.raises(DataError, match=r"bank \d+ .*larger alpha.*fewer banks"):
        parse_partitioner("dirichlet:0.01").split(labels, 50, seed=0)
    with pytest.raises(DataError, match=r"bank \d+ .*quantity:"):
        parse_partitioner("quantity:0.05").split(labels, 100, seed=0)


def test_single_class_labels():
    with pytest.raises(DataError, match="single class"):
        parse_partitioner("iid").split(np.zeros(500), 5, seed=0)


def test_bad_banks_and_seed(labels):
    with pytest.raises(ConfigError):
        parse_partitioner("iid").split(labels, 0, seed=0)
    with pytest.raises(ConfigError):
        parse_partitioner("iid").split(labels, 5, seed=-1)
