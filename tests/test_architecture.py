"""The architecture as the folder tree shows it, enforced.

- One installed import name: the wheel holds `fedsilo/` (with the four layers inside) and
  nothing else at the top, so installing fedsilo cannot shadow the package index's
  `strategies` or `simulations`.
- Every project import names `fedsilo.<layer>`: a bare `import peers` would load a second
  copy of a module under another name (two ledgers, two registries).
- Imports flow one way, `simulations → peers → strategies → privacy`, lazy imports
  inside functions included; `fedsilo.errors` and `fedsilo.process` sit below every
  layer, `fedsilo.cli` above them all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("privacy", "strategies", "peers", "simulations")  # lowest first
BASE = {"fedsilo", "fedsilo.errors", "fedsilo.process"}  # importable from any layer


def _project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path` that names a project module, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in {"fedsilo", *LAYERS}]
    return found


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", [*LAYERS, "fedsilo", "tests", "bench"])
def test_every_project_import_names_fedsilo(folder):
    bare = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _sources(folder)
        for line, name in _project_imports(path)
        if name.split(".")[0] != "fedsilo"
    ]
    assert not bare, "import the layers as fedsilo.<layer>: " + "; ".join(bare)


@pytest.mark.parametrize("rank,layer", list(enumerate(LAYERS)))
def test_no_import_runs_up_a_layer(rank, layer):
    above = {f"fedsilo.{upper}" for upper in LAYERS[rank + 1 :]} | {"fedsilo.cli"}
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _sources(layer)
        for line, name in _project_imports(path)
        if any(name == top or name.startswith(top + ".") for top in above)
    ]
    assert not upward, f"{layer} must not import a layer above it: " + "; ".join(upward)


def test_the_base_modules_import_no_layer():
    for module in ("errors.py", "process.py"):
        imports = [name for _, name in _project_imports(ROOT / "fedsilo" / module)]
        assert set(imports) <= BASE, f"fedsilo/{module} imports {imports}"


def test_the_wheel_installs_exactly_one_top_level_name(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("fedsilo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"fedsilo"}
    for layer in LAYERS:  # every layer and each of its subpackages is inside
        for init in (ROOT / layer).rglob("__init__.py"):
            assert f"fedsilo/{init.relative_to(ROOT).as_posix()}" in names
    (top_level,) = [name for name in names if name.endswith("top_level.txt")] or [None]
    if top_level:
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read(top_level).decode().split() == ["fedsilo"]


def test_importing_a_layer_changes_no_environment_variable():
    code = (
        "import os; before = dict(os.environ)\n"
        "import fedsilo, fedsilo.privacy, fedsilo.strategies, fedsilo.peers, fedsilo.simulations, fedsilo.cli\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
    )
    env = {key: value for key, value in __import__("os").environ.items() if key != "FLWR_TELEMETRY_ENABLED"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT.parent)


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`fedsilo psi ... | head`: a closed stdout ends the command quietly, with no traceback."""
    import os

    code = (
        "import sys\n"
        "from fedsilo.simulations import simulate_cli\n"
        "simulate_cli.run_simulate = lambda args: print('x' * 100, file=sys.stdout, flush=True) or 0\n"
        "from fedsilo.cli import main\n"
        "sys.exit(main(['simulate']))\n"
    )
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    done = subprocess.run([sys.executable, "-c", code], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr
