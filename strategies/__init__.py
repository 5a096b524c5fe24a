"""Server-side aggregation, as Flower Message-API strategies.

Importing fedsilo turns Flower's telemetry off (it would send usage events to
flower.ai): institutions' job hosts and peers must not phone home. Set
FLWR_TELEMETRY_ENABLED=1 yourself before starting to opt back in.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
