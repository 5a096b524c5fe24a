"""The one version check of `fedsilo.peers.flower_compat`: exactly the supported Flower, or a loud failure with the fix."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedsilo.errors import FedsiloError
from fedsilo.peers.flower_compat.version import (
    FLOWER_VERSION,
    FlowerVersionError,
    check_flower_version,
    installed_flower,
)

ROOT = Path(__file__).resolve().parents[3]


def test_the_installed_flower_is_the_supported_one():
    assert installed_flower() == FLOWER_VERSION
    check_flower_version(installed_flower())


def test_pyproject_pins_the_supported_release():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"flwr[simulation]=={FLOWER_VERSION}" in dependencies


@pytest.mark.parametrize("installed", ["1.41.0", "1.42.1", "1.43.0", None])
def test_any_other_release_is_refused_with_both_versions_and_the_fix(installed):
    with pytest.raises(FlowerVersionError) as refused:
        check_flower_version(installed)
    message = str(refused.value)
    assert f"Flower {FLOWER_VERSION}" in message
    assert (f"Flower {installed} is installed" if installed else "no Flower is installed") in message
    assert f"python -m pip install 'flwr[simulation]=={FLOWER_VERSION}'" in message
    assert isinstance(refused.value, FedsiloError) and isinstance(refused.value, ImportError)


def test_importing_any_module_of_the_package_under_another_flower_fails(tmp_path):
    """A process whose `flwr` distribution reports another version cannot import the patches at all."""
    script = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda name: '1.43.0' if name == 'flwr' else real(name)\n"
        "import fedsilo.peers.flower_compat.supernode\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "FlowerVersionError" in result.stderr and "Flower 1.43.0 is installed" in result.stderr
