"""The `fedsilo score RUN_DIR --data FILE --out FILE` command (the work is in `fedsilo.simulations.scoring`).

The paths are checked before torch is imported, so a wrong path is refused at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsilo.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score new rows with a run's model (or a pulled model): one probability per row",
        description="Apply a finished model and its feature encoder to new rows. MODEL_DIR is a run folder "
        "(fedsilo simulate) or a pulled model folder (fedsilo model pull); the model and encoder are "
        "checked against the SHA-256 in its model card first. The rows must have the columns the "
        "model was trained on (the label column may be present and is ignored); a category not seen "
        "in training is encoded as in training (all zeros in its one-hot block) and counted.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", type=Path, help="a run folder or a pulled model folder")
    p.add_argument("--data", required=True, type=Path, metavar="FILE", help="CSV or Parquet file of rows to score")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help="where to write the scores (.csv or .parquet): the id column if any, then `score`",
    )
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
        help="pulled models: also check the card's signature against your consortium identity",
    )
    p.set_defaults(handler=run_score)


def run_score(args: argparse.Namespace) -> int:
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
