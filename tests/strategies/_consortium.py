"""A simulated consortium for tests that drive `secagg_mod` with their own Contexts."""

from pathlib import Path

from fedsilo.peers.identity.round_keys import bank_member, simulated_consortium


def identity_configs(directory: Path, nodes: list[int]) -> dict[int, dict[str, str]]:
    """Each node's identity files in its node config, as `fedsilo.peers.deployment.join` names them."""
    simulated_consortium(directory, len(nodes))
    return {
        n: {
            "identity-key": str(directory / f"{bank_member(i)}.key"),
            "identity-cert": str(directory / f"{bank_member(i)}.pem"),
            "ca-cert": str(directory / "ca.pem"),
            "manifest": str(directory / "manifest.json"),
        }
        for i, n in enumerate(nodes)
    }
