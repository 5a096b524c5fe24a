"""Every setting of `fedsilo simulate`, declared once.

`SETTINGS` is the one table: each `Setting` names a `SimulationConfig` field (the
`fedsilo.simulate()` keyword), its TOML section and key, its flag, its value kind and
its help. From it come:

- the flags of `fedsilo simulate`, one argument group per TOML section (`add_arguments`);
- the TOML key mapping the config loader reads and its unknown-key errors (`toml_keys`);
- the settings a flag overrides (`overridable`), the `--help` epilog (`epilog`);
- the configuration table of the documentation (`markdown_table`; `python -m
  fedsilo.simulations.settings` prints it).

Defaults are not in the table: `--help` and the documentation show `SimulationConfig`'s,
which for every setting with a `job` field are the job's specs' (`TrainSpec`, `DPSpec`,
`SecAggSpec`, `ModelSpec`). `note` only says what a default means (what `None` stands
for). A few settings are flags of the command only (`--config`, `--json`, ...): their
`key` is None and they are no configuration field.

This module imports nothing but the standard library at import time, so building the
parser stays light; the defaults are read (importing the job's specs) only when the help
or the table is formatted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

# value kind -> how the documentation names it
KINDS = {
    "int": "integer",
    "float": "number",
    "bool": "true/false",
    "str": "text",  # always set: its default is text
    "text": "text",  # a string or None (a path, a column name, ...)
    "names": "list of text",  # TOML list; flag: comma-separated, or repeated when `repeatable`
    "widths": "list of integers",  # TOML list; flag: comma-separated
    "sample": "count or fraction",  # a whole number of banks, or a fraction of them in (0, 1]
    "label": "text or number",  # one label value
}
RUN = "run"  # the section of the command's own flags: no TOML key
# TOML section -> what its settings are about (the --help group titles), in --help order
SECTIONS = {
    "simulation": "the consortium and the run",
    "data": "the rows and how the banks get them",
    "model": "what is trained",
    "train": "local training",
    "dp": "differential privacy",
    "secagg": "secure aggregation",
}


@dataclass(frozen=True)
class Setting:
    """One setting: where it is read from (TOML key, flag), what it holds, what it means.

    `name` is the `SimulationConfig` field and the argparse destination (for a command
    flag, only the latter). `key` None: a flag of the command only; `flag` None: a TOML
    key only. `job` names the job field the setting fills (`"train.lr"`): its default is
    that spec's. `note` says what the default means ("all banks"); `repeatable` flags are
    given once per value; a flag with a `const` may be given without its value.
    """

    name: str
    section: str
    key: str | None
    flag: str | None
    kind: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    note: str = ""
    job: str = ""
    repeatable: bool = False
    const: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.section not in (*SECTIONS, RUN) or (self.section == RUN and self.key is not None):
            raise ValueError(f"setting {self.name}: section {self.section!r} does not fit key {self.key!r}")
        if self.key is None and self.flag is None:
            raise ValueError(f"setting {self.name} has neither a TOML key nor a flag")

    @property
    def configured(self) -> bool:
        """A `SimulationConfig` field (it has a TOML key), not a flag of the command only."""
        return self.key is not None


SETTINGS: tuple[Setting, ...] = (
    # the command's own flags (no TOML key)
    Setting(
        "config",
        RUN,
        None,
        "--config",
        "text",
        "TOML file of settings, by their TOML keys; flags override it",
        metavar="FILE",
    ),
    Setting("json", RUN, None, "--json", "bool", "print a JSON summary as the last line of stdout"),
    Setting(
        "mlflow",
        RUN,
        None,
        "--mlflow",
        "text",
        "log the run to MLflow: parameters, per-round metrics and ε, artefacts (needs pip install 'fedsilo[mlflow]')",
        metavar="URI",
        const="",
        note="no logging; --mlflow alone: ./mlruns, no server",
    ),
    Setting("quiet", RUN, None, "--quiet", "bool", "no progress display"),
    # [simulation]
    Setting("banks", "simulation", "banks", "--banks", "int", "number of banks", metavar="N"),
    Setting("rounds", "simulation", "rounds", "--rounds", "int", "federated rounds", metavar="R", job="train.rounds"),
    Setting(
        "sample",
        "simulation",
        "sample",
        "--sample",
        "sample",
        "banks sampled per round: a count (100) or a fraction in (0, 1] (0.1)",
        metavar="K|F",
        note="all banks",
    ),
    Setting(
        "strategy",
        "simulation",
        "strategy",
        "--strategy",
        "str",
        "aggregation",
        choices=("fedavg", "fedadam"),
        job="strategy",
    ),
    Setting(
        "setup",
        "simulation",
        "setup",
        "--setup",
        "str",
        "horizontal: same columns everywhere; transfer: each institution its own columns",
        choices=("horizontal", "transfer"),
    ),
    Setting(
        "compare",
        "simulation",
        "compare",
        "--compare",
        "names",
        "yardsticks trained in the same run: centralized, local (each bank alone), common (transfer: a "
        "horizontal run on the columns all institutions share), or none",
        metavar="LIST",
        note="centralized,local; with --setup transfer local,common",
    ),
    Setting(
        "seed",
        "simulation",
        "seed",
        "--seed",
        "int",
        "seed of data, partitions, splits and initial models; DP noise and sampling are secret (OS CSPRNG) "
        "unless --reproducible",
        metavar="S",
        job="train.seed",
    ),
    Setting(
        "reproducible",
        "simulation",
        "reproducible",
        "--reproducible",
        "bool",
        "research mode: DP noise and sampling seeded by --seed too, so the run replays exactly; its noise "
        "can then be replayed by anyone with the seed and its ε is NOT a privacy guarantee",
        job="dp.reproducible",
    ),
    Setting("out", "simulation", "out", "--out", "str", "where run folders are created", metavar="DIR"),
    Setting(
        "audit",
        "simulation",
        "audit",
        "--audit",
        "bool",
        "after the run, measure its privacy leakage as `fedsilo audit-privacy RUN_DIR` does (horizontal setup)",
    ),
    Setting(
        "dropout",
        "simulation",
        "dropout",
        "--dropout",
        "float",
        "share of banks that vanish at a random stage of each round",
        metavar="F",
    ),
    Setting(
        "dropout_concentration",
        "simulation",
        "dropout-concentration",
        "--dropout-concentration",
        "float",
        "spread of the banks' own dropout probabilities, Beta(K·F, K·(1−F)) around --dropout F",
        metavar="K",
        note="every bank drops with probability F",
    ),
    Setting(
        "yardstick_banks",
        "simulation",
        "yardstick-banks",
        "--yardstick-banks",
        "int",
        "banks whose held-out rows score the model and train the yardsticks (all banks when fewer); "
        "local-only runs on the first 20 of them",
        metavar="N",
    ),
    Setting(
        "ray_address",
        "simulation",
        "ray-address",
        "--ray-address",
        "text",
        "run on an existing Ray cluster (its head's address, or 'auto')",
        metavar="HOST:PORT",
        note="a private Ray runtime on this machine's cores",
    ),
    Setting(
        "cpus_per_bank",
        "simulation",
        "cpus-per-bank",
        "--cpus-per-bank",
        "float",
        "Ray CPUs one virtual bank claims",
        metavar="C",
        note="one bank per core at a time",
    ),
    # [data]
    Setting(
        "data",
        "data",
        "path",
        "--data",
        "text",
        "your CSV or Parquet file",
        metavar="PATH",
        note="the embedded synthetic generator",
    ),
    Setting("label", "data", "label", "--label", "text", "target column of --data (two values)", metavar="COL"),
    Setting(
        "positive",
        "data",
        "positive",
        "--positive",
        "label",
        "the label value that means the event to predict, e.g. bad (needed for text labels)",
        metavar="VALUE",
    ),
    Setting(
        "id_column",
        "data",
        "id-column",
        "--id-column",
        "text",
        "row id column of --data, kept out of the features",
        metavar="COL",
    ),
    Setting(
        "keep_columns",
        "data",
        "keep-columns",
        "--keep-column",
        "names",
        "use this id-like column (a distinct value on every row) as a feature; repeatable",
        metavar="COL",
        repeatable=True,
    ),
    Setting(
        "partition",
        "data",
        "partition",
        "--partition",
        "text",
        "how rows are split into banks: iid, dirichlet:ALPHA (label skew), quantity:ALPHA (size skew)",
        metavar="SPEC",
        note="iid",
    ),
    Setting(
        "customers",
        "data",
        "customers",
        "--customers",
        "int",
        "synthetic customers across all banks",
        metavar="N",
        note="max(5000, 200 per bank): small banks, 3-10 % defaults",
    ),
    Setting(
        "scenario",
        "data",
        "scenario",
        "--scenario",
        "text",
        "transfer institutions and their columns: a TOML file, or 'uci' for the UCI file",
        metavar="NAME|FILE",
        note="with the generator: bank, card issuer, broker",
    ),
    Setting(
        "overlap",
        "data",
        "overlap",
        "--overlap",
        "float",
        "transfer: customers shared between institutions (each is also a client of another with probability "
        "P); their train/test side is agreed by PSI, no raw id exchanged",
        metavar="P",
        note="the scenario's, 0",
    ),
    # [model]
    Setting("model", "model", "kind", "--model", "str", "model family", choices=("mlp", "logreg"), job="model.kind"),
    Setting("hidden", "model", "hidden", "--hidden", "widths", "MLP layer widths", metavar="W,W", job="model.hidden"),
    Setting(
        "shared",
        "model",
        "shared",
        "--shared",
        "names",
        "aggregated parameters by name prefix ('hidden' keeps each institution's head private)",
        metavar="PREFIXES",
        note="all; with --setup transfer shared_input,hidden,head",
    ),
    Setting(
        "freeze",
        "model",
        "freeze",
        "--freeze",
        "names",
        "parameters not to train (with --base-model), e.g. hidden1",
        metavar="PREFIXES",
    ),
    Setting(
        "base_model",
        "model",
        "base",
        "--base-model",
        "text",
        "start from a .safetensors model of an earlier run",
        metavar="FILE",
    ),
    # [train]
    Setting(
        "local_epochs",
        "train",
        "local-epochs",
        "--local-epochs",
        "int",
        "local epochs per round",
        metavar="E",
        job="train.local_epochs",
    ),
    Setting(
        "batch_size",
        "train",
        "batch-size",
        "--batch-size",
        "int",
        "expected Poisson batch size",
        metavar="B",
        job="train.batch_size",
    ),
    Setting("lr", "train", "lr", "--lr", "float", "local learning rate", job="train.lr"),
    Setting(
        "test_fraction",
        "train",
        "test-fraction",
        None,
        "float",
        "share of each bank's rows held out for testing",
        job="train.test_fraction",
    ),
    # [dp]
    Setting(
        "dp_mode",
        "dp",
        "mode",
        "--dp",
        "str",
        "local: DP-SGD at every bank; distributed: noise shares inside secure aggregation, one full-batch "
        "step per round (use more rounds); off: no DP",
        choices=("local", "distributed", "off"),
        job="dp.mode",
    ),
    Setting("no_dp", "dp", None, "--no-dp", "bool", "same as --dp off (a non-private baseline)"),
    Setting(
        "epsilon",
        "dp",
        "epsilon",
        "--epsilon",
        "float",
        "ε each bank may spend on the whole job",
        metavar="E",
        job="dp.epsilon",
    ),
    Setting("delta", "dp", "delta", "--delta", "float", "δ of each bank's guarantee", metavar="D", job="dp.delta"),
    Setting(
        "max_grad_norm",
        "dp",
        "max-grad-norm",
        "--max-grad-norm",
        "float",
        "per-example gradient clipping bound",
        metavar="C",
        job="dp.max_grad_norm",
    ),
    Setting(
        "accountant", "dp", "accountant", None, "str", "privacy accountant", choices=("prv", "rdp"), job="dp.accountant"
    ),
    # [secagg]
    Setting(
        "secure_aggregation",
        "secagg",
        "mode",
        "--secure-aggregation",
        "str",
        "SecAgg+ secure aggregation of every round; off: plaintext baseline",
        choices=("on", "off"),
        job="secagg.mode",
    ),
    Setting(
        "secagg_clip",
        "secagg",
        "clip",
        None,
        "float",
        "per-coordinate bound on an update before fixed-point encoding",
        job="secagg.clip",
    ),
    Setting(
        "secagg_dropout_fraction",
        "secagg",
        "dropout-fraction",
        None,
        "float",
        "share of dropouts the protocol must survive",
        job="secagg.dropout_fraction",
    ),
    Setting(
        "secagg_collusion_fraction",
        "secagg",
        "collusion-fraction",
        None,
        "float",
        "share of peers that may collude with the host",
        job="secagg.collusion_fraction",
    ),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def toml_keys(settings: Iterable[Setting] = SETTINGS) -> dict[tuple[str, str], str]:
    """TOML (section, key) -> `SimulationConfig` field, in the table's order."""
    return {(s.section, s.key): s.name for s in settings if s.key is not None}


def overridable(settings: Iterable[Setting] = SETTINGS) -> tuple[str, ...]:
    """The fields a flag of `fedsilo simulate` sets (None when the flag is not given)."""
    return tuple(s.name for s in settings if s.configured and s.flag)


def epilog(settings: Iterable[Setting] = SETTINGS) -> str:
    """The TOML keys by section, for the end of `--help`."""
    keys = toml_keys(settings)
    by_section = "; ".join(
        f"[{section}] " + ", ".join(k for s, k in keys if s == section)
        for section in SECTIONS
        if any(s == section for s, _ in keys)
    )
    return f"TOML keys of a --config FILE (flags override them): {by_section}."


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting] = SETTINGS) -> None:
    """The settings' flags, the command's own in the parser's first group, the others by TOML section.

    A flag that is not given leaves its destination None (False for the command's own
    true/false flags), so that the TOML file or the default decides. Use
    `HelpFormatter` as the parser's formatter to show the defaults.
    """
    settings = tuple(settings)
    groups: dict[str, Any] = {RUN: parser}
    for section, about in SECTIONS.items():
        if any(s.section == section and s.flag for s in settings):
            groups[section] = parser.add_argument_group(f"{section}: {about} (TOML [{section}])")
    for setting in settings:
        if setting.flag is None:
            continue
        options: dict[str, Any] = {"dest": setting.name, "help": setting.help.replace("%", "%%")}
        if setting.kind == "bool":
            options.update(action="store_true", default=None if setting.configured else False)
        else:
            options.update(metavar=setting.metavar, type={"int": int, "float": float}.get(setting.kind))
        if setting.choices:
            options.update(choices=setting.choices, metavar=None)
        if setting.repeatable:
            options["action"] = "append"
        if setting.const is not None:
            options.update(nargs="?", const=setting.const, default=None)
        action = groups[setting.section].add_argument(setting.flag, **options)
        action.setting = setting  # read by HelpFormatter


class HelpFormatter(argparse.HelpFormatter):
    """Appends each setting's default, read from `SimulationConfig` when the help is shown."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        setting = getattr(action, "setting", None)
        if setting is None or action.help is None:
            return action.help
        value, note = default_parts(setting, _defaults())
        shown = None if setting.kind == "bool" else value
        if shown is None and not note:
            return action.help
        default = f"default {shown}: {note}" if shown and note else f"default {shown}" if shown else f"default: {note}"
        return f"{action.help} ({default.replace('%', '%%')})"


def _defaults() -> Any:
    """A default `SimulationConfig` (imported here: it brings the job's specs and numpy)."""
    from fedsilo.simulations.config import SimulationConfig

    return SimulationConfig()


def default_parts(setting: Setting, defaults: Any) -> tuple[str | None, str]:
    """(the default as text, or None when it is unset or empty; what it means) of `setting`."""
    value = getattr(defaults, setting.name, None) if setting.configured else None
    return _text(value), setting.note


def _text(value: Any) -> str | None:
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def markdown_table(settings: Iterable[Setting] = SETTINGS, defaults: Any = None) -> str:
    """The configuration table of the documentation: one row per setting, the command's own flags last."""
    defaults = _defaults() if defaults is None else defaults
    settings = tuple(settings)
    ordered = [s for section in SECTIONS for s in settings if s.section == section]
    ordered += [s for s in settings if s.section == RUN]
    rows = ["| Flag | TOML key | Type | Default | Meaning |", "| --- | --- | --- | --- | --- |"]
    for setting in ordered:
        value, note = default_parts(setting, defaults)
        cells = (
            _code(_flag_usage(setting)) if setting.flag else "",
            _code(f"[{setting.section}] {setting.key}") if setting.key else "",
            _type(setting),
            ": ".join(p for p in (_code(value) if value else "", note) if p),
            setting.help,
        )
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _flag_usage(setting: Setting) -> str:
    if setting.kind == "bool":
        return str(setting.flag)
    if setting.choices:
        return f"{setting.flag} {{{','.join(setting.choices)}}}"
    metavar = setting.metavar or setting.name.upper()
    return f"{setting.flag} [{metavar}]" if setting.const is not None else f"{setting.flag} {metavar}"


def _type(setting: Setting) -> str:
    if setting.choices:
        return "one of " + ", ".join(setting.choices)
    if setting.kind == "bool" and not setting.configured:
        return "flag"
    if setting.kind in ("names", "widths") and setting.flag:
        return KINDS[setting.kind] + (" (flag repeated)" if setting.repeatable else " (flag: comma-separated)")
    return KINDS[setting.kind]


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    print(markdown_table())
