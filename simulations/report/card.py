"""The model card: what a model is, who trained it on what, and its privacy guarantee.

A card is JSON so that tools can read it. It states, per participating bank, the rows
used (counts and a fingerprint, never rows), the (ε, δ) that bank spent as computed by
its own accountant, and the exact software versions that produced the model, so that
a model file can be traced back to the run that made it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedsilo.peers.provenance import package_versions, sha256_file

CARD_SCHEMA = "fedsilo.model-card/1"


def build_card(
    *,
    run_name: str,
    job: dict[str, Any],
    data: dict[str, Any],
    participants: list[dict[str, Any]],
    privacy: dict[str, Any],
    metrics: dict[str, Any],
    model_file: Path,
    encoder_file: Path | None,
    rounds: int,
) -> dict[str, Any]:
    """Assemble the card; every argument is already JSON-ready."""
    return {
        "schema": CARD_SCHEMA,
        "run": run_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": "binary classification: probability of default (one logit per row)",
        "rounds": rounds,
        "job": job,
        "data": data,
        "participants": participants,
        "privacy": privacy,
        "metrics": metrics,
        "artifacts": {
            "model": {"file": model_file.name, "format": "safetensors", "sha256": sha256_file(model_file)},
            "encoder": (
                {"file": encoder_file.name, "format": "json", "sha256": sha256_file(encoder_file)}
                if encoder_file is not None
                else "each institution keeps its own encoder"
            ),
        },
        "software": package_versions(),
    }


def write_card(path: Path, card: dict[str, Any]) -> None:
    path.write_text(json.dumps(card, indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
