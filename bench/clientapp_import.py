"""How long a fresh ClientApp process takes to import what a boosting message needs.

A deployed ClientApp is a new process per message. `fedsilo.peers.client.app` and the
boosting handler (`fedsilo.peers.gbdt.client_app`) import neither torch nor Opacus since
issue 20's item 4; the baseline, in the same run, also imports what the module used to
import unconditionally (`local_training`, which brings Opacus, and `fedsilo.peers.models`,
which brings torch). Each figure is the median of `--repeats` fresh interpreters.

    python bench/clientapp_import.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

LIGHT = "import fedsilo.peers.client.app, fedsilo.peers.gbdt.client_app"
HEAVY = LIGHT + ", fedsilo.peers.client.local_training, fedsilo.peers.models"
TIMER = "import time; t = time.perf_counter(); {imports}; print(time.perf_counter() - t)"
CHECK = "import sys; {imports}; print(sorted(m for m in ('torch', 'opacus') if m in sys.modules))"


def seconds(imports: str) -> float:
    out = subprocess.run([sys.executable, "-c", TIMER.format(imports=imports)], capture_output=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loaded = subprocess.run([sys.executable, "-c", CHECK.format(imports=LIGHT)], capture_output=True, check=True)
    print(f"heavy modules a boosting message's imports load: {loaded.stdout.decode().strip()}")
    light, heavy = [], []
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
        light.append(seconds(LIGHT))
        heavy.append(seconds(HEAVY))
    lm, hm = statistics.median(light), statistics.median(heavy)
    print(f"boosting message's imports: {lm:.2f} s; with torch + Opacus (before): {hm:.2f} s; ratio {hm / lm:.2f}x")


if __name__ == "__main__":
    main()
