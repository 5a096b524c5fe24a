"""The institution: local DP training (ClientApp), the job host (ServerApp), the peer daemon.

Importing it turns Flower's telemetry off, as `strategies` does (see there).
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
