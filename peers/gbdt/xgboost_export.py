"""A trained ensemble in XGBoost's JSON model format, readable by ``xgboost.Booster``.

The booster reads one feature per feature group of the model's bin layout: the group's
**bin index** (``GBDTModel.layout.bin_rows`` of the encoded rows, column ``j`` named
after group ``j``, type ``int``), not the raw columns. That is exact: a fedsilo split
"bin <= t goes left" is XGBoost's "x < t + 0.5 goes left", so the booster's margins
equal fedsilo's to float32 rounding (XGBoost stores leaves and thresholds as float32).
A raw-column booster could not be exact: a categorical split sends a category the
encoder never saw to the right, which no single threshold on a one-hot column does,
and the raw thresholds of a logged column hold only to rounding of the inverse log.

Mapping: fedsilo's heap-indexed nodes (children ``2i + 1``, ``2i + 2``) are renumbered
breadth first over the nodes that exist; a leaf's value is multiplied by the learning
rate (XGBoost stores the shrunk value); ``base_score`` is ``sigmoid(base_margin)``
(``binary:logistic``). Split statistics (``loss_changes``, ``sum_hessian``,
``base_weights``) are not released by the federation and are written as zeros: XGBoost
uses them only for its importance and SHAP "cover" figures, which the booster therefore
cannot report (``gain`` / ``cover`` importances are 0; ``weight`` counts are right).

Written in the schema of XGBoost 3 (tested against ``xgboost-cpu`` 3.2.0).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.strategies.gbdt.tree import LEAF, SPLIT, Tree

NO_PARENT = 2147483647  # XGBoost's parent id of a root
XGBOOST_SCHEMA = [3, 2, 0]


def feature_names(model: GBDTModel) -> list[str]:
    """The booster's input columns, in order: one per feature group (its bin index)."""
    return [group.name for group in model.layout.groups]


def booster_features(model: GBDTModel, encoded: np.ndarray) -> np.ndarray:
    """The booster's input matrix for rows encoded by the run's encoder: each group's bin (float32)."""
    return model.layout.bin_rows(np.asarray(encoded, dtype=np.float64)).astype(np.float32)


def _tree_json(tree: Tree, learning_rate: float, tree_id: int, n_features: int) -> dict[str, Any]:
    order: list[int] = [0]  # breadth first over the nodes that exist
    for node in order:
        if tree.state[node] == SPLIT:
            order.extend((2 * node + 1, 2 * node + 2))
    index = {node: i for i, node in enumerate(order)}
    n = len(order)
    left, right, parents = [-1] * n, [-1] * n, [NO_PARENT] * n
    conditions, split_indices = [0.0] * n, [0] * n
    for node, i in index.items():
        if tree.state[node] == SPLIT:
            left[i], right[i] = index[2 * node + 1], index[2 * node + 2]
            parents[left[i]] = parents[right[i]] = i
            split_indices[i] = int(tree.group[node])
            conditions[i] = float(tree.threshold[node]) + 0.5
        elif tree.state[node] == LEAF:
            conditions[i] = float(learning_rate * tree.value[node])
        else:
            raise ValueError(f"tree {tree_id} has an unfinished node {node}: only finished ensembles are exported")
    zeros = [0.0] * n
    return {
        "base_weights": zeros,
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": [0] * n,
        "id": tree_id,
        "left_children": left,
        "loss_changes": zeros,
        "parents": parents,
        "right_children": right,
        "split_conditions": conditions,
        "split_indices": split_indices,
        "split_type": [0] * n,
        "sum_hessian": zeros,
        "tree_param": {
            "num_deleted": "0",
            "num_feature": str(n_features),
            "num_nodes": str(n),
            "size_leaf_vector": "1",
        },
    }


def to_xgboost(model: GBDTModel) -> dict[str, Any]:
    """The ensemble as an XGBoost JSON model document (see the module docstring)."""
    names = feature_names(model)
    trees = [_tree_json(tree, model.learning_rate, i, len(names)) for i, tree in enumerate(model.trees)]
    base_score = 1.0 / (1.0 + math.exp(-model.base_margin))
    return {
        "learner": {
            "attributes": {"fedsilo_format": "bins of fedsilo.peers.gbdt layout groups (see feature_names)"},
            "feature_names": names,
            "feature_types": ["int"] * len(names),
            "gradient_booster": {
                "model": {
                    "cats": {"enc": [], "feature_segments": [], "sorted_idx": []},
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(len(trees))},
                    "iteration_indptr": list(range(len(trees) + 1)),
                    "tree_info": [0] * len(trees),
                    "trees": trees,
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": f"[{base_score:.9E}]",
                "boost_from_average": "0",
                "num_class": "0",
                "num_feature": str(len(names)),
                "num_target": "1",
            },
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": XGBOOST_SCHEMA,
    }


def write_xgboost(model: GBDTModel, path: str | Path) -> Path:
    """Write `to_xgboost(model)` as JSON to ``path`` (load it with ``xgboost.Booster(model_file=path)``)."""
    path = Path(path)
    path.write_text(json.dumps(to_xgboost(model), allow_nan=False) + "\n")
    return path
