"""`fedsilo sweep CONFIG`: the grid is read and every point checked before anything runs."""

import pytest

from fedsilo.cli import main
from fedsilo.errors import ConfigError
from fedsilo.simulations.sweep import format_table, load_sweep, summarize, yardstick_keys


def _write(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_grid_is_the_product_of_the_axes_over_the_base_config(tmp_path):
    plan = load_sweep(
        _write(
            tmp_path,
            "[sweep]\nbanks = [50, 500]\nepsilon = [1, 3.0, 8.0]\ndropout = [0.0, 0.3]\n"
            'out = "sweeps"\n[simulation]\nrounds = 4\nsample = 0.1\n',
        )
    )
    assert len(plan.points) == 12 and plan.out == "sweeps" and plan.ray_address is None
    assert {(p.banks, p.epsilon, p.dropout) for p in plan.points} == {
        (b, e, d) for b in (50, 500) for e in (1.0, 3.0, 8.0) for d in (0.0, 0.3)
    }
    assert all(p.rounds == 4 and p.per_round == p.banks // 10 for p in plan.points)
    assert all(isinstance(p.epsilon, float) for p in plan.points)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[simulation]\nbanks = 5\n", r"needs a \[sweep\] table"),
        ("[sweep]\nbanks = [5]\ninstitutions = [3]\n", r"unknown key 'institutions' in \[sweep\]"),
        ("[sweep]\nbanks = 5\n", r"banks must be a non-empty list"),
        ("[sweep]\nepsilon = []\n", r"epsilon must be a non-empty list"),
        ('[sweep]\nout = "x"\n', r"lists no axis"),
        ("[sweep]\nepsilon = [3.0, -1.0]\n", r"sweep point \{'epsilon': -1.0\} is invalid: dp.epsilon must be > 0"),
        (
            "[sweep]\ndropout = [0.3, 1.2]\n",
            r"sweep point \{'dropout': 1.2\} is invalid: --dropout must be in \[0, 1\)",
        ),
        ('[sweep]\nsetup = ["diagonal"]\n', r"--setup 'diagonal' is unknown"),
        ('[sweep]\nbanks = [10, "many"]\n', r"\[simulation\] banks must be int"),
        ("[sweep]\nbanks = [10]\n[simulation]\nsample = 20\n", r"sample between 1 and the 10 banks"),
        ("[sweep]\nbanks = [10]\n[train]\nbatch = 3\n", r"unknown key 'batch' in \[train\]"),
        ("[sweep]\nbanks = [10]\nray-address = 6379\n", r"ray-address must be a string"),
    ],
)
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


def _run_row(seed, auc, central=None, local=0.65, epsilon=1.0, banks=50, lr=0.5):
    return {
        "setup": "horizontal",
        "banks": banks,
        "epsilon": epsilon,
        "dropout": 0.0,
        "final_auc": auc,
        "centralized_auc": central,
        "local_auc_mean": local,
        "epsilon_max": 0.99 + seed / 1000,
        "seconds": 41.0,
        "lr": lr,
        "rounds": 5,
        "partition": "iid",
        "model": "mlp",
        "seed": seed,
        "run_dir": f"runs/r{seed}",
    }


def test_table_has_one_line_per_grid_point_with_mean_and_std_over_seeds():
    rows = [_run_row(0, 0.71), _run_row(1, 0.73), _run_row(2, 0.75), _run_row(0, 0.80, epsilon=3.0)]
    points = summarize(rows)
    assert len(points) == 2
    first, second = points
    assert first["runs"] == 3 and first["seeds"] == [0, 1, 2]
    assert first["final_auc_mean"] == pytest.approx(0.73) and first["final_auc_std"] == pytest.approx(0.02)
    assert first["centralized_auc_mean"] is None and first["local_auc_mean_std"] == pytest.approx(0.0)
    assert first["epsilon_max"] == pytest.approx(0.992)
    assert second["runs"] == 1 and second["final_auc_std"] is None  # one seed: no standard deviation
    lines = format_table(points, ("epsilon",)).splitlines()
    assert len(lines) == 3 and "0.7300 ± 0.0200" in lines[1] and "n/a" in lines[1] and "0.992" in lines[1]
    assert "0.8000" in lines[2] and "±" not in lines[2].split("0.8000")[1].split()[0]


def test_seeds_and_repeats_multiply_every_grid_point(tmp_path):
    plan = load_sweep(_write(tmp_path, "[sweep]\nepsilon = [1.0, 3.0]\nseeds = [4, 9]\n"))
    assert [(p.epsilon, p.seed) for p in plan.points] == [(1.0, 4), (1.0, 9), (3.0, 4), (3.0, 9)]
    assert plan.axes == ("epsilon",) and plan.seeds == (4, 9)
    plan = load_sweep(_write(tmp_path, "[sweep]\nrepeats = 3\n[simulation]\nseed = 10\n"))
    assert [p.seed for p in plan.points] == [10, 11, 12] and plan.axes == ()


def test_learning_rate_rounds_partition_and_model_are_axes(tmp_path):
    plan = load_sweep(
        _write(
            tmp_path,
            '[sweep]\nlr = [0.1, 0.5]\nrounds = [2, 4]\npartition = ["iid", "dirichlet:0.5"]\n'
            'model = ["mlp", "logreg"]\n',
        )
    )
    assert len(plan.points) == 16 and plan.axes == ("lr", "rounds", "partition", "model")
    assert {(p.lr, p.rounds, p.partition, p.model) for p in plan.points} == {
        (lr, r, part, m)
        for lr in (0.1, 0.5)
        for r in (2, 4)
        for part in ("iid", "dirichlet:0.5")
        for m in ("mlp", "logreg")
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("[sweep]\nseeds = [0, 0]\n", r"seeds must be a non-empty list of distinct integers"),
        ("[sweep]\nseeds = 3\n", r"seeds must be a non-empty list"),
        ("[sweep]\nrepeats = 0\n", r"repeats must be a whole number ≥ 1"),
        ("[sweep]\nrepeats = 2\nseeds = [1, 2]\n", r"gives both seeds and repeats"),
        ('[sweep]\nmodel = ["mlp", "forest"]\n', r"sweep point \{'model': 'forest'\} is invalid: unknown model"),
    ],
)
def test_seed_and_axis_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(_write(tmp_path, text))


def test_yardsticks_are_shared_by_points_on_the_same_data_split(tmp_path):
    plan = load_sweep(_write(tmp_path, "[sweep]\nepsilon = [1.0, 3.0]\ndropout = [0.0, 0.2]\nseeds = [0, 1]\n"))
    keys = [yardstick_keys(p) for p in plan.points]
    centralized = {k["centralized"] for k in keys}
    local = {k["local"] for k in keys}
    assert len(centralized) == 2  # one per seed: ε and dropout do not change the data or the model
    assert len(local) == 4  # one per (ε, seed): local-only spends the same ε; dropout does not matter
    transfer = load_sweep(_write(tmp_path, '[sweep]\nseeds = [0, 1]\n[simulation]\nsetup = "transfer"\n'))
    assert yardstick_keys(transfer.points[0]) == {}


def test_the_plot_has_error_bars_and_starts_at_chance(tmp_path):
    rows = [_run_row(s, 0.70 + s / 100, central=0.76, epsilon=e) for e in (1.0, 3.0) for s in (0, 1)]
    from fedsilo.simulations.report import plots

    captured = {}
    real = plots.plt.close
    plots.plt.close = lambda fig: captured.setdefault("fig", fig)
    try:
        plots.plot_sweep(tmp_path / "u.png", summarize(rows), ("epsilon",))
    finally:
        plots.plt.close = real
    [ax] = captured["fig"].axes
    real(captured["fig"])
    assert ax.get_ylim() == (0.5, 1.0)  # 0.70 vs 0.71 must not fill the plot
    assert len(ax.containers) == 1 and ax.containers[0].has_yerr  # federated mean ± std
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == pytest.approx(0.76) for line in ax.lines)
    assert (tmp_path / "u.png").stat().st_size > 0


def test_a_missing_data_file_stops_the_sweep_before_any_cluster(tmp_path, capsys):
    path = _write(
        tmp_path,
        f'[sweep]\nseeds = [0, 1]\nout = "{tmp_path / "out"}"\n[data]\npath = "{tmp_path / "gone.csv"}"\nlabel = "y"\n',
    )
    assert main(["sweep", str(path)]) == 2
    assert f"data file {tmp_path / 'gone.csv'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
