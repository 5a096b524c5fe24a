"""Public parameters of secure aggregation, shared by the server and every client."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedsilo.errors import ConfigError
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, SUITES, CryptoSuite, get_suite

from .graph import Graph, GraphParameters, build_graph, graph_parameters

# `encoding` and `noise` bring numpy: loaded when a configuration is built, not when a job's
# settings module (and the command line's help) imports this class.
if TYPE_CHECKING:
    from .encoding import FixedPointEncoder
    from .noise import DistributedNoise

__all__ = ["SecAggConfig"]


@functools.cache
def _suite(name: str) -> CryptoSuite:
    return get_suite(name)


@dataclass(frozen=True)
class SecAggConfig:
    """Everything both sides must agree on; every field has a usable default.

    * ``clip``, ``bits``: encoding range [-clip, clip] and precision (see encoding.py).
    * ``max_weight``: public upper bound on a peer's weight (e.g. its sample count);
      weights are sent as ``w / max_weight`` in [0, 1] (pick it close to the real
      maximum, the error bound scales with ``max_weight / sum w``).
    * ``dropout_fraction``, ``collusion_fraction``, ``security_bits``, ``correctness_bits``,
      ``complete_graph_max``: targets from which the graph degree and the threshold are
      derived (see graph.py).
    * ``min_survivors``: refuse to release a sum of fewer inputs (default: the threshold).
    * ``session_id``: the job id, bound into every key derivation and signature.
    * ``noise``: the distributed-DP option (see noise.py), off by default.
    * ``suite``: the consortium's crypto suite (``standard`` or ``gm``), whose key agreement,
      KDF, AEAD, hash and keystream every key, share, commitment and mask of the round uses
      (see keys.py); peers of different suites cannot complete a round together.
    """

    clip: float = 1.0
    bits: int = 24
    max_weight: float = 1.0
    dropout_fraction: float = 0.3
    collusion_fraction: float = 0.1
    security_bits: int = 40
    correctness_bits: int = 30
    complete_graph_max: int = 30
    min_survivors: int | None = None
    session_id: bytes = b""
    noise: DistributedNoise | None = None
    suite: str = DEFAULT_SUITE

    def __post_init__(self) -> None:
        from .encoding import FixedPointEncoder
        from .noise import DistributedNoise

        FixedPointEncoder(self.clip, self.bits, 1)  # validates clip and bits
        if not (isinstance(self.max_weight, (int, float)) and math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigError(f"secagg max_weight must be a finite number > 0, got {self.max_weight!r}")
        if self.min_survivors is not None and (not isinstance(self.min_survivors, int) or self.min_survivors < 1):
            raise ConfigError(f"secagg min_survivors must be a positive integer, got {self.min_survivors!r}")
        if not isinstance(self.session_id, bytes) or len(self.session_id) > 0xFFFF:
            raise ConfigError("secagg session_id must be bytes (at most 65535)")
        if self.noise is not None and not isinstance(self.noise, DistributedNoise):
            raise ConfigError("secagg noise must be a DistributedNoise or None")
        if self.suite not in SUITES:
            raise ConfigError(f"secagg suite must be one of {', '.join(SUITES)}, got {self.suite!r}")

    @property
    def crypto(self) -> CryptoSuite:
        """The crypto suite named by ``suite`` (CryptoSuiteError if the gm suite's library is missing)."""
        return _suite(self.suite)

    def graph(self, participants: Iterable[int], round_seed: bytes) -> Graph:
        return build_graph(
            participants,
            round_seed,
            self.dropout_fraction,
            self.collusion_fraction,
            security_bits=self.security_bits,
            correctness_bits=self.correctness_bits,
            complete_graph_max=self.complete_graph_max,
        )

    def encoder(self, n_peers: int) -> FixedPointEncoder:
        """The round's encoder; with noise, headroom for the noise of ``n_peers`` peers."""
        from .encoding import FixedPointEncoder
        from .noise import sum_headroom

        headroom = 0
        if self.noise is not None:
            base = FixedPointEncoder(self.clip, self.bits, n_peers)
            headroom = sum_headroom(self.noise.peer_sigma(base.scale), n_peers, self.correctness_bits)
        return FixedPointEncoder(self.clip, self.bits, n_peers, headroom)

    def required_survivors(self, graph: Graph) -> int:
        """Fewest inputs a released sum may contain: ``max(min_survivors, threshold)``."""
        return max(self.min_survivors or 0, graph.threshold)

    def graph_parameters_for(self, n_peers: int) -> GraphParameters:
        """The round graph's degree, threshold and tolerated dropouts and colluders for ``n_peers`` peers."""
        return graph_parameters(
            n_peers,
            self.dropout_fraction,
            self.collusion_fraction,
            self.security_bits,
            self.correctness_bits,
            self.complete_graph_max,
        )

    def max_missing(self, n_peers: int) -> int:
        """Tolerated dropouts plus colluders, ``D + C``, for the noise accounting."""
        p = self.graph_parameters_for(n_peers)
        return p.dropped + p.corrupt
