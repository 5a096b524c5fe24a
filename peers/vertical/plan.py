"""The split scheme's DP plan: how often each party releases a training row, at what noise, and what it reserves.

Both the simulation (:mod:`fedsilo.simulations.vertical`) and a deployed split job
(:mod:`fedsilo.peers.daemon.roles.vertical_split`) plan with these functions, so the
mechanism a peer's ledger reserves at acceptance is the one its party then spends.

Every training row is released twice per epoch by each party (the feature party: its
embedding, and its bottom model's DP-SGD update; the label holder: the returned
gradient, and its own part's DP-SGD update), each a Gaussian mechanism at sample rate 1
(no amplification claimed: the label holder picks the batches and both sides see them);
the noise multiplier is calibrated so that those releases spend the party's ε. With
frozen bottoms the label holder releases only its updates (once per epoch) and the
feature party each row once. A held-out customer is released once by the feature party,
at scoring, at a noise multiplier calibrated for that one release.

A deployed feature party plans one release more per customer (`NETWORK_SCORING`): the
label holder may later score any customer over the network
(:meth:`fedsilo.peers.daemon.roles.vertical_split.VerticalSplit.score_embeddings`), and
the bank draws that customer's embedding once, at the training noise, and answers the
same stored release to every later request.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsilo.peers.vertical.parties import PartyDP
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.vertical import plan_noise

__all__ = ["NETWORK_SCORING", "SplitReleases", "party_dp", "planned_mechanisms", "split_releases"]

NETWORK_SCORING = 1  # a deployed feature party's releases per customer for scoring over the network


@dataclass(frozen=True)
class SplitReleases:
    """Releases per training row over the whole job: the label holder's and the feature party's."""

    holder: int
    party: int


def split_releases(epochs: int, frozen: bool = False) -> SplitReleases:
    """Each party's releases per training row in ``epochs`` epochs (the module docstring)."""
    return SplitReleases(epochs, 1) if frozen else SplitReleases(2 * epochs, 2 * epochs)


def party_dp(
    epsilon: float, delta: float, accountant: str, releases: int, update_clip: float, scoring: bool = False
) -> PartyDP:
    """One party's DP for ``releases`` per training row at (ε, δ); ``scoring``: a held-out row's one release
    gets its own noise multiplier (the feature party's)."""
    z = plan_noise(epsilon, delta, releases, accountant)
    once = plan_noise(epsilon, delta, 1, accountant) if scoring else None
    return PartyDP(z, epsilon, delta, accountant, 1.0, update_clip, once)


def planned_mechanisms(dp: PartyDP, releases: int) -> list[Mechanism]:
    """What a party's ledger reserves before anything is released: its worst row's Gaussian releases."""
    return [Mechanism(dp.noise_multiplier, 1.0, releases)]
