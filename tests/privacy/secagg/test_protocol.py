"""End-to-end rounds: exactness against the plaintext weighted average, dropouts, aborts."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import ClientStage, SecAggConfig, ServerStage, ThresholdNotMet, shamir

from ._harness import Harness, drop_count

# stage at which the dropped peers stop answering:
#   "share"  = dropped after advertising keys
#   "mask"   = dropped after sharing keys
#   "unmask" = dropped after sending the masked input
STAGES = ["share", "mask", "unmask"]


def _scenarios():
    for n in (5, 40):
        yield pytest.param(n, None, 0, id=f"n{n}-no-dropout")
        for stage in STAGES:
            for count in sorted({1, drop_count(n, 0.3)}):
                yield pytest.param(n, stage, count, id=f"n{n}-{count}-drop-at-{stage}")


@pytest.mark.parametrize(("n", "stage", "count"), list(_scenarios()))
def test_secure_average_matches_plaintext_within_bound(n, stage, count):
    h = Harness(n, dim=48, seed=n + count + len(stage or ""))
    if n == 40:
        assert not h.server.graph.params.complete  # the sparse SecAgg+ graph is exercised
    rng = np.random.default_rng(count)
    dropped = [int(v) for v in rng.choice(h.nodes, size=count, replace=False)] if stage else []
    result = h.run({stage: dropped} if stage else {})
    expected_survivors = set(h.nodes) - (set(dropped) if stage in ("share", "mask") else set())
    assert set(result.survivors) == expected_survivors
    if stage == "mask":
        assert set(result.dropped) == set(dropped)  # their mask keys were reconstructed
    h.check_exact(result)


def test_dropouts_spread_over_all_stages_sparse_graph():
    h = Harness(40, dim=48, seed=3)
    d = h.nodes
    result = h.run({"share": d[0:4], "mask": d[10:14], "unmask": d[20:24]})
    assert set(result.survivors) == set(d) - set(d[0:4]) - set(d[10:14])
    h.check_exact(result)


def test_bound_is_meaningful_at_low_precision():
    """With 8 bits the quantization error is visible, stays under the bound, and the bound is not vacuous."""
    cfg = SecAggConfig(clip=1.0, bits=8, max_weight=1000.0)
    h = Harness(5, dim=2000, config=cfg, seed=5)
    result = h.run()
    plain, total = h.plaintext(result.survivors)
    err = float(np.max(np.abs(result.average - plain)))
    bound = h.server.encoder.average_error_bound(5, total / cfg.max_weight)
    assert err <= bound
    assert err > bound / 20


def test_equal_weights_bound_is_three_quarters_of_a_step():
    cfg = SecAggConfig(clip=2.0, bits=16, max_weight=1.0)
    h = Harness(5, dim=500, config=cfg, seed=2)
    h.weights = {u: 1.0 for u in h.nodes}
    result = h.run()
    enc = h.server.encoder
    plain, _ = h.plaintext(result.survivors)
    assert np.max(np.abs(result.average - plain)) <= 3 / (4 * enc.scale) * (1 + 1e-6)


def _count_combines(monkeypatch):
    calls = []
    real = shamir.combine
    monkeypatch.setattr(shamir, "combine", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_abort_after_advertise_below_threshold(monkeypatch):
    calls = _count_combines(monkeypatch)
    h = Harness(5, seed=1)
    h.advertise()
    with pytest.raises(ThresholdNotMet, match="nothing was unmasked"):
        h.share(drop=h.nodes[:3])  # only 2 of 5 share keys, threshold 3
    assert h.server.stage is ServerStage.ABORTED
    assert calls == []
    with pytest.raises(ProtocolError):
        h.server.receive_masked_input(h.nodes[4], None)  # the round is over


def test_abort_after_masked_input_issues_no_unmask_request(monkeypatch):
    calls = _count_combines(monkeypatch)
    h = Harness(5, seed=1)
    h.advertise()
    h.share()
    with pytest.raises(ThresholdNotMet):
        h.mask(drop=h.nodes[:3])
    assert h.server.stage is ServerStage.ABORTED
    assert calls == [] and h.server.lagrange_cache == {}
    # no client was asked to reveal anything
    assert all(h.clients[u].stage is ClientStage.MASKED for u in h.nodes[3:])
    with pytest.raises(ProtocolError):
        h.server.aggregate()


def test_abort_at_aggregate_reconstructs_nothing(monkeypatch):
    calls = _count_combines(monkeypatch)
    h = Harness(5, seed=1)
    h.advertise()
    h.share()
    h.mask()
    with pytest.raises(ThresholdNotMet, match="nothing was unmasked"):
        h.unmask(drop=h.nodes[:3])  # 2 answers < threshold 3
    assert calls == [] and h.server.lagrange_cache == {}


def test_sparse_abort_when_a_neighbourhood_is_emptied():
    h = Harness(40, dim=8, seed=1)
    h.advertise()
    h.share()
    u = h.nodes[0]
    holders = sorted(h.server.graph.neighbours[u])
    t = h.server.threshold
    h.mask()
    # u survived, but too few of its holders answer the unmask request
    with pytest.raises(ThresholdNotMet, match=str(u)):
        h.unmask(drop=holders[: len(holders) + 1 - t + 1])


def test_lagrange_coefficients_computed_once_for_complete_graph(monkeypatch):
    calls = []
    real = shamir.lagrange_coefficients
    monkeypatch.setattr(shamir, "lagrange_coefficients", lambda xs: calls.append(tuple(xs)) or real(xs))
    h = Harness(6, seed=4)
    h.run({"mask": h.nodes[:1]})  # 5 survivors' seeds + 1 dropped mask key
    assert len(calls) == 1


def test_weight_stays_inside_the_masked_vector():
    h = Harness(5, dim=16, seed=9)
    result = h.run()
    _, total = h.plaintext(h.nodes)
    assert abs(result.total_weight - total) < 1e-3
    # every masked upload has d + 1 slots, the last being the (masked) weight
    assert h.server.dim + 1 == 17


def test_unauthenticated_round_is_exact_too():
    h = Harness(5, seed=2, authenticated=False)
    h.check_exact(h.run())


def test_client_refuses_out_of_order_and_old_rounds():
    h = Harness(5, seed=2)
    c = h.clients[h.nodes[0]]
    s = h.server.setup
    with pytest.raises(ProtocolError, match="current round"):
        c.share_keys(s.round_id, {})
    c.advertise_keys(s.round_id, s.participants, s.round_seed)
    with pytest.raises(ProtocolError, match="not newer"):
        c.advertise_keys(s.round_id, s.participants, s.round_seed)
    with pytest.raises(ProtocolError, match="stage"):
        c.unmask(s.round_id, list(h.nodes), [])
