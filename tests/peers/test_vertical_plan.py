"""The split scheme's DP plan (peers/vertical/plan.py): what a ledger reserves is what the party then spends."""

import numpy as np
import pytest

from fedsilo.peers.vertical.plan import party_dp, planned_mechanisms, split_releases
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.vertical import HOLDER, PARTY, plan_parties, split_spec


def test_a_party_that_releases_every_training_row_as_planned_spends_exactly_its_reservation():
    releases = split_releases(3)
    assert (releases.holder, releases.party) == (6, 6) and (split_releases(3, frozen=True).party) == 1
    dp = party_dp(2.0, 1e-5, "prv", releases.party, 1.0)
    planned = planned_mechanisms(dp, releases.party)
    assert planned == [Mechanism(dp.noise_multiplier, 1.0, 6)]
    assert epsilon_spent(planned, 1e-5, "prv") == pytest.approx(2.0, abs=0.02)
    accountant = dp.row_accountant("bank", 10)
    for _ in range(6):
        accountant.charge(np.arange(8))  # two rows held out: never released in training
    assert accountant.mechanisms() == planned


def test_the_simulation_plans_with_the_peers_plan():
    config = SimulationConfig(setup="vertical", vertical_scheme="split", rounds=2, epsilon=3.0)
    releases, holder, party = plan_parties(config, split_spec(config))
    assert releases == {HOLDER: 4, PARTY: 4}
    assert holder == party_dp(3.0, config.delta, config.accountant, 4, config.max_grad_norm)
    assert party == party_dp(3.0, config.delta, config.accountant, 4, config.max_grad_norm, scoring=True)
    assert party.score_noise_multiplier is not None and party.score_noise_multiplier < party.noise_multiplier
