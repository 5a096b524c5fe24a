"""Simulation config: defaults, TOML, flags, precedence."""

import pytest

from fedsilo.errors import ConfigError
from fedsilo.simulations.config import SimulationConfig, build_config


def test_defaults_need_no_file():
    config = build_config()
    assert config == SimulationConfig()
    assert config.data is None and config.label_column == "default" and config.dp_mode == "local"


def test_toml_then_flags(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text(
        '[simulation]\nbanks = 7\nrounds = 4\ncompare = ["centralized"]\n'
        '[data]\npath = "x.csv"\nlabel = "Y"\npartition = "dirichlet:0.3"\n'
        '[model]\nkind = "logreg"\nhidden = [8]\n[dp]\nepsilon = 2\ndelta = 1e-6\n'
    )
    config = build_config(path, {"rounds": 9, "banks": None})
    assert (config.banks, config.rounds, config.compare) == (7, 9, ("centralized",))
    assert (config.data, config.label, config.partition, config.model) == ("x.csv", "Y", "dirichlet:0.3", "logreg")
    assert config.epsilon == 2.0 and isinstance(config.epsilon, float) and config.delta == 1e-6
    job = config.job()
    assert job.dp.epsilon == 2.0 and job.peers == 7 and job.model.kind == "logreg"


def test_compare_flag_is_comma_separated():
    assert build_config(None, {"compare": "centralized"}).compare == ("centralized",)
    assert build_config(None, {"compare": "none"}).compare == ()


def test_overlap_is_a_transfer_probability(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text('[simulation]\nsetup = "transfer"\n\n[data]\noverlap = 0.25\n')
    assert build_config(path).overlap == 0.25
    assert build_config(None, {"setup": "transfer", "overlap": 0}).overlap == 0.0
    for overrides in ({"overlap": 0.2}, {"setup": "transfer", "overlap": 1.0}):
        with pytest.raises(ConfigError, match="apply to --setup transfer, as a probability in"):
            build_config(None, overrides)


def test_reproducible_noise_is_only_an_explicit_choice(tmp_path):
    from fedsilo.cli import build_parser
    from fedsilo.peers.job import JobConfig
    from fedsilo.simulations.report.privacy import guarantee, noise_statement

    default = build_config()
    assert not default.reproducible and not default.job().dp.reproducible
    assert noise_statement(default.job()).startswith("secret:") and "DP" in guarantee(default.job())
    path = tmp_path / "sim.toml"
    path.write_text("[simulation]\nreproducible = true\nseed = 5\n")
    research = build_config(path, {})
    job = research.job()
    assert job.dp.reproducible and JobConfig.from_run_config(job.to_run_config()).dp.reproducible
    assert guarantee(job).startswith("none:") and "public seed 5" in noise_statement(job)
    args = build_parser().parse_args(["simulate", "--reproducible"])
    assert build_config(None, {"reproducible": args.reproducible}).reproducible
    assert build_parser().parse_args(["simulate"]).reproducible is None  # no flag: the TOML or the default
    with pytest.raises(ConfigError, match="reproducible"):
        path.write_text('[simulation]\nreproducible = "yes"\n')
        build_config(path, {})


def test_positive_and_keep_columns_from_toml_and_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[data]\npath = "t.csv"\nlabel = "y"\npositive = 1\nkeep-columns = ["account_no"]\n')
    config = build_config(path)
    assert config.positive == "1" and config.keep_columns == ("account_no",)
    config = build_config(path, {"positive": "bad", "keep_columns": ["a", "b"]})
    assert config.positive == "bad" and config.keep_columns == ("a", "b")


def test_positive_and_keep_column_need_data():
    with pytest.raises(ConfigError, match="--positive and --keep-column apply to --data files only"):
        build_config(None, {"positive": "bad"})
    with pytest.raises(ConfigError, match="--keep-column apply to --data"):
        build_config(None, {"keep_columns": ["ID"]})
