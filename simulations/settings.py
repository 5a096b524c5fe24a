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
from functools import lru_cache
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

    `name` is the `SimulationConfig` field and the argparse destination (for a flag of
    the command only, just the latter). `toml` is "section.key"; None: a flag of the
    command only, shown with `--config` or in the `group` of a section. `flag` None: a
    TOML key only. `kind` is one of `KINDS`. `job` names the job field the setting
    fills (`"train.lr"`): its default is that spec's. `note` says what the default means
    ("all banks"); `repeatable` flags are given once per value; a flag with a `const`
    may be given without its value, which then is `const`.
    """

    name: str
    kind: str
    help: str
    toml: str | None = None
    flag: str | None = None
    group: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    note: str = ""
    job: str = ""
    repeatable: bool = False
    const: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.section not in (*SECTIONS, RUN) or (self.toml and (self.group or "." not in self.toml)):
            where = f"TOML key {self.toml!r}" if self.toml else f"group {self.group!r}"
            raise ValueError(f"setting {self.name}: {where} is not in a section of {', '.join(SECTIONS)}")
        if self.toml is None and self.flag is None:
            raise ValueError(f"setting {self.name} has neither a TOML key nor a flag")

    @property
    def section(self) -> str:
        """The TOML section, which is the --help group too (`RUN`: the command's own flags)."""
        return self.toml.split(".", 1)[0] if self.toml else self.group or RUN

    @property
    def key(self) -> str | None:
        """The key in the TOML section; None for a flag of the command only."""
        return self.toml.split(".", 1)[1] if self.toml else None

    @property
    def configured(self) -> bool:
        """A `SimulationConfig` field (it has a TOML key), not a flag of the command only."""
        return self.toml is not None


SETTINGS: tuple[Setting, ...] = (
    # the command's own flags: no TOML key
    Setting(
        "config",
        flag="--config",
        kind="text",
        metavar="FILE",
        help="TOML file of settings, by their TOML keys; flags override it",
    ),
    Setting("json", flag="--json", kind="bool", help="print a JSON summary as the last line of stdout"),
    Setting(
        "mlflow",
        flag="--mlflow",
        kind="text",
        metavar="URI",
        note="no logging; --mlflow alone: ./mlruns, no server",
        const="",
        help="log the run to MLflow: parameters, per-round metrics and ε, artefacts (needs pip install "
        "'fedsilo[mlflow]')",
    ),
    Setting("quiet", flag="--quiet", kind="bool", help="no progress display"),
    # [simulation]
    Setting("banks", toml="simulation.banks", flag="--banks", kind="int", metavar="N", help="number of banks"),
    Setting(
        "rounds",
        toml="simulation.rounds",
        flag="--rounds",
        kind="int",
        metavar="R",
        job="train.rounds",
        help="federated rounds",
    ),
    Setting(
        "sample",
        toml="simulation.sample",
        flag="--sample",
        kind="sample",
        metavar="K|F",
        note="all banks",
        help="banks sampled per round: a count (100) or a fraction in (0, 1] (0.1)",
    ),
    Setting(
        "strategy",
        toml="simulation.strategy",
        flag="--strategy",
        kind="str",
        choices=("fedavg", "fedadam"),
        job="strategy",
        help="aggregation",
    ),
    Setting(
        "setup",
        toml="simulation.setup",
        flag="--setup",
        kind="str",
        choices=("horizontal", "transfer", "vertical"),
        help="horizontal: same columns everywhere; transfer: each institution its own columns; "
        "vertical: the same customers at a broker (label) and a bank (other columns), a split model",
    ),
    Setting(
        "compare",
        toml="simulation.compare",
        flag="--compare",
        kind="names",
        metavar="LIST",
        note="centralized,local; with --setup transfer local,common",
        help="yardsticks trained in the same run: centralized, local (each bank alone), common (transfer: a "
        "horizontal run on the columns all institutions share), or none",
    ),
    Setting(
        "seed",
        toml="simulation.seed",
        flag="--seed",
        kind="int",
        metavar="S",
        job="train.seed",
        help="seed of data, partitions, splits and initial models; DP noise and sampling are secret (OS "
        "CSPRNG) unless --reproducible",
    ),
    Setting(
        "reproducible",
        toml="simulation.reproducible",
        flag="--reproducible",
        kind="bool",
        job="dp.reproducible",
        help="research mode: DP noise and sampling seeded by --seed too, so the run replays exactly; its noise"
        " can then be replayed by anyone with the seed and its ε is NOT a privacy guarantee",
    ),
    Setting(
        "out",
        toml="simulation.out",
        flag="--out",
        kind="str",
        metavar="DIR",
        help="where run folders are created",
    ),
    Setting(
        "audit",
        toml="simulation.audit",
        flag="--audit",
        kind="bool",
        help="after the run, measure its privacy leakage as `fedsilo audit-privacy RUN_DIR` does (horizontal setup)",
    ),
    Setting(
        "dropout",
        toml="simulation.dropout",
        flag="--dropout",
        kind="float",
        metavar="F",
        help="share of banks that vanish at a random stage of each round",
    ),
    Setting(
        "dropout_concentration",
        toml="simulation.dropout-concentration",
        flag="--dropout-concentration",
        kind="float",
        metavar="K",
        note="every bank drops with probability F",
        help="spread of the banks' own dropout probabilities, Beta(K·F, K·(1−F)) around --dropout F",
    ),
    Setting(
        "yardstick_banks",
        toml="simulation.yardstick-banks",
        flag="--yardstick-banks",
        kind="int",
        metavar="N",
        help="banks whose held-out rows score the model and train the yardsticks (all banks when fewer); "
        "local-only runs on the first 20 of them",
    ),
    Setting(
        "engine",
        toml="simulation.engine",
        flag="--engine",
        kind="text",
        choices=("flower", "in-process"),
        note="in-process for --model gbdt (horizontal), flower otherwise",
        help="where the parties run: flower (Flower's Simulation Engine, one virtual SuperNode per party) or "
        "in-process (objects of this process exchanging the same messages). Vertical, split scheme: a relaying "
        "ServerApp; the coded scheme's one exchange runs in process. --model gbdt: the boosting ServerApp/ClientApp "
        "pair of the peer daemons, same trees and report; in-process is its default because Ray's message round trips and actor start "
        "make the engine far slower (docs/gbdt.md). The neural horizontal and transfer "
        "setups always run on Flower's engine",
    ),
    Setting(
        "ray_address",
        toml="simulation.ray-address",
        flag="--ray-address",
        kind="text",
        metavar="HOST:PORT",
        note="a private Ray runtime on this machine's cores",
        help="run on an existing Ray cluster (its head's address, or 'auto')",
    ),
    Setting(
        "cpus_per_bank",
        toml="simulation.cpus-per-bank",
        flag="--cpus-per-bank",
        kind="float",
        metavar="C",
        note="one bank per core at a time",
        help="Ray CPUs one virtual bank claims",
    ),
    # [data]
    Setting(
        "data",
        toml="data.path",
        flag="--data",
        kind="text",
        metavar="PATH",
        note="the embedded synthetic generator",
        help="your CSV or Parquet file",
    ),
    Setting(
        "label",
        toml="data.label",
        flag="--label",
        kind="text",
        metavar="COL",
        help="target column of --data (two values)",
    ),
    Setting(
        "positive",
        toml="data.positive",
        flag="--positive",
        kind="label",
        metavar="VALUE",
        help="the label value that means the event to predict, e.g. bad (needed for text labels)",
    ),
    Setting(
        "id_column",
        toml="data.id-column",
        flag="--id-column",
        kind="text",
        metavar="COL",
        help="row id column of --data, kept out of the features",
    ),
    Setting(
        "keep_columns",
        toml="data.keep-columns",
        flag="--keep-column",
        kind="names",
        metavar="COL",
        repeatable=True,
        help="use this id-like column (a distinct value on every row) as a feature; repeatable",
    ),
    Setting(
        "partition",
        toml="data.partition",
        flag="--partition",
        kind="text",
        metavar="SPEC",
        note="iid",
        help="how rows are split into banks: iid, dirichlet:ALPHA (label skew), quantity:ALPHA (size skew)",
    ),
    Setting(
        "customers",
        toml="data.customers",
        flag="--customers",
        kind="int",
        metavar="N",
        note="max(5000, 200 per bank): small banks, 3-10 % defaults",
        help="synthetic customers across all banks",
    ),
    Setting(
        "scenario",
        toml="data.scenario",
        flag="--scenario",
        kind="text",
        metavar="NAME|FILE",
        note="with the generator: bank, card issuer, broker",
        help="transfer institutions and their columns: a TOML file, or 'uci' for the UCI file",
    ),
    Setting(
        "overlap",
        toml="data.overlap",
        flag="--overlap",
        kind="float",
        metavar="P",
        note="the scenario's, 0; vertical 0.6",
        help="transfer: customers shared between institutions (each is also a client of another with "
        "probability P); their train/test side is agreed by PSI, no raw id exchanged; vertical: probability "
        "that a broker client is also a bank client",
    ),
    # [model]
    Setting(
        "model",
        toml="model.kind",
        flag="--model",
        kind="str",
        choices=("mlp", "logreg", "gbdt"),
        job="model.kind",
        help="model family: a neural network (mlp), logistic regression, or gradient-boosted trees (gbdt)",
    ),
    Setting(
        "hidden",
        toml="model.hidden",
        flag="--hidden",
        kind="widths",
        metavar="W,W",
        job="model.hidden",
        help="MLP layer widths",
    ),
    Setting(
        "embedding_width",
        toml="model.embedding-width",
        flag="--embedding-width",
        kind="int",
        metavar="D",
        help="vertical: width of each party's bottom-model output",
    ),
    Setting(
        "frozen_bottoms",
        toml="model.frozen-bottoms",
        flag="--frozen-bottoms",
        kind="bool",
        help="vertical: the bank keeps its seeded (data-independent) bottom and releases each row's embedding once",
    ),
    Setting(
        "vertical_scheme",
        toml="model.vertical-scheme",
        flag="--vertical-scheme",
        kind="str",
        choices=("split", "coded"),
        help="vertical: 'coded' (the bank releases each shared customer's delinquency code once, by randomized "
        "response; nothing comes back) or 'split' (noisy embeddings and gradients every step)",
    ),
    Setting("trees", toml="model.trees", flag="--trees", kind="int", metavar="N", help="--model gbdt: number of trees"),
    Setting(
        "depth", toml="model.depth", flag="--depth", kind="int", metavar="D", help="--model gbdt: depth of each tree"
    ),
    Setting(
        "bins",
        toml="model.bins",
        flag="--bins",
        kind="int",
        metavar="B",
        help="--model gbdt: histogram bins per numeric column",
    ),
    Setting(
        "features_per_tree",
        toml="model.features-per-tree",
        flag="--features-per-tree",
        kind="int",
        metavar="K",
        note="0: every column",
        help="--model gbdt: each tree splits on K columns drawn at random by the host (less DP noise per release)",
    ),
    Setting(
        "splits",
        toml="model.splits",
        flag="--splits",
        kind="str",
        choices=("histogram", "random"),
        help="--model gbdt: 'histogram' (each level's split from noisy secure-summed histograms) or 'random' (every "
        "split a public random draw, only the leaves released: many trees at a small --lr; docs/gbdt.md)",
    ),
    Setting(
        "shared",
        toml="model.shared",
        flag="--shared",
        kind="names",
        metavar="PREFIXES",
        note="all; with --setup transfer shared_input,hidden,head",
        help="aggregated parameters by name prefix ('hidden' keeps each institution's head private)",
    ),
    Setting(
        "freeze",
        toml="model.freeze",
        flag="--freeze",
        kind="names",
        metavar="PREFIXES",
        help="parameters not to train (with --base-model), e.g. hidden1",
    ),
    Setting(
        "base_model",
        toml="model.base",
        flag="--base-model",
        kind="text",
        metavar="FILE",
        help="start from a .safetensors model of an earlier run",
    ),
    # [train]
    Setting(
        "local_epochs",
        toml="train.local-epochs",
        flag="--local-epochs",
        kind="int",
        metavar="E",
        job="train.local_epochs",
        help="local epochs per round",
    ),
    Setting(
        "batch_size",
        toml="train.batch-size",
        flag="--batch-size",
        kind="int",
        metavar="B",
        job="train.batch_size",
        help="expected Poisson batch size",
    ),
    Setting("lr", toml="train.lr", flag="--lr", kind="float", job="train.lr", help="local learning rate"),
    Setting(
        "test_fraction",
        toml="train.test-fraction",
        kind="float",
        job="train.test_fraction",
        help="share of each bank's rows held out for testing",
    ),
    # [dp]
    Setting(
        "dp_mode",
        toml="dp.mode",
        flag="--dp",
        kind="str",
        choices=("local", "distributed", "off"),
        job="dp.mode",
        help="local: DP-SGD at every bank; distributed: noise shares inside secure aggregation, one full-batch"
        " step per round (use more rounds); off: no DP",
    ),
    Setting("no_dp", flag="--no-dp", group="dp", kind="bool", help="same as --dp off (a non-private baseline)"),
    Setting(
        "epsilon",
        toml="dp.epsilon",
        flag="--epsilon",
        kind="float",
        metavar="E",
        job="dp.epsilon",
        help="ε each bank may spend on the whole job",
    ),
    Setting(
        "delta",
        toml="dp.delta",
        flag="--delta",
        kind="float",
        metavar="D",
        job="dp.delta",
        help="δ of each bank's guarantee",
    ),
    Setting(
        "max_grad_norm",
        toml="dp.max-grad-norm",
        flag="--max-grad-norm",
        kind="float",
        metavar="C",
        job="dp.max_grad_norm",
        help="per-example gradient clipping bound",
    ),
    Setting(
        "accountant",
        toml="dp.accountant",
        kind="str",
        choices=("prv", "rdp"),
        job="dp.accountant",
        help="privacy accountant",
    ),
    # [secagg]
    Setting(
        "secure_aggregation",
        toml="secagg.mode",
        flag="--secure-aggregation",
        kind="str",
        choices=("on", "off"),
        job="secagg.mode",
        help="SecAgg+ secure aggregation of every round; off: plaintext baseline",
    ),
    Setting(
        "secagg_clip",
        toml="secagg.clip",
        kind="float",
        job="secagg.clip",
        help="per-coordinate bound on an update before fixed-point encoding",
    ),
    Setting(
        "secagg_dropout_fraction",
        toml="secagg.dropout-fraction",
        kind="float",
        job="secagg.dropout_fraction",
        help="share of dropouts the protocol must survive",
    ),
    Setting(
        "secagg_collusion_fraction",
        toml="secagg.collusion-fraction",
        kind="float",
        job="secagg.collusion_fraction",
        help="share of peers that may collude with the host",
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
        if setting.kind == "bool":
            value = None  # a switch: given or not
        if value is None and not note:
            return action.help
        default = f"default {value}" if value is not None else "default"
        default += f": {note}" if note else ""
        return f"{action.help} ({default.replace('%', '%%')})"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """The epilog wrapped at spaces only: a TOML key (`dropout-fraction`) is never cut at its hyphen."""
        import textwrap

        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


@lru_cache(maxsize=1)
def _defaults() -> Any:
    """The default `SimulationConfig` (imported here: it brings the job's specs and numpy)."""
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


def markdown_table(settings: Iterable[Setting] = SETTINGS) -> str:
    """The configuration table of the documentation: one row per setting, the command's own flags last."""
    defaults = _defaults()
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
