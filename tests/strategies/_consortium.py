"""A simulated consortium for tests that drive `secagg_mod` with their own Contexts."""

from pathlib import Path

from fedsilo.peers.identity.round_keys import simulated_consortium, simulated_files


def identity_configs(directory: Path, nodes: list[int], suite: str = "standard") -> dict[int, dict[str, str]]:
    """Each node's identity files in its node config, as `fedsilo.peers.deployment.join` names them."""
    simulated_consortium(directory, len(nodes), suite=suite)
    return {n: simulated_files(directory, i).node_config() for i, n in enumerate(nodes)}
