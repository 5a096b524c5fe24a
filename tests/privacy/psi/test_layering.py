"""fedsilo.privacy.psi is pure library code: no Flower, aiohttp, torch or upper layers."""

from __future__ import annotations

import subprocess
import sys


def test_psi_imports_no_framework_or_upper_layer():
    code = (
        "import sys, fedsilo.privacy.psi\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'flwr', 'aiohttp', 'torch'} or m.split('.')[1:2] in (['strategies'], ['peers'], ['simulations'])]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
