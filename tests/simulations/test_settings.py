"""Every `fedsilo simulate` setting is declared once, in `fedsilo.simulations.settings`.

The flags, the TOML keys, the settings a flag overrides, the `--help` text and the
README's configuration table all come from that one table; these tests check that a
row of it reaches each of them, that nothing of the command escaped it, and that the
defaults shown are the job's specs'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from fedsilo.cli import build_parser
from fedsilo.errors import ConfigError
from fedsilo.peers.job import DP_MODES, DPSpec, JobConfig, SecAggSpec, TrainSpec
from fedsilo.peers.model_spec import ModelSpec
from fedsilo.simulations import settings, simulate_cli
from fedsilo.simulations.config import (
    SETUPS,
    SIMULATION_MODELS,
    TOML_KEYS,
    SimulationConfig,
    build_config,
    config_values,
)
from fedsilo.simulations.settings import SETTINGS, Setting

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def simulate_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["simulate"]


def readme_block() -> str:
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"README.md needs one {BEGIN} ... {END} block"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_the_readme_holds_the_generated_table():
    assert readme_block() == settings.markdown_table(), (
        "README.md's configuration table is out of date: replace the block between the settings markers "
        "with the output of `python -m fedsilo.simulations.settings`"
    )


def test_every_flag_of_the_parser_is_in_the_readme_table():
    rows = readme_block().splitlines()[2:]
    flags = [s for a in simulate_parser()._actions for s in a.option_strings if s not in ("-h", "--help")]
    assert len(flags) >= 42
    missing = [f for f in flags if not any(row.startswith((f"| `{f} ", f"| `{f}`")) for row in rows)]
    assert not missing, f"flags missing from README.md's table: {missing}"
    assert len(rows) == len(SETTINGS)


def test_the_table_is_the_configuration_and_the_flags_of_before():
    """Every field of SimulationConfig is a row; every flag and TOML key of before still reads the same."""
    configured = [s.name for s in SETTINGS if s.configured]
    assert sorted(configured) == sorted(f.name for f in fields(SimulationConfig))
    assert len(configured) == len(set(configured)) >= 42
    assert TOML_KEYS == settings.toml_keys() and len(TOML_KEYS) == len(configured)
    keys_before = {  # section: "key" (its field: the key with _ for -) or "key:field"
        "simulation": "banks rounds seed out strategy compare dropout setup audit reproducible sample ray-address "
        "cpus-per-bank dropout-concentration yardstick-banks",
        "data": "path:data label id-column positive keep-columns partition customers overlap scenario",
        "model": "kind:model hidden shared freeze base:base_model",
        "train": "local-epochs batch-size lr test-fraction",
        "dp": "mode:dp_mode epsilon delta max-grad-norm accountant",
        "secagg": "mode:secure_aggregation clip:secagg_clip dropout-fraction:secagg_dropout_fraction "
        "collusion-fraction:secagg_collusion_fraction",
    }
    for section, keys in keys_before.items():
        for entry in keys.split():
            key, _, name = entry.partition(":")
            assert TOML_KEYS.get((section, key)) == (name or key.replace("-", "_")), f"[{section}] {key}"
    toml_only = {"test_fraction", "accountant", "secagg_clip", "secagg_dropout_fraction", "secagg_collusion_fraction"}
    assert set(simulate_cli.OVERRIDABLE) == set(configured) - toml_only
    before = (
        "--audit --banks --base-model --batch-size --compare --config --cpus-per-bank --customers --data --delta --dp "
        "--dropout --dropout-concentration --epsilon --freeze --hidden --id-column --json --keep-column --label "
        "--local-epochs --lr --max-grad-norm --mlflow --model --no-dp --out --overlap --partition --positive --quiet "
        "--ray-address --reproducible --rounds --sample --scenario --secure-aggregation --seed --setup --shared "
        "--strategy --yardstick-banks"
    ).split()
    flags = {s for a in simulate_parser()._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags >= set(before), f"flags that no longer exist: {set(before) - flags}"
    given = simulate_parser().parse_args([])
    assert all(getattr(given, name) is None for name in simulate_cli.OVERRIDABLE)  # a flag not given overrides nothing
    assert (given.json, given.quiet, given.no_dp, given.mlflow, given.config) == (False, False, False, None, None)


def test_a_new_row_becomes_a_flag_a_toml_key_an_override_and_a_documented_setting():
    warmup = Setting("warmup", toml="train.warm-up", flag="--warm-up", kind="int", metavar="W", help="rounds before DP")
    momentum = Setting("momentum", toml="train.momentum", kind="float", help="server momentum")
    table = (*SETTINGS, warmup, momentum)
    parser = argparse.ArgumentParser(formatter_class=settings.HelpFormatter)
    settings.add_arguments(parser, table)
    assert parser.parse_args(["--warm-up", "3"]).warmup == 3 and parser.parse_args([]).warmup is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--momentum", "0.9"])  # a TOML key only: no flag
    keys = settings.toml_keys(table)
    assert keys[("train", "warm-up")] == "warmup" and keys[("train", "momentum")] == "momentum"
    assert "warmup" in settings.overridable(table) and "momentum" not in settings.overridable(table)
    assert "[train] local-epochs, batch-size, lr, test-fraction, warm-up, momentum;" in settings.epilog(table)
    rows = settings.markdown_table(table).splitlines()
    assert "| `--warm-up W` | `[train] warm-up` | integer |  | rounds before DP |" in rows
    assert "|  | `[train] momentum` | number |  | server momentum |" in rows
    assert "--warm-up W rounds before DP" in " ".join(parser.format_help().split())


def test_an_unknown_toml_key_is_refused_naming_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as refused:
        config_values({"dp": {"epsilon": 1.0, "sigma": 2}}, "run.toml")
    assert str(refused.value) == (
        "run.toml: unknown key 'sigma' in [dp]; valid keys: mode, epsilon, delta, max-grad-norm, accountant"
    )
    with pytest.raises(ConfigError) as refused:
        config_values({"privacy": {"epsilon": 1.0}}, "run.toml")
    assert str(refused.value) == (
        "run.toml: unknown section [privacy]; valid sections: data, dp, model, secagg, simulation, train"
    )
    path = tmp_path / "run.toml"
    path.write_text('[simulation]\ncpus-per-bank = 0.5\n[data]\nkeep-columns = ["acct"]\npath = "x.csv"\nlabel = "y"\n')
    config = build_config(path)
    assert (config.cpus_per_bank, config.keep_columns, config.data) == (0.5, ("acct",), "x.csv")
    path.write_text("[secagg]\nclip = true\n")
    with pytest.raises(ConfigError, match=r"^\[secagg\] clip must be float, got True$"):
        build_config(path)


def spec_default(job_field: str):
    """The default of a job field ("train.lr") as the job's specs hold it."""
    if "." not in job_field:
        return next(f.default for f in fields(JobConfig) if f.name == job_field)
    spec, name = job_field.split(".")
    return getattr({"model": ModelSpec, "train": TrainSpec, "dp": DPSpec, "secagg": SecAggSpec}[spec](), name)


def test_the_defaults_are_the_job_specs():
    from_specs = [s for s in SETTINGS if s.job]
    assert len(from_specs) >= 19
    for setting in from_specs:
        assert getattr(SimulationConfig(), setting.name) == spec_default(setting.job), setting.name
    assert (TrainSpec().batch_size, DPSpec().epsilon, ModelSpec().hidden) == (128, 3.0, (64, 32))


def test_the_help_shows_the_specs_defaults_and_follows_them(monkeypatch):
    text = " ".join(simulate_parser().format_help().split())
    assert "--batch-size B expected Poisson batch size (default 128)" in text
    assert "--epsilon E ε each bank may spend on the whole job (default 3)" in text
    assert "--delta D δ of each bank's guarantee (default 1e-05)" in text
    assert "--hidden W,W MLP layer widths (default 64,32)" in text
    assert "--cpus-per-bank C Ray CPUs one virtual bank claims (default 1: one bank per core at a time)" in text
    assert "(default: all banks)" in text and "[secagg] mode, clip, dropout-fraction, collusion-fraction." in text
    for setting in SETTINGS:
        if setting.job and setting.flag and setting.kind != "bool":
            assert f"(default {settings._text(spec_default(setting.job))})" in text, setting.name
    # the help reads the defaults when it is shown: another default, another help
    monkeypatch.setattr(settings, "_defaults", lambda: replace(SimulationConfig(), batch_size=256, epsilon=0.5))
    text = " ".join(simulate_parser().format_help().split())
    assert "expected Poisson batch size (default 256)" in text and "on the whole job (default 0.5)" in text


def test_choices_and_notes_agree_with_what_checks_them():
    from fedsilo.privacy.accounting import ACCOUNTANTS
    from fedsilo.simulations.data.synthetic import CUSTOMERS_PER_BANK_FLOOR, SIMULATE_TOTAL_CUSTOMERS
    from fedsilo.strategies.factory import STRATEGIES

    by_name = settings.BY_NAME
    assert by_name["model"].choices == SIMULATION_MODELS and by_name["dp_mode"].choices == DP_MODES
    assert by_name["setup"].choices == SETUPS and by_name["strategy"].choices == STRATEGIES
    assert sorted(by_name["accountant"].choices) == sorted(ACCOUNTANTS)
    assert by_name["customers"].note.startswith(f"max({SIMULATE_TOTAL_CUSTOMERS}, {CUSTOMERS_PER_BANK_FLOOR} per bank)")


def test_a_row_that_cannot_work_is_refused():
    with pytest.raises(ValueError, match="kind 'integer'"):
        Setting("n", toml="train.n", kind="integer", help="a count")
    with pytest.raises(ValueError, match="TOML key 'privacy.n' is not in a section"):
        Setting("n", toml="privacy.n", flag="--n", kind="int", help="a count")
    with pytest.raises(ValueError, match="TOML key 'train' is not in a section"):
        Setting("n", toml="train", kind="int", help="a count")
    with pytest.raises(ValueError, match="group 'privacy' is not in a section"):
        Setting("n", flag="--n", group="privacy", kind="int", help="a count")
    with pytest.raises(ValueError, match="neither a TOML key nor a flag"):
        Setting("n", kind="int", help="a count")
    assert Setting("n", flag="--n", group="dp", kind="int", help="a count").section == "dp"


def test_the_help_imports_nothing_heavy():
    """Building the parser reads no default; showing the help reads them without torch, Flower or Ray."""
    code = (
        "import contextlib, io, json, sys\n"
        "from fedsilo.cli import build_parser\n"
        "parser = build_parser()\n"
        "built = sorted(m for m in ('numpy', 'torch', 'flwr', 'ray') if m in sys.modules)\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    parser.parse_args(['simulate', '--help'])\n"
        "shown = sorted(m for m in ('torch', 'opacus', 'scipy', 'flwr', 'ray') if m in sys.modules)\n"
        "print(json.dumps({'built': built, 'shown': shown, 'default': '(default 128)' in out.getvalue()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"built": [], "shown": [], "default": True}
