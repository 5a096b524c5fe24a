"""Simulation data: the embedded synthetic consortium, users' own tables, and partitioners."""

from fedsilo.simulations.data.loader import load_table
from fedsilo.simulations.data.partition import Partitioner, parse_partitioner
from fedsilo.simulations.data.synthetic import BankProfile, consortium_profiles, generate_bank, generate_consortium

__all__ = [
    "BankProfile",
    "Partitioner",
    "consortium_profiles",
    "generate_bank",
    "generate_consortium",
    "load_table",
    "parse_partitioner",
]
