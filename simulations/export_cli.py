"""The `fedsilo export` command: a verified gbdt model as an XGBoost JSON model (`fedsilo.peers.gbdt.xgboost_export`).

``fedsilo export MODEL_DIR --xgboost FILE [--data ROWS --features-out FILE]``: the model
and encoder are checked against the card's hashes first (`load_run`), as `fedsilo score`
does. The booster reads each feature group's bin, so ``--data`` writes the booster's
input table for those rows (the id column if any, then one integer column per group):
``xgboost.Booster(model_file=FILE).predict(xgboost.DMatrix(table))`` then gives the
scores `fedsilo score` gives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsilo.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a gradient-boosted model (--model gbdt) as an XGBoost JSON model",
        description="Export a run's or a pulled model's boosted trees in XGBoost's JSON model format, loadable "
        "by xgboost.Booster (XGBoost 3). The model and encoder are checked against the SHA-256 in the model card "
        "first. The booster's features are the bins of the model's feature groups (a fedsilo split 'bin <= t' "
        "is XGBoost's 'x < t + 0.5', so its scores equal fedsilo's to float32 rounding): --data writes that "
        "table for your rows. Neural models are already a standard file (model.safetensors).",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", type=Path, help="a run folder or a pulled model folder")
    p.add_argument("--xgboost", type=Path, metavar="FILE", required=True, help="where to write the XGBoost JSON")
    p.add_argument("--data", type=Path, metavar="ROWS", help="CSV or Parquet rows to turn into the booster's input")
    p.add_argument(
        "--features-out", type=Path, metavar="FILE", help="with --data: where to write the booster's input (.csv)"
    )
    p.add_argument("--id-column", metavar="COL", help="row id column of --data (default: the run's own)")
    p.add_argument(
        "--identity", type=Path, metavar="DIR", help="pulled models: also check the card's signature (identity dir)"
    )
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    if (args.data is None) != (args.features_out is None):
        raise ConfigError("--data and --features-out go together: the rows, and where to write their booster input")
    if args.data is not None and not args.data.is_file():
        raise DataError(f"data file {args.data} does not exist: check the path")
    if args.features_out is not None and not args.features_out.name.lower().endswith(".csv"):
        raise ConfigError(f"--features-out {args.features_out}: give a .csv file")
    if not args.xgboost.name.lower().endswith(".json"):
        raise ConfigError(f"--xgboost {args.xgboost}: give a .json file (XGBoost picks its format by the suffix)")
    if not (args.model_dir / "model_card.json").is_file():
        raise ConfigError(
            f"{args.model_dir} has no model_card.json: give a run folder (fedsilo simulate) or a "
            "pulled model folder (fedsilo model pull)"
        )
    import numpy as np
    import pandas as pd

    from fedsilo.peers.gbdt.model_file import GBDTModel
    from fedsilo.peers.gbdt.xgboost_export import booster_features, feature_names, write_xgboost
    from fedsilo.simulations.api import load_run

    model = load_run(args.model_dir, identity=args.identity)
    if not isinstance(model.model, GBDTModel):
        raise ConfigError(
            f"{args.model_dir} holds a neural model: only gradient-boosted trees (--model gbdt) export to XGBoost; "
            "its weights are already a standard file (model.safetensors)"
        )
    write_xgboost(model.model, args.xgboost)
    print(f"wrote {args.xgboost}: {len(model.model.trees)} trees over {len(feature_names(model.model))} feature groups")
    if args.data is not None:
        from fedsilo.peers.data.bank import read_table

        rows = read_table(args.data)
        rows.columns = [str(c) for c in rows.columns]
        id_column = args.id_column or (model.id_column if model.id_column in rows.columns else None)
        model.check_columns(rows, id_column)
        x = model.encoder.transform_features(rows).astype(np.float64)
        table = pd.DataFrame(booster_features(model.model, x).astype(np.int32), columns=feature_names(model.model))
        if id_column is not None:
            table.insert(0, id_column, rows[id_column].to_numpy())
        table.to_csv(args.features_out, index=False)
        print(f"wrote {args.features_out}: the booster's input for {len(table):,} rows")
    return 0
