"""Cryptography and differential privacy: pure library code (no Flower, no network)."""
