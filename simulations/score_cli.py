"""The `fedsilo score` command: local scoring (`fedsilo.simulations.scoring`) or a vertical job's, over the network.

* ``fedsilo score MODEL_DIR --data FILE --out FILE``: a run folder or a pulled model
  (horizontal and transfer models: their model is whole, so scoring is local).
* ``fedsilo score JOB --peer URL --ids FILE``: a vertical job's model stays with its
  label holder, and the feature party's part of each customer (her code) is asked over
  the network. URL is the label holder's daemon (the job's host); it runs a both-sides
  PSI of the named customers with the feature party, asks for the codes of that PSI's
  order (never a raw id), and applies its model (`fedsilo.peers.daemon.roles.vertical`).

The paths are checked before torch is imported, so a wrong path is refused at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsilo.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score new rows with a run's or a pulled model (local), or a vertical job's customers (--peer)",
        description="Apply a finished model and its feature encoder to new rows. MODEL_DIR is a run folder "
        "(fedsilo simulate) or a pulled model folder (fedsilo model pull); the model and encoder are "
        "checked against the SHA-256 in its model card first. The rows must have the columns the "
        "model was trained on (the label column may be present and is ignored); a category not seen "
        "in training is encoded as in training (all zeros in its one-hot block) and counted. "
        "Horizontal and transfer models are scored this way, locally: pull the model, then score. "
        "A VERTICAL job's model is split between its owners, so its customers are scored over the network: "
        "`fedsilo score JOB --peer URL --ids FILE`, URL the label holder's daemon (the job's host), FILE one "
        "customer id of its source per line. The label holder asks the feature party, through a both-sides PSI "
        "(no raw id crosses), for those customers' codes (coded scheme) or noised bottom-model outputs (split "
        "scheme); each customer's is released once and repeated after, counted against the label holder's "
        "quota there, and audited at both ends. A customer the feature party does not hold gets no score. "
        "Refused once the job is cancelled (its model withdrawn).",
    )
    p.add_argument(
        "model_dir",
        metavar="MODEL_DIR|JOB",
        type=Path,
        help="a run folder or a pulled model folder; with --peer, a vertical job's id",
    )
    p.add_argument("--data", type=Path, metavar="FILE", help="CSV or Parquet file of rows to score (local scoring)")
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="where to write the scores (.csv or .parquet): the id column if any, then `score` (local scoring; "
        "with --peer: optional, a CSV of id,score)",
    )
    p.add_argument(
        "--peer",
        metavar="URL",
        help="vertical jobs: the label holder's https://HOST:PORT (the job's host); scores the customers of --ids",
    )
    p.add_argument("--ids", type=Path, metavar="FILE", help="with --peer: one customer id per line")
    p.add_argument(
        "--id-column",
        metavar="COL",
        help="row id column of --data: kept out of the features, written next to each score "
        "(default: the run's own id column, when --data has it)",
    )
    p.add_argument(
        "--identity",
        type=Path,
        metavar="DIR",
        help="pulled models: also check the card's signature against your consortium identity; with --peer: "
        "your identity directory (default: identity)",
    )
    p.set_defaults(handler=run_score)


def run_score(args: argparse.Namespace) -> int:
    if args.peer is not None:
        return _score_remote(args)
    if args.data is None or args.out is None:
        raise ConfigError(
            "local scoring needs --data FILE and --out FILE (or --peer URL --ids FILE for a vertical job)"
        )
    if not (args.model_dir / "model_card.json").is_file():
        raise ConfigError(
            f"{args.model_dir} has no model_card.json: give a run folder (fedsilo simulate) or a "
            "pulled model folder (fedsilo model pull)"
        )
    if not args.data.is_file():
        raise DataError(f"data file {args.data} does not exist: check the path")
    if not args.out.name.lower().endswith((".csv", ".parquet")):
        raise ConfigError(f"--out {args.out}: give a .csv or .parquet file for the scores")
    if args.out.resolve() == args.data.resolve():
        raise ConfigError(f"--out {args.out} is the input file: write the scores to a new file")
    from fedsilo.simulations.api import load_run

    model = load_run(args.model_dir, identity=args.identity)
    result = model.score_file(args.data, args.out, id_column=args.id_column)
    print(
        f"scored {len(result.scores):,} rows with {args.model_dir} (model and encoder match their SHA-256 in "
        f"the card{', card signature verified' if args.identity else ''}): {args.out}"
    )
    for column, count in result.unseen.items():
        print(
            f"  {column}: {count:,} rows with a category not seen in training (encoded as in training: "
            "all zeros in its one-hot block)"
        )
    return 0


def _score_remote(args: argparse.Namespace) -> int:
    """A vertical job's customers, scored by its label holder's daemon (see the module docstring)."""
    if args.ids is None:
        raise ConfigError("--peer scores a vertical job's customers: give --ids FILE (one customer id per line)")
    if not args.ids.is_file():
        raise DataError(f"ids file {args.ids} does not exist: check the path")
    ids = [line.strip() for line in args.ids.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{args.ids} names no customer: one id per line")
    if args.out is not None and not args.out.name.lower().endswith(".csv"):
        raise ConfigError(f"--out {args.out}: with --peer, give a .csv file for the scores")
    import asyncio

    from fedsilo.peers.daemon.client import PeerClient
    from fedsilo.peers.identity.consortium import Identity

    identity = Identity.load(args.identity or Path("identity"))
    job = str(args.model_dir)

    async def ask() -> dict:
        async with PeerClient(identity, timeout=300) as client:
            return await client.call("POST", f"{args.peer.rstrip('/')}/v1/jobs/{job}/score", {"ids": ids})

    reply = asyncio.run(ask())
    scores = reply["scores"]
    shared = sum(v is not None for v in scores.values())
    released = "noised embeddings" if reply.get("scheme") == "split" else "codes"
    print(
        f"scored {shared:,} of {len(ids):,} customers with vertical job {job} at {args.peer} ({released} from "
        f"{reply['feature_party']}, asked through PSI; the others are not its customers: score them with a model "
        "over your own columns)"
    )
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write("id,score\n")
            handle.writelines(f"{i},{'' if v is None else v}\n" for i, v in scores.items())
        print(f"  scores written to {args.out}")
    else:
        for customer, value in scores.items():
            print(f"  {customer:<24} {'-' if value is None else f'{value:.4f}'}")
    return 0
