"""GBDT histograms under SecAgg+: the host's view, refusals naming the bank, and the accounting."""

from __future__ import annotations

import math
from dataclasses import replace

import _gbdt_data as data
import numpy as np
import pytest

from fedsilo.errors import BudgetExceeded, ConfigError, ProtocolError
from fedsilo.peers.gbdt.bank import LEAVES, LEVEL
from fedsilo.peers.gbdt.federation import BoostSettings, boost, local_sigmas, secure_configs, split_noise_sd
from fedsilo.privacy.accounting import epsilon_spent
from fedsilo.privacy.gbdt import leaf_sensitivity, level_sensitivity, plan_releases
from fedsilo.privacy.ledger import InMemoryLedger
from fedsilo.privacy.secagg import MaskedInput, SecAggServer, graph_parameters
from fedsilo.privacy.secagg.noise import central_noise_multiplier
from fedsilo.privacy.secagg.session import ReleaseRequest
from fedsilo.privacy.secagg.session_server import ReleaseServer
from fedsilo.strategies.gbdt import (
    MIN_CHILD_NOISE_SDS,
    HistogramRefused,
    SecureSession,
    Tree,
    TreeParams,
    check_histogram,
    secure_sum,
)

N = 600
PARAMS = TreeParams(depth=2)


def _setup(n_banks: int, dp_mode: str = "off", trees: int = 2, epsilon: float = 3.0, bins: int = 8):
    x, y = data.rows(N, seed=1)
    lay = data.layout(bins)
    settings = BoostSettings(trees=trees, params=PARAMS, dp_mode=dp_mode, secure=True)
    plan = plan_releases(epsilon, 1e-5, trees, PARAMS.depth, "prv") if dp_mode != "off" else None
    row_bound = -(-N // n_banks)
    configs = secure_configs(settings, lay, n_banks, row_bound, plan)
    banks, directory = data.banks(x, y, n_banks, lay, row_bound, configs)
    return lay, settings, plan, row_bound, configs, banks, directory


def _root_request(banks, lay):
    tree = Tree(PARAMS.depth)
    for bank in banks:
        bank.start_tree()
        bank.request(LEVEL, tree)
    return (1, lay.total_bins, 2)


def test_the_host_sees_only_the_sum_and_cannot_read_one_banks_histogram(monkeypatch) -> None:
    """The attacker is the host: it keeps every message it receives, with the job's full configuration."""
    lay, _, _, row_bound, configs, banks, directory = _setup(4, bins=128)  # 776 values: tight statistics
    seen: list = []
    original = SecAggServer.receive_masked_input

    def spy(self, sender, msg):
        seen.append((sender, msg.masked.copy()))
        return original(self, sender, msg)

    monkeypatch.setattr(SecAggServer, "receive_masked_input", spy)
    shape = _root_request(banks, lay)
    truth = {b.node_id: b.exact() for b in banks}
    outcome = secure_sum(configs[0], 1, banks, int(np.prod(shape)), directory)
    total = outcome.sums.reshape(shape) * row_bound
    assert np.allclose(total, sum(truth.values()), atol=1e-5)  # the sum is released, exactly up to rounding
    assert set(outcome.survivors) == {b.name for b in banks} and outcome.aborted is None
    encoder = configs[0].encoder(len(banks))
    assert len(seen) == len(banks)
    for sender, masked in seen:
        # the attack: read the masked vector as if it were the bank's plain encoding
        decoded = masked[:-1].astype(np.float64) / encoder.scale - configs[0].clip
        true = truth[sender].ravel() / row_bound
        assert np.abs(decoded - true).mean() > 20 * np.abs(true).mean()  # off by the whole range, not by noise
        assert abs(np.corrcoef(decoded, true)[0, 1]) < 0.2
        uniform = masked.astype(np.float64) / encoder.modulus
        assert abs(uniform.mean() - 0.5) < 0.05  # masks make every coordinate look uniform on Z_M


def test_check_histogram_refuses_naming_the_bank() -> None:
    good = np.zeros((2, 5, 2))
    assert check_histogram("bank-7", good, (2, 5, 2), 10.0).shape == (2, 5, 2)
    bad = {
        "NaN": np.where(np.eye(5)[:2, :, None] > 0, np.nan, 0.0) * np.ones((2, 5, 2)),
        "infinite": np.full((2, 5, 2), np.inf),
        "shape": np.zeros((2, 6, 2)),
        "gradient": np.stack([np.full((2, 5), 11.0), np.zeros((2, 5))], axis=-1),
        "hessian": np.stack([np.zeros((2, 5)), np.full((2, 5), -1.0)], axis=-1),
    }
    for what, values in bad.items():
        with pytest.raises(HistogramRefused, match="bank-7") as refused:
            check_histogram("bank-7", values, (2, 5, 2), 10.0)
        assert refused.value.bank == "bank-7", what
    with pytest.raises(HistogramRefused, match="bins it was not asked for"):
        check_histogram("bank-7", np.zeros((3, 5, 2)), (2, 5, 2), 10.0)


def test_a_bank_with_a_nan_histogram_refuses_to_mask_and_is_named(monkeypatch) -> None:
    lay, _, _, row_bound, configs, banks, directory = _setup(4)
    shape = _root_request(banks, lay)
    others = sum(b.exact() for b in banks[1:])
    monkeypatch.setattr(banks[0], "level_histogram", lambda tree: np.full(shape, np.nan))
    outcome = secure_sum(configs[0], 1, banks, int(np.prod(shape)), directory)
    assert "bank-0" in outcome.refused and "NaN" in outcome.refused["bank-0"]
    assert "bank-0" not in outcome.survivors
    assert np.allclose(outcome.sums.reshape(shape) * row_bound, others, atol=1e-5)


def test_a_masked_vector_of_the_wrong_length_is_refused_naming_the_bank(monkeypatch) -> None:
    lay, _, _, _, configs, banks, directory = _setup(4)
    shape = _root_request(banks, lay)
    honest = banks[1].mask

    def longer(request):
        msg = honest(request)
        return MaskedInput(msg.round_id, msg.node_id, np.append(msg.masked, np.uint64(0)), msg.rejected)

    monkeypatch.setattr(banks[1], "mask", longer)
    outcome = secure_sum(configs[0], 1, banks, int(np.prod(shape)), directory)
    assert "wrong length" in outcome.refused["bank-1"]
    assert outcome.sums is not None and "bank-1" not in outcome.survivors


def test_below_the_threshold_nothing_is_released_or_charged(monkeypatch) -> None:
    lay, settings, plan, row_bound, configs, banks, directory = _setup(4, "distributed", trees=1)
    for bank in banks[1:]:
        monkeypatch.setattr(bank, "level_histogram", lambda tree: np.full((1, lay.total_bins, 2), np.inf))
        monkeypatch.setattr(bank, "leaf_totals", lambda tree: np.full((1, 2), np.nan))
    result = boost(banks, lay, settings, plan, row_bound, verifier=directory, configs=configs)
    assert [r["kind"] for r in result.releases] == ["level", "leaves"]  # the level aborts; the root-leaf try too
    for release in result.releases:
        assert release["aborted"] and "nothing was unmasked" in release["aborted"]
        assert set(release["refused"]) == {"bank-1", "bank-2", "bank-3"}
    assert result.spent == {b.name: [] for b in banks}  # nothing released, nothing charged
    assert result.model.trees == [] and not banks[0].margin.any()


def test_the_release_plan_spends_the_budget_and_no_more() -> None:
    plan = plan_releases(3.0, 1e-5, 20, 3, "prv")
    assert plan.releases == 80
    eps = epsilon_spent([plan.whole_job], 1e-5, "prv")
    assert 2.9 <= eps <= 3.0
    assert epsilon_spent([plan.per_release] * 80, 1e-5, "prv") == pytest.approx(eps, rel=1e-6)
    assert level_sensitivity(23) == pytest.approx(math.sqrt(23 * (1 + 1 / 16)))
    assert leaf_sensitivity() == pytest.approx(math.sqrt(1 + 1 / 16))


def test_distributed_noise_shares_give_at_least_the_planned_multiplier() -> None:
    """With D + C banks missing or colluding, every level and leaf release keeps multiplier >= plan."""
    for n_banks in (4, 10):
        lay, settings, plan, row_bound, configs, _, _ = _setup(n_banks, "distributed")
        graph = graph_parameters(n_banks, 0.3, 0.1, 40, 30, 30)
        missing = graph.dropped + graph.corrupt
        scale = configs[0].encoder(n_banks).scale
        for level in range(PARAMS.depth):
            dim = 2**level * lay.total_bins * 2
            z = central_noise_multiplier(configs[0].noise, scale, dim, missing)
            assert z >= plan.noise_multiplier * (1 - 1e-12)
        assert central_noise_multiplier(configs[1].noise, scale, 2 * 2**PARAMS.depth, missing) >= (
            plan.noise_multiplier * (1 - 1e-12)
        )
        assert configs[0].noise.l2_sensitivity == pytest.approx(level_sensitivity(4) / row_bound)
        assert configs[0].min_survivors == n_banks - graph.dropped


def test_every_release_is_in_each_banks_ledger_within_budget() -> None:
    lay, settings, plan, row_bound, configs, banks, directory = _setup(4, "distributed", trees=2)
    ledger = InMemoryLedger()
    for bank in banks:
        ledger.set_budget(bank.name, 3.0, 1e-5, accountant="prv")
        ledger.reserve(bank.name, "job-1", [plan.whole_job])
    result = boost(banks, lay, settings, plan, row_bound, verifier=directory, configs=configs)
    n_releases = len([r for r in result.releases if not r.get("aborted")])
    assert n_releases == len(result.releases) <= 2 * (PARAMS.depth + 1)
    # the trees grew with the noise-aware floor, from the noise every bank's share adds up to
    sd = configs[0].noise.noise_multiplier * level_sensitivity(len(lay.groups))
    assert split_noise_sd(settings, lay, 4, plan, configs) == pytest.approx(sd)
    assert result.params.min_child_hessian == pytest.approx(MIN_CHILD_NOISE_SDS * sd)
    assert result.params.min_child_hessian > PARAMS.min_child_hessian
    for bank in banks:
        assert result.spent[bank.name] == [plan.per_release] * n_releases
        status = ledger.commit(bank.name, "job-1", result.spent[bank.name])
        assert 0 < status.spent_epsilon <= 3.0
        with pytest.raises(BudgetExceeded):
            ledger.reserve(bank.name, "job-2", [plan.whole_job])
    assert len(result.model.trees) == 2


def test_feature_subsampling_releases_only_the_drawn_groups_at_the_lower_sensitivity() -> None:
    x, y = data.rows(N, seed=2)
    lay = data.layout()
    settings = BoostSettings(trees=3, params=PARAMS, dp_mode="distributed", secure=True, features_per_tree=2)
    plan = plan_releases(3.0, 1e-5, 3, PARAMS.depth, "prv")
    configs = secure_configs(settings, lay, 4, N // 4, plan)
    assert configs[0].noise.l2_sensitivity == pytest.approx(level_sensitivity(2) / (N // 4))
    banks, directory = data.banks(x, y, 4, lay, N // 4, configs)
    drawn = []
    original = Tree.grow

    def spy(tree, sums, layout, params):
        drawn.append((tree.features, sums.shape[1]))
        decisions = original(tree, sums, layout, params)
        assert all(d["group"] in tree.features for d in decisions if "group" in d)  # splits only on drawn groups
        return decisions

    Tree.grow = spy
    try:
        result = boost(banks, lay, settings, plan, N // 4, verifier=directory, configs=configs)
    finally:
        Tree.grow = original
    for features, width in drawn:
        assert len(features) == 2 and width == sum(lay.groups[j].n_bins for j in features)
    assert drawn and len({features for features, _ in drawn}) >= 1
    assert all(len(s) == len(result.releases) for s in result.spent.values())


def test_the_split_noise_is_what_the_banks_add_in_each_dp_mode() -> None:
    """Local: every bank adds z · sensitivity itself; off: no noise, so no floor."""
    lay, settings, plan, row_bound, _, _, _ = _setup(4, "distributed")
    sensitivity = level_sensitivity(len(lay.groups))
    local = replace(settings, dp_mode="local", secure=False)
    assert split_noise_sd(local, lay, 4, plan, None) == pytest.approx(2 * plan.noise_multiplier * sensitivity)
    assert split_noise_sd(replace(settings, dp_mode="off"), lay, 4, None, None) == 0.0
    with pytest.raises(ConfigError, match="noise"):
        split_noise_sd(settings, lay, 4, plan, None)


def test_local_noise_is_sized_to_each_release_kind() -> None:
    """In local DP a bank adds z · level sensitivity to a level histogram and z · leaf sensitivity to leaf totals."""
    x, y = data.rows(200, seed=3)
    lay = data.layout()
    plan = plan_releases(3.0, 1e-5, 2, PARAMS.depth, "prv")
    settings = BoostSettings(trees=2, params=PARAMS, dp_mode="local", secure=False)
    sigmas = local_sigmas(plan, settings, lay)
    z = plan.noise_multiplier
    assert sigmas == pytest.approx((z * level_sensitivity(len(lay.groups)), z * leaf_sensitivity()))
    assert local_sigmas(None, settings, lay) == (0.0, 0.0)
    (bank,), _ = data.banks(x, y, 1, lay, 200, local_sigma=sigmas)
    bank.start_tree()
    tree = Tree(PARAMS.depth)
    bank.request(LEVEL, tree)
    level = np.concatenate([(bank.release() - bank.exact()).ravel() for _ in range(20)])
    tree.close()
    bank.request(LEAVES, tree)
    leaves = np.concatenate([(bank.release() - bank.exact()).ravel() for _ in range(300)])
    assert np.std(level) == pytest.approx(sigmas[0], rel=0.1)
    assert np.std(leaves) == pytest.approx(sigmas[1], rel=0.1)  # not the level's (twice as large here)


def test_one_key_set_up_serves_several_trees_and_every_sum_is_exact(monkeypatch) -> None:
    """Sessions of 2 trees: 5 trees need 3 set-ups; each released sum equals the banks' exact histograms."""
    lay, _, _, row_bound, configs, banks, directory = _setup(5)
    settings = BoostSettings(trees=5, params=PARAMS, dp_mode="off", secure=True, trees_per_session=2)
    set_ups, checked = [], []
    original_init, original_sum = SecureSession.__init__, SecureSession.sum

    def counting_init(self, *args, **kwargs):
        set_ups.append(args[1])
        original_init(self, *args, **kwargs)

    def exact_sum(self, purpose, dim):
        truth = sum(b.exact().ravel() for b in banks)
        outcome = original_sum(self, purpose, dim)
        checked.append(np.abs(outcome.sums * row_bound - truth).max())
        return outcome

    monkeypatch.setattr(SecureSession, "__init__", counting_init)
    monkeypatch.setattr(SecureSession, "sum", exact_sum)
    result = boost(banks, lay, settings, None, row_bound, verifier=directory, configs=configs)
    assert set_ups == [1, 2, 3]
    assert [r["session"] for r in result.releases] == [1] * 6 + [2] * 6 + [3] * 3
    assert len(checked) == 15 and max(checked) < 1e-3
    assert len(result.model.trees) == 5


def test_a_bank_that_refuses_leaves_its_session_and_is_back_in_the_next(monkeypatch) -> None:
    lay, _, _, row_bound, configs, banks, directory = _setup(5)
    settings = BoostSettings(trees=2, params=PARAMS, dp_mode="off", secure=True, trees_per_session=1)
    calls = {"n": 0}
    original = banks[2].level_histogram

    def fails_once(tree):
        calls["n"] += 1
        return np.full_like(original(tree), np.nan) if calls["n"] == 1 else original(tree)

    monkeypatch.setattr(banks[2], "level_histogram", fails_once)
    result = boost(banks, lay, settings, None, row_bound, verifier=directory, configs=configs)
    first, *rest = result.releases
    assert set(first["refused"]) == {"bank-2"} and first["banks"] == 4
    assert [r["banks"] for r in rest[:2]] == [4, 4]  # out for the rest of its session (tree 1) ...
    assert [r["banks"] for r in rest[2:]] == [5, 5, 5]  # ... and back with fresh keys in the next


def test_in_a_session_the_host_sees_only_the_sum_and_cannot_read_one_banks_histogram(monkeypatch) -> None:
    """The attacker is the host, as above, but the banks answer in a multi-release session."""
    lay, _, _, row_bound, configs, banks, directory = _setup(4, bins=128)
    seen: list = []
    original = ReleaseServer.receive_masked_input

    def spy(self, sender, msg):
        seen.append((sender, msg.masked.copy()))
        return original(self, sender, msg)

    monkeypatch.setattr(ReleaseServer, "receive_masked_input", spy)
    session = SecureSession({LEVEL: configs[0], "leaves": configs[1]}, 1, banks, 2, directory)
    shape = _root_request(banks, lay)
    truth = {b.node_id: b.exact() for b in banks}
    outcome = session.sum(LEVEL, int(np.prod(shape)))
    assert np.allclose(outcome.sums.reshape(shape) * row_bound, sum(truth.values()), atol=1e-5)
    encoder = configs[0].encoder(len(banks))
    assert len(seen) == len(banks)
    for sender, masked in seen:
        decoded = masked[:-1].astype(np.float64) / encoder.scale - configs[0].clip
        true = truth[sender].ravel() / row_bound
        assert np.abs(decoded - true).mean() > 20 * np.abs(true).mean()
        assert abs(np.corrcoef(decoded, true)[0, 1]) < 0.2
        assert abs((masked.astype(np.float64) / encoder.modulus).mean() - 0.5) < 0.05
    with pytest.raises(ProtocolError, match="increasing order"):  # a replayed release index
        banks[0].session_mask(ReleaseRequest(1, 1, LEVEL, tuple(b.node_id for b in banks)))


def test_random_splits_release_only_the_leaves_and_plan_one_release_per_tree(monkeypatch) -> None:
    """Random splits: the host draws every split publicly and asks the banks for nothing but leaf totals, one
    release per tree, which is what the plan composes; the leaves' floor follows the leaf noise."""
    plan = plan_releases(3.0, 1e-5, 20, 3, "prv", random_splits=True)
    assert plan.releases == 20 and plan.whole_job.steps == 20
    assert plan.noise_multiplier < plan_releases(3.0, 1e-5, 20, 3, "prv").noise_multiplier  # 20 releases, not 80
    assert 2.9 <= epsilon_spent([plan.whole_job], 1e-5, "prv") <= 3.0

    x, y = data.rows(N, seed=3)
    lay = data.layout()
    settings = BoostSettings(trees=4, params=PARAMS, dp_mode="distributed", secure=True, random_splits=True)
    plan = plan_releases(3.0, 1e-5, 4, PARAMS.depth, "prv", random_splits=True)
    configs = secure_configs(settings, lay, 4, N // 4, plan)
    banks, directory = data.banks(x, y, 4, lay, N // 4, configs)
    asked: list[str] = []
    for bank in banks:
        original = bank.request
        monkeypatch.setattr(bank, "request", lambda kind, tree, _o=original: (asked.append(kind), _o(kind, tree)))
    result = boost(banks, lay, settings, plan, N // 4, verifier=directory, configs=configs)
    assert set(asked) == {LEAVES} and [r["kind"] for r in result.releases] == [LEAVES] * 4
    for bank in banks:
        assert result.spent[bank.name] == [plan.per_release] * 4
    sd = configs[1].noise.noise_multiplier * leaf_sensitivity()
    assert result.params.min_child_hessian == pytest.approx(max(MIN_CHILD_NOISE_SDS * sd, PARAMS.min_child_hessian))
    assert len(result.model.trees) == 4
    for tree in result.model.trees:  # full trees of depth 2: every split drawn, on any group
        assert len(tree.leaves()) == 2**PARAMS.depth
    with pytest.raises(ConfigError, match="disagree on random splits"):
        boost(banks, lay, replace(settings, random_splits=False), plan, N // 4, verifier=directory, configs=configs)
