"""Simulation data: the embedded synthetic consortium, users' own tables, and partitioners."""

from simulations.data.loader import load_table
from simulations.data.partition import Partitioner, parse_partitioner
from simulations.data.synthetic import BankProfile, consortium_profiles, generate_bank, generate_consortium

__all__ = ["BankProfile", "Partitioner", "consortium_profiles", "generate_bank", "generate_consortium",
           "load_table", "parse_partitioner"]
