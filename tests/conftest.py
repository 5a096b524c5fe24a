"""Suite-wide setup: the process defaults a fedsilo process starts with (no Flower telemetry)."""

from fedsilo.process import set_process_defaults

set_process_defaults()
