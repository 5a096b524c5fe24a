"""The `fedsilo` command line: the one entry point of every fedsilo process a user starts.

    fedsilo simulate [flags]     N simulated banks train a shared model (see --help)
    fedsilo audit-privacy RUN    measure what a finished run's model leaks
    fedsilo sweep CONFIG         a grid of simulations on one Ray runtime: one table, one plot
    fedsilo score RUN --data F   score new rows with a run's (or a pulled) model
    fedsilo peer | consortium | job | model | list | psi | audit ...   the institution's peer daemon

Each command family registers its subparsers with `set_defaults(handler=...)`; `main`
calls the handler and turns the project's own errors into one line and exit status 2.
Building the parser imports no torch, Flower or Ray: each handler imports what it uses,
after the cheap input checks, so `fedsilo --help` and a refused input answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fedsilo import __version__
from fedsilo.errors import FedsiloError
from fedsilo.peers.cli import register as register_peer_commands
from fedsilo.process import set_process_defaults
from fedsilo.simulations import audit_privacy_cli, export_cli, score_cli, simulate_cli
from fedsilo.simulations.sweep import add_sweep_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsilo", description="Cross-silo federated learning for banks.")
    parser.add_argument("--version", action="version", version=f"fedsilo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One line per command family; each registers its parsers with a `handler`.
    simulate_cli.register(sub)
    audit_privacy_cli.register(sub)
    register_peer_commands(sub)
    add_sweep_parser(sub)
    score_cli.register(sub)
    export_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    set_process_defaults()
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except FedsiloError as error:
        print(f"fedsilo: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fedsilo psi ... | head`: the reader left early, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 1


if __name__ == "__main__":
    sys.exit(main())
