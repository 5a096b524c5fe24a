"""peer.toml: the peer's identity, state directory, policy and data sources.

```toml
[peer]
identity = "identity"        # peer.key, peer.pem, ca.pem, manifest.json, crl.pem
state = "state"              # SQLite state, model store
max-body-bytes = 1048576     # larger request bodies are refused with 413
manifest-poll-seconds = 60   # how often to ask the other members for a newer signed manifest

[policy]
model-owners = ["risk-dept"]     # members who may propose jobs
max-epsilon-per-job = 3.0
min-participants = 3             # a job with fewer participants is declined
model-families = ["mlp", "logreg"]   # add "gbdt" to join boosting jobs
strategies = ["fedavg", "fedadam"]
model-readers = []               # besides the job's owner and participants
setups = ["horizontal"]          # job setups accepted: horizontal, transfer, vertical
dp = ["local"]                   # DP mechanisms accepted: local, distributed
vertical-label-holders = []      # hosts (the label holders) whose vertical jobs are accepted
vertical-schemes = ["coded"]     # vertical schemes accepted: coded, split
max-model-parameters = 1000000   # bounds on a job (a job over one is declined, nothing reserved):
max-rounds = 200                 #   parameters of its declared model, training rounds,
max-batch-size = 10000           #   expected batch size,
max-wall-minutes = 30            #   and minutes this peer's engine may train it (then stopped: failed)

[limits]                         # what one member may ask of this daemon (all optional)
read-rate = 20.0                 # GET requests per second, per member and per route (token bucket)
read-burst = 40                  #   the bucket: requests a member may send at once
write-rate = 2.0                 # POST requests per second, per member and per route
write-burst = 10
frames-rate = 10.0               # POSTs of PSI/query frames (/v1/lists/...): a large PSI sends many
frames-burst = 200               #   bodies in a row; their list quotas bound what they reveal
routes = { "POST /v1/jobs" = [0.2, 3] }  # [rate, burst] for one route (method and path as in the API)
header-timeout = 10.0            # seconds for the TLS handshake and for a request's headers
body-timeout = 30.0              # seconds for a request's body, once its headers arrived
idle-timeout = 30.0              # seconds a connection may wait idle between requests
connections-per-member = 32      # open connections of one member; more are closed at once
unidentified-connections = 16    # open connections whose certificate is no member's

[sources.credit-card]            # the name jobs refer to
path = "../data/bank-a.csv"      # CSV or Parquet, relative to this file; never leaves the machine
label = "Y"
id-column = "ID"                 # optional: kept out of the features
epsilon = 10.0                   # total budget of this source, over all jobs
delta = 1e-5
accountant = "prv"               # prv (tight, the default) or rdp

[lists.high-risk]                # a list other peers may compare with (PSI) or query
path = "../data/high-risk.csv"   # CSV, relative to this file; never leaves the machine
id-column = "lei"
label-column = "grade"           # optional: what a query reveals for a listed identifier
kind = "lei"                     # the identifiers' kind (canonical form); "typed": each carries KIND:
psi = ["broker-x"]               # members who may run PSI against it
psi-modes = ["to-me", "both", "count"]
psi-quota = 100000               # identifiers each of them may compare per window; required if
                                 # a member is in both psi and queriers (else optional, no limit)
queriers = { bank-a = 1000 }     # members who may query it, with identifiers per window
quota-window = 86400             # seconds
label-width = 32                 # bytes; longer labels are refused
epoch-hours = 24                 # the query key's lifetime; a changed list file starts a new epoch too
```

[policy] and [sources] may be left out: such a peer accepts no training job (it may
still share lists, or query other peers' lists).

Parsing is strict: an unknown section or key, a wrong type or a value out of range is
refused with a ConfigError naming it and the valid choices. Relative paths are relative
to the file's directory. The listening address is the member's address in the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.peers.identity.pki import check_name
from fedsilo.peers.job import DEFAULT_VERTICAL_SCHEME, NETWORK_DP, SETUPS, VERTICAL_SCHEMES
from fedsilo.peers.model_spec import JOB_MODEL_KINDS, MODEL_KINDS
from fedsilo.peers.toml_file import read_toml
from fedsilo.privacy.accounting.validate import check_accountant, check_delta, check_epsilon
from fedsilo.privacy.psi.identifiers import canonical
from fedsilo.strategies.factory import STRATEGIES

DEFAULT_MAX_BODY = 1 << 20
# The [policy] bounds on one job (issue 19): a credit-risk MLP over a few hundred encoded
# columns has some 10^4–10^5 parameters and trains in tens of rounds on batches of hundreds.
DEFAULT_MAX_MODEL_PARAMETERS = 1_000_000
DEFAULT_MAX_ROUNDS = 200
DEFAULT_MAX_BATCH_SIZE = 10_000
DEFAULT_MAX_WALL_MINUTES = 30.0


@dataclass(frozen=True)
class Policy:
    """What jobs this peer accepts (see the module docstring)."""

    model_owners: tuple[str, ...]
    max_epsilon_per_job: float
    min_participants: int
    model_families: tuple[str, ...]
    strategies: tuple[str, ...]
    model_readers: tuple[str, ...] = ()
    setups: tuple[str, ...] = ("horizontal",)
    dp: tuple[str, ...] = ("local",)
    vertical_label_holders: tuple[str, ...] = ()
    vertical_schemes: tuple[str, ...] = (DEFAULT_VERTICAL_SCHEME,)
    max_model_parameters: int = DEFAULT_MAX_MODEL_PARAMETERS
    max_rounds: int = DEFAULT_MAX_ROUNDS
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_wall_minutes: float = DEFAULT_MAX_WALL_MINUTES


@dataclass(frozen=True)
class DataSource:
    """A table this peer holds, with its total privacy budget."""

    name: str
    path: Path
    label: str
    epsilon: float
    delta: float
    accountant: str = "prv"
    id_column: str | None = None


PSI_MODES = ("to-me", "both", "count")
PSI_PROTOCOLS = ("dh", "ot")  # DH-PSI (privacy/psi/protocol.py), OT-extension PSI (privacy/psi/kkrt.py)


@dataclass(frozen=True)
class SharedList:
    """A list this peer lets named members compare with (PSI) or query (anonymous query)."""

    name: str
    path: Path
    id_column: str
    label_column: str | None = None
    kind: str | None = "id"  # None: each identifier carries its own KIND: prefix
    psi: tuple[str, ...] = ()
    psi_modes: tuple[str, ...] = PSI_MODES
    psi_protocols: tuple[str, ...] = PSI_PROTOCOLS
    queriers: tuple[tuple[str, int], ...] = ()  # (member, identifiers per window)
    quota_window: float = 86400.0
    label_width: int = 32
    epoch_seconds: float = 86400.0  # lifetime of a query key epoch
    psi_quota: int | None = None  # identifiers per PSI member per quota window; None: no limit

    def quota_of(self, member: str) -> int | None:
        """The member's query quota, or None if it may not query this list."""
        return dict(self.queriers).get(member)


@dataclass(frozen=True)
class Limits:
    """[limits]: per-member, per-route request rates (token buckets) and connection limits."""

    read_rate: float = 20.0
    read_burst: int = 40
    write_rate: float = 2.0
    write_burst: int = 10
    frames_rate: float = 10.0
    frames_burst: int = 200
    routes: tuple[tuple[str, float, int], ...] = ()  # ("METHOD /path", rate, burst)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 30.0
    connections_per_member: int = 32
    unidentified_connections: int = 16

    def rate_of(self, method: str, path: str) -> tuple[float, int]:
        """(requests per second, burst) of a route: its own entry, else the read, frames or write default."""
        for route, rate, burst in self.routes:
            if route == f"{method} {path}":
                return rate, burst
        if method in ("GET", "HEAD"):
            return self.read_rate, self.read_burst
        if path.startswith("/v1/lists/"):
            return self.frames_rate, self.frames_burst
        return self.write_rate, self.write_burst


@dataclass(frozen=True)
class PeerConfig:
    identity_dir: Path
    state_dir: Path
    policy: Policy
    sources: dict[str, DataSource]
    max_body_bytes: int = DEFAULT_MAX_BODY
    lists: dict[str, SharedList] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    manifest_poll_seconds: float = 60.0  # how often the daemon asks the other members for a newer manifest


_SECTIONS = {"peer", "policy", "sources", "lists", "limits"}
_LIMIT_KEYS = {
    "read-rate",
    "read-burst",
    "write-rate",
    "write-burst",
    "frames-rate",
    "frames-burst",
    "routes",
    "header-timeout",
    "body-timeout",
    "idle-timeout",
    "connections-per-member",
    "unidentified-connections",
}
_PEER_KEYS = {"identity", "state", "max-body-bytes", "manifest-poll-seconds"}
DEFAULT_MANIFEST_POLL = 60.0
_POLICY_KEYS = {
    "model-owners",
    "max-epsilon-per-job",
    "min-participants",
    "model-families",
    "strategies",
    "model-readers",
    "setups",
    "dp",
    "vertical-label-holders",
    "vertical-schemes",
    "max-model-parameters",
    "max-rounds",
    "max-batch-size",
    "max-wall-minutes",
}
_SOURCE_KEYS = {"path", "label", "id-column", "epsilon", "delta", "accountant"}
_LIST_KEYS = {
    "path",
    "id-column",
    "label-column",
    "kind",
    "psi",
    "psi-modes",
    "psi-protocols",
    "queriers",
    "quota-window",
    "label-width",
    "epoch-hours",
    "psi-quota",
}


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}: valid keys are {', '.join(sorted(allowed))}")


def _typed(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where} lacks {key!r}: add it")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key} must be {names} (got {value!r})")
    return value


def _names(
    table: dict[str, Any], key: str, where: str, choices: tuple[str, ...] | None = None, default: Any = ...
) -> tuple[str, ...]:
    values = _typed(table, key, list, where, default)
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}.{key} must be a list of strings (got {values!r})")
    for value in values:
        if choices is not None and value not in choices:
            raise ConfigError(f"{where}.{key}: {value!r} is unknown; valid choices are {', '.join(choices)}")
    return tuple(values)


def _bound(table: dict[str, Any], key: str, default: int) -> int:
    """A positive integer bound of [policy]."""
    value = _typed(table, key, int, "policy", default)
    if value < 1:
        raise ConfigError(f"policy.{key} must be a positive integer (got {value}); the default is {default}")
    return value


def _wall_minutes(table: dict[str, Any]) -> float:
    value = float(_typed(table, "max-wall-minutes", (int, float), "policy", DEFAULT_MAX_WALL_MINUTES))
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"policy.max-wall-minutes must be a positive number of minutes (got {value}); "
            f"the default is {DEFAULT_MAX_WALL_MINUTES:g}"
        )
    return value


def parse_config(document: dict[str, Any], base: Path) -> PeerConfig:
    """Build a PeerConfig from a parsed peer.toml whose directory is `base`."""
    _only(document, _SECTIONS, "peer.toml (sections)")
    peer = _typed(document, "peer", dict, "peer.toml")
    _only(peer, _PEER_KEYS, "[peer]")
    max_body = _typed(peer, "max-body-bytes", int, "peer", DEFAULT_MAX_BODY)
    if max_body < 1024:
        raise ConfigError(f"peer.max-body-bytes must be ≥ 1024 (got {max_body})")
    poll = _typed(peer, "manifest-poll-seconds", (int, float), "peer", DEFAULT_MANIFEST_POLL)
    if isinstance(poll, bool) or not 0.1 <= poll <= 86400:
        raise ConfigError(f"peer.manifest-poll-seconds must be between 0.1 and 86400 seconds (got {poll!r})")

    table = _typed(document, "policy", dict, "peer.toml", None)
    if table is None:  # a peer that only shares lists: it accepts no training job
        table = {"model-owners": [], "max-epsilon-per-job": 1.0}
    _only(table, _POLICY_KEYS, "[policy]")
    max_eps = check_epsilon(_typed(table, "max-epsilon-per-job", (int, float), "policy"), "policy.max-epsilon-per-job")
    min_participants = _typed(table, "min-participants", int, "policy", 2)
    if min_participants < 1:
        raise ConfigError(f"policy.min-participants must be ≥ 1 (got {min_participants})")
    policy = Policy(
        model_owners=tuple(check_name(n, "policy.model-owners entry") for n in _names(table, "model-owners", "policy")),
        max_epsilon_per_job=max_eps,
        min_participants=min_participants,
        model_families=_names(table, "model-families", "policy", JOB_MODEL_KINDS, MODEL_KINDS),
        strategies=_names(table, "strategies", "policy", tuple(STRATEGIES), tuple(STRATEGIES)),
        model_readers=_names(table, "model-readers", "policy", None, ()),
        setups=_names(table, "setups", "policy", SETUPS, ("horizontal",)),
        dp=_names(table, "dp", "policy", NETWORK_DP, ("local",)),
        vertical_label_holders=tuple(
            check_name(n, "policy.vertical-label-holders entry")
            for n in _names(table, "vertical-label-holders", "policy", None, ())
        ),
        vertical_schemes=_names(table, "vertical-schemes", "policy", VERTICAL_SCHEMES, (DEFAULT_VERTICAL_SCHEME,)),
        max_model_parameters=_bound(table, "max-model-parameters", DEFAULT_MAX_MODEL_PARAMETERS),
        max_rounds=_bound(table, "max-rounds", DEFAULT_MAX_ROUNDS),
        max_batch_size=_bound(table, "max-batch-size", DEFAULT_MAX_BATCH_SIZE),
        max_wall_minutes=_wall_minutes(table),
    )

    sources_table = _typed(document, "sources", dict, "peer.toml", {})
    sources = {}
    for name, entry in sources_table.items():
        where = f"sources.{name}"
        check_name(name, "data source name")
        if not isinstance(entry, dict):
            raise ConfigError(f"[{where}] must be a table with path, label, epsilon, delta")
        _only(entry, _SOURCE_KEYS, f"[{where}]")
        epsilon = check_epsilon(_typed(entry, "epsilon", (int, float), where), f"{where}.epsilon")
        delta = check_delta(_typed(entry, "delta", (int, float), where, 1e-5), f"{where}.delta")
        accountant = check_accountant(_typed(entry, "accountant", str, where, "prv"), f"{where}.accountant")
        path = (base / _typed(entry, "path", str, where)).resolve()
        if not path.is_file():
            raise ConfigError(f"{where}.path {path} does not exist: give the CSV or Parquet file of this source")
        sources[name] = DataSource(
            name=name,
            path=path,
            label=_typed(entry, "label", str, where),
            epsilon=epsilon,
            delta=delta,
            accountant=accountant,
            id_column=_typed(entry, "id-column", str, where, None),
        )
    return PeerConfig(
        identity_dir=(base / _typed(peer, "identity", str, "peer")).resolve(),
        state_dir=(base / _typed(peer, "state", str, "peer")).resolve(),
        policy=policy,
        sources=sources,
        max_body_bytes=max_body,
        lists=_lists(_typed(document, "lists", dict, "peer.toml", {}), base),
        limits=_limits(_typed(document, "limits", dict, "peer.toml", {})),
        manifest_poll_seconds=float(poll),
    )


def _limits(table: dict[str, Any]) -> Limits:
    """The [limits] table (see the module docstring); every key defaults to `Limits`' value."""
    _only(table, _LIMIT_KEYS, "[limits]")
    default = Limits()

    def positive(key: str, kind: type | tuple[type, ...]) -> Any:
        value = _typed(table, key, kind, "limits", getattr(default, key.replace("-", "_")))
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"limits.{key} must be > 0 (got {value})")
        return value

    routes = []
    for route, entry in _typed(table, "routes", dict, "limits", {}).items():
        method, _, path = route.partition(" ")
        if method not in ("GET", "POST") or not path.startswith("/v1/"):
            raise ConfigError(f'limits.routes key {route!r} must be a method and a path, e.g. "POST /v1/jobs"')
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or any(isinstance(v, bool) for v in entry)
            or not isinstance(entry[0], (int, float))
            or not isinstance(entry[1], int)
            or not (math.isfinite(entry[0]) and entry[0] > 0 and entry[1] >= 1)
        ):
            raise ConfigError(f"limits.routes.{route!r} must be [requests per second > 0, burst ≥ 1] (got {entry!r})")
        routes.append((route, float(entry[0]), entry[1]))
    return Limits(
        read_rate=float(positive("read-rate", (int, float))),
        read_burst=positive("read-burst", int),
        write_rate=float(positive("write-rate", (int, float))),
        write_burst=positive("write-burst", int),
        frames_rate=float(positive("frames-rate", (int, float))),
        frames_burst=positive("frames-burst", int),
        routes=tuple(routes),
        header_timeout=float(positive("header-timeout", (int, float))),
        body_timeout=float(positive("body-timeout", (int, float))),
        idle_timeout=float(positive("idle-timeout", (int, float))),
        connections_per_member=positive("connections-per-member", int),
        unidentified_connections=positive("unidentified-connections", int),
    )


def _lists(table: dict[str, Any], base: Path) -> dict[str, SharedList]:
    """The [lists.NAME] tables (see the module docstring)."""
    lists = {}
    for name, entry in table.items():
        where = f"lists.{name}"
        check_name(name, "shared list name")
        if not isinstance(entry, dict):
            raise ConfigError(f"[{where}] must be a table with path, id-column and who may use it")
        _only(entry, _LIST_KEYS, f"[{where}]")
        path = (base / _typed(entry, "path", str, where)).resolve()
        if not path.is_file():
            raise ConfigError(f"{where}.path {path} does not exist: give the CSV file of this list")
        kind = _typed(entry, "kind", str, where, "id")
        if kind != "typed":
            canonical("x", kind)  # refuses a malformed kind with the valid form
        psi = tuple(check_name(n, f"{where}.psi entry") for n in _names(entry, "psi", where, None, ()))
        modes = _names(entry, "psi-modes", where, PSI_MODES, PSI_MODES)
        protocols = _names(entry, "psi-protocols", where, PSI_PROTOCOLS, PSI_PROTOCOLS)
        if not protocols or len(set(protocols)) != len(protocols):
            raise ConfigError(
                f"{where}.psi-protocols must name each protocol at most once and at least one "
                f"of {', '.join(PSI_PROTOCOLS)} (got {list(protocols)!r})"
            )
        quotas = _typed(entry, "queriers", dict, where, {})
        for member, limit in quotas.items():
            check_name(member, f"{where}.queriers entry")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(
                    f"{where}.queriers.{member} must be a positive number of identifiers per window (got {limit!r})"
                )
        window = float(_typed(entry, "quota-window", (int, float), where, 86400))
        if not (math.isfinite(window) and window > 0):
            raise ConfigError(f"{where}.quota-window must be > 0 seconds (got {window})")
        width = _typed(entry, "label-width", int, where, 32)
        if not 1 <= width <= 1024:
            raise ConfigError(f"{where}.label-width must be 1..1024 bytes (got {width})")
        psi_quota = _typed(entry, "psi-quota", int, where, None)
        if psi_quota is not None and (isinstance(psi_quota, bool) or psi_quota < 1):
            raise ConfigError(
                f"{where}.psi-quota must be a positive number of identifiers per window (got {psi_quota!r})"
            )
        both = sorted(set(psi) & set(quotas))
        if both and psi_quota is None:
            raise ConfigError(
                f"{where} lets {', '.join(both)} both query it (a quota of identifiers per window) and "
                "run PSI against it without a psi-quota: one PSI with any number of guesses would tell "
                f"them what their query quota is meant to limit (which identifiers are listed). Set "
                f"{where}.psi-quota, or take them out of psi or queriers"
            )
        epoch_hours = float(_typed(entry, "epoch-hours", (int, float), where, 24))
        if not (math.isfinite(epoch_hours) and epoch_hours > 0):
            raise ConfigError(f"{where}.epoch-hours must be > 0 (got {epoch_hours})")
        lists[name] = SharedList(
            name=name,
            path=path,
            id_column=_typed(entry, "id-column", str, where),
            label_column=_typed(entry, "label-column", str, where, None),
            kind=None if kind == "typed" else kind,
            psi=psi,
            psi_modes=modes,
            psi_protocols=protocols,
            queriers=tuple(sorted(quotas.items())),
            quota_window=window,
            label_width=width,
            epoch_seconds=epoch_hours * 3600.0,
            psi_quota=psi_quota,
        )
    return lists


def load_config(path: str | Path) -> PeerConfig:
    """Read and check peer.toml."""
    path = Path(path)
    return parse_config(read_toml(path, "peer config"), path.parent.resolve())
