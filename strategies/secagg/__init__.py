"""Secure aggregation as a Flower Message-API strategy wrapper (server side).

The protocol itself is `fedsilo.privacy.secagg` (pure code); this package carries its stages
over Flower messages (`wire`) and runs them inside any strategy's round (`strategy`).
The peer side is `fedsilo.peers.client.mods.secagg`.
"""

from fedsilo.strategies.secagg.strategy import SecureAggregation
from fedsilo.strategies.secagg.wire import SECAGG_CONFIG_KEY

__all__ = ["SECAGG_CONFIG_KEY", "SecureAggregation"]
