"""Process-wide settings, applied once where a fedsilo process starts (never on import).

Flower reads `FLWR_TELEMETRY_ENABLED` when it is first imported and, unless it is "0",
sends usage events to flower.ai: institutions' job hosts and peers must not phone
home. `set_process_defaults` turns it off (and quiets Ray) unless the user set the
variable: `FLWR_TELEMETRY_ENABLED=1 fedsilo ...` opts back in. It is called by the
command line's `main`, by the Python API's `simulate`/`sweep`, and its values are copied
into the environment of every Flower process the peer daemon starts.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

PROCESS_DEFAULTS: dict[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # no GPUs needed: keep Ray quiet about it
}


def set_process_defaults(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set each of `PROCESS_DEFAULTS` in `environ` (default: this process's) unless already set."""
    target = os.environ if environ is None else environ
    for name, value in PROCESS_DEFAULTS.items():
        target.setdefault(name, value)
    return target
