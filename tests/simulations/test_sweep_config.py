"""`fedsilo sweep CONFIG`: the grid is read and every point checked before anything runs."""

import pytest

from privacy.errors import ConfigError
from simulations.cli import main
from simulations.sweep import format_table, load_sweep


def _write(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_grid_is_the_product_of_the_axes_over_the_base_config(tmp_path):
    plan = load_sweep(_write(tmp_path, '[sweep]\nbanks = [50, 500]\nepsilon = [1, 3.0, 8.0]\ndropout = [0.0, 0.3]\n'
                                       'out = "sweeps"\n[simulation]\nrounds = 4\nsample = 0.1\n'))
    assert len(plan.points) == 12 and plan.out == "sweeps" and plan.ray_address is None
    assert {(p.banks, p.epsilon, p.dropout) for p in plan.points} == {
        (b, e, d) for b in (50, 500) for e in (1.0, 3.0, 8.0) for d in (0.0, 0.3)}
    assert all(p.rounds == 4 and p.per_round == p.banks // 10 for p in plan.points)
    assert all(isinstance(p.epsilon, float) for p in plan.points)


@pytest.mark.parametrize("text, message", [
    ("[simulation]\nbanks = 5\n", r"needs a \[sweep\] table"),
    ("[sweep]\nbanks = [5]\ninstitutions = [3]\n", r"unknown key 'institutions' in \[sweep\]"),
    ("[sweep]\nbanks = 5\n", r"banks must be a non-empty list"),
    ("[sweep]\nepsilon = []\n", r"epsilon must be a non-empty list"),
    ("[sweep]\nout = \"x\"\n", r"lists no axis"),
    ("[sweep]\nepsilon = [3.0, -1.0]\n", r"sweep point \{'epsilon': -1.0\} is invalid: dp.epsilon must be > 0"),
    ("[sweep]\ndropout = [0.3, 1.2]\n", r"sweep point \{'dropout': 1.2\} is invalid: --dropout must be in \[0, 1\)"),
    ("[sweep]\nsetup = [\"vertical\"]\n", r"--setup 'vertical' is unknown"),
    ("[sweep]\nbanks = [10, \"many\"]\n", r"\[simulation\] banks must be int"),
    ("[sweep]\nbanks = [10]\n[simulation]\nsample = 20\n", r"sample between 1 and the 10 banks"),
    ("[sweep]\nbanks = [10]\n[train]\nbatch = 3\n", r"unknown key 'batch' in \[train\]"),
    ("[sweep]\nbanks = [10]\nray-address = 6379\n", r"ray-address must be a string"),
])
def test_config_errors_name_the_key_or_point(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(_write(tmp_path, text))


def test_cli_reports_a_bad_sweep_in_one_line_and_writes_nothing(tmp_path, capsys):
    path = _write(tmp_path, f'[sweep]\nepsilon = [0.0]\nout = "{tmp_path / "out"}"\n')
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dp.epsilon must be > 0" in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_sweep_file_is_refused(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_table_has_one_line_per_point():
    rows = [{"setup": "horizontal", "banks": 50, "epsilon": 1.0, "dropout": 0.0, "final_auc": 0.71,
             "centralized_auc": None, "local_auc_mean": 0.65, "epsilon_max": 0.998, "seconds": 41.0}]
    lines = format_table(rows).splitlines()
    assert len(lines) == 2 and "0.7100" in lines[1] and "n/a" in lines[1] and "0.998" in lines[1]
