"""The Python API example of docs/simulation.md, executed as a user would run it (a real simulation, then scoring)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _loans import write_loans

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "simulation.md"


def readme_example() -> str:
    """The python block of docs/simulation.md, section "Scoring new rows, and the Python API"."""
    section = DOC.read_text().split("## Scoring new rows, and the Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_is_the_documented_api():
    code = readme_example()
    assert "fedsilo.simulate(" in code and "fedsilo.load_run(" in code and ".score(" in code


@pytest.mark.slow
def test_the_readme_example_runs_and_scores_five_rows(tmp_path):
    write_loans(tmp_path / "loans.csv")
    (tmp_path / "example.py").write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    final_auc, epsilon = lines[0].split(" ", 1)
    assert 0.5 < float(final_auc) <= 1.0 and "'bank-00000'" in epsilon
    assert lines[1].startswith("RoundMetrics(round=2,") and lines[1].endswith("model.safetensors")
    scores = [float(line.split()[1]) for line in lines[2:7]]
    assert len(scores) == 5 and all(0 < s < 1 for s in scores) and lines[-1].startswith("Name: score")
    [run] = list((tmp_path / "runs").iterdir())
    assert (run / "model_card.json").is_file()


def test_import_fedsilo_and_the_cli_parser_load_no_torch_flower_or_ray():
    code = (
        "import sys, fedsilo; from fedsilo.cli import build_parser; build_parser(); fedsilo.simulate; "
        "fedsilo.load_run; fedsilo.SimulationResult; "
        "print(sorted(m for m in ('torch', 'flwr', 'ray', 'opacus', 'pandas', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_api_refuses_unknown_settings_and_missing_files_before_any_run(tmp_path):
    import fedsilo
    from fedsilo.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="unknown setting\\(s\\) bankz"):
        fedsilo.simulate(bankz=3, out=str(tmp_path / "runs"))
    with pytest.raises(DataError, match="does not exist"):
        fedsilo.simulate(data=str(tmp_path / "gone.csv"), label="y", out=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
