"""Refusing a bad setting imports no torch, Opacus, scipy, Flower or Ray, so the CLI answers at once.

Each case runs in a fresh interpreter (this checkout on PYTHONPATH), checks that the
setting really was refused, then lists which heavy packages got imported on the way.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "opacus", "scipy", "flwr", "ray")


def refuse_in_fresh_process(body: str, cwd: Path) -> dict:
    """Run `body` (which sets `refused`) in a new interpreter; its verdict and heavy imports."""
    code = "\n".join(
        [
            "import json, sys",
            body,
            f"print(json.dumps({{'refused': refused, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli(args: list[str]) -> str:
    return f"from fedsilo.cli import main\nrefused = main({args!r}) == 2"


def raises(statement: str, imports: str) -> str:
    return "\n".join(
        [
            imports,
            "from fedsilo.errors import ConfigError",
            "try:",
            f"    {statement}",
            "    refused = False",
            "except ConfigError:",
            "    refused = True",
        ]
    )


@pytest.mark.parametrize(
    "body",
    [
        cli(["simulate", "--epsilon", "-1"]),
        cli(["simulate", "--rounds", "0"]),
        cli(["simulate", "--delta", "2"]),
        cli(["simulate", "--config", "accountant.toml"]),
        raises("build_config(None, {'epsilon': -1})", "from fedsilo.simulations.config import build_config"),
        raises("JobConfig.from_run_config({'dp.accountant': 'foo'})", "from fedsilo.peers.job import JobConfig"),
        raises("DPSpec(delta=2.0)", "from fedsilo.peers.job import DPSpec"),
        raises("ModelSpec(kind='forest')", "from fedsilo.peers.model_spec import ModelSpec"),
    ],
    ids=[
        "cli-epsilon",
        "cli-rounds",
        "cli-delta",
        "cli-accountant",
        "build_config",
        "JobConfig",
        "DPSpec",
        "ModelSpec",
    ],
)
def test_a_refused_setting_imports_nothing_heavy(body, tmp_path):
    (tmp_path / "accountant.toml").write_text('[dp]\naccountant = "foo"\n')
    outcome = refuse_in_fresh_process(body, tmp_path)
    assert outcome == {"refused": True, "heavy": []}


def test_moved_names_are_still_importable_where_they_were():
    from fedsilo.peers import model_spec, models
    from fedsilo.privacy import dpsgd, sampling
    from fedsilo.privacy.accounting import ACCOUNTANTS

    assert models.ModelSpec is model_spec.ModelSpec and models.MODEL_KINDS == ("mlp", "logreg")
    assert dpsgd.steps_per_epoch is sampling.steps_per_epoch and dpsgd.steps_per_epoch(0.03) == 34
    assert dpsgd.expected_batch_size is sampling.expected_batch_size and dpsgd.expected_batch_size(0.01, 250) == 2
    assert sorted(ACCOUNTANTS) == ["prv", "rdp"]


def test_simulate_help_imports_no_numpy_nor_cryptography(tmp_path):
    """The help shows the job specs' defaults: reading them must not load numpy, scipy or `cryptography`."""
    code = "\n".join(
        [
            "import contextlib, io, json, sys",
            "import fedsilo.peers.job",
            "from fedsilo.cli import main",
            "out = io.StringIO()",
            "with contextlib.redirect_stdout(out):",
            "    try:",
            "        main(['simulate', '--help'])",
            "    except SystemExit as stop:",
            "        status = stop.code",
            "loaded = [m for m in ('numpy', 'scipy', 'cryptography', 'torch', 'opacus') if m in sys.modules]",
            "print(json.dumps({'status': status, 'help': out.getvalue(), 'loaded': loaded}))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 0 and "--epsilon" in outcome["help"]
    assert outcome["loaded"] == []


@pytest.mark.parametrize("package", ["fedsilo.privacy.accounting", "fedsilo.privacy.secagg"])
def test_lazy_packages_still_export_every_public_name(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        home = getattr(value, "__module__", package + ".constants")  # ACCOUNTANTS is a plain constant
        assert home.startswith(package + "."), (name, home)
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018
