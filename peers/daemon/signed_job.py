"""A job as a model owner signs it, and its checks at every peer.

A job file (job.toml) names the job, its host and participants, the data source every
participant trains on (by the consortium's name for it), the target column, and the
training setup:

```toml
[job]
id = "credit-default-1"
host = "bank-a"
participants = ["bank-a", "bank-b", "bank-c"]
min-participants = 3            # start only if this many accept
source = "credit-card"
label = "Y"
strategy = "fedavg"
setup = "horizontal"            # horizontal, transfer or vertical (the host holds the labels)
public-rows = 2400              # distributed DP only: the public total of training rows
valid-for-minutes = 60          # the signed job expires after this
shared-customers = false        # transfer only: whether the institutions share customers

[model]                         # kind, hidden; transfer: shared, shared-vocabulary;
                                # kind = "gbdt": trees, depth, bins, learning-rate, features-per-tree, splits
[train]                         # rounds, local-epochs, batch-size, lr, seed, test-fraction
[dp]                            # mode (local or distributed), epsilon, delta, max-grad-norm, accountant
[secagg]                        # mode, clip, dropout-fraction, collusion-fraction
[vertical]                      # vertical only: scheme = "coded" (default) or "split"
```

A `[model] kind = "gbdt"` job boosts trees (`fedsilo.peers.gbdt`): horizontal only, with
`job.public-rows` (the public bound on each bank's training rows), secure aggregation on,
no `hidden`; the host turns its model into the `gbdt.*` run config
(`fedsilo.peers.job.JobConfig.boost_run_config`). Its keys are in the signed document like
every other. The boosting keys on another kind are refused.

The document states its `setup` (a document signed before the field existed has none
and means horizontal); the DP mechanism is `dp.mode` in its run config (none: local).
A transfer job must also state `model.shared-vocabulary` (the consortium's canonical
column names, which every institution's table holds under those names where it has
them) and `model.shared` (the parameter-name prefixes that are aggregated, e.g.
`["shared_input", "hidden", "head"]`; never `input`, the own-columns block); a job of
another setup must state neither. `shared-customers` (transfer only, default false)
declares that the institutions share customers: the daemons agree their holdout by PSI
before training (`roles.transfer_holdout`). All three are in the signed document. A vertical job may state
`[vertical] scheme`: `"coded"` (the default: one randomized-response code per shared
customer, `fedsilo.peers.daemon.roles.vertical`) or `"split"` (bottom models at the
feature party, the top at the label holder, DP-noised embeddings and gradients, on
Flower's Deployment Engine: `fedsilo.peers.daemon.roles.vertical_split`); the document
then carries `vertical_scheme`, covered by the signature like every other field. Any
other value, or the section on a job of another setup, is refused.
The owner signs the canonical JSON of the job document (which includes a random
128-bit nonce and the expiry) with its key; the envelope carries the document, the
signature and the owner's certificate. `verify_envelope` accepts it only if the
certificate is the consortium CA's, belongs to a manifest member with the role
'model-owner' whose name is the document's owner, the signature verifies, and the job
has not expired (nor expires implausibly far ahead). Replays (a job id or nonce seen
before) are refused by the daemon, which remembers both.

In a consortium whose crypto suite is not `standard` (gm), the envelope also carries
`suite_signature`: the same canonical JSON signed with the owner's suite signing key (SM2),
checked against the key the manifest binds to the owner. A gm job without it, or with one
that does not verify, is refused; a standard consortium refuses an envelope that has one.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.peers.errors import IdentityError, Refused, SignatureError
from fedsilo.peers.identity.consortium import Identity
from fedsilo.peers.identity.manifest import Manifest
from fedsilo.peers.identity.pki import (
    certificate_fingerprint,
    certificate_from_pem,
    certificate_name,
    certificate_pem,
    check_issued_by,
    check_name,
)
from fedsilo.peers.identity.signing import sign_document, sign_with_suite, verify_document, verify_with_suite
from fedsilo.peers.job import (
    DEFAULT_VERTICAL_SCHEME,
    SETUPS,
    VERTICAL_SCHEMES,
    DPSpec,
    JobConfig,
    SecAggSpec,
    TrainSpec,
)
from fedsilo.peers.model_spec import BOOST_KEYS, ModelSpec
from fedsilo.peers.toml_file import read_toml
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE

SCHEMA = "fedsilo.job/1"
MAX_VALIDITY_MINUTES = 7 * 24 * 60
_JOB_KEYS = {
    "id",
    "host",
    "participants",
    "min-participants",
    "source",
    "label",
    "strategy",
    "setup",
    "public-rows",
    "valid-for-minutes",
    "shared-customers",
}
_SECTIONS = {
    "job": _JOB_KEYS,
    "model": {"kind", "hidden", "shared", "shared-vocabulary", *BOOST_KEYS},
    "train": {"rounds", "local-epochs", "batch-size", "lr", "seed", "test-fraction"},
    "dp": {"mode", "epsilon", "delta", "max-grad-norm", "accountant"},
    "secagg": {"mode", "clip", "dropout-fraction", "collusion-fraction"},
    "vertical": {"scheme"},
}


@dataclass(frozen=True)
class SignedJob:
    """A verified job: the document's fields, and the envelope as received."""

    job_id: str
    owner: str
    host: str
    participants: tuple[str, ...]
    min_participants: int
    source: str
    label: str
    nonce: str
    expires: dt.datetime
    config: JobConfig
    envelope: dict[str, Any]
    setup: str = "horizontal"
    shared_customers: bool = False
    vertical_scheme: str = DEFAULT_VERTICAL_SCHEME  # a vertical job's scheme (coded or split)

    @property
    def document(self) -> dict[str, Any]:
        return self.envelope["job"]


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def job_document(path: Path, owner: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """The unsigned job document from job.toml; ConfigError naming any bad key or value."""
    document = read_toml(path, "job file")
    for section, table in document.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}] in {path}: valid sections are {', '.join(_SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] in {path} must be a table")
        unknown = sorted(set(table) - _SECTIONS[section])
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r} in [{section}] of {path}: valid keys are "
                f"{', '.join(sorted(_SECTIONS[section]))}"
            )
    job = document.get("job")
    if not job:
        raise ConfigError(f"{path} has no [job] table: give id, host, participants, source and label")
    for key in ("id", "host", "participants", "source", "label"):
        if key not in job:
            raise ConfigError(f"[job] in {path} lacks {key!r}")
    participants = job["participants"]
    if not isinstance(participants, list) or not participants or len(set(participants)) != len(participants):
        raise ConfigError("job.participants must be a non-empty list of distinct member names")
    minutes = job.get("valid-for-minutes", 60)
    if not isinstance(minutes, int) or not 1 <= minutes <= MAX_VALIDITY_MINUTES:
        raise ConfigError(f"job.valid-for-minutes must be an integer in [1, {MAX_VALIDITY_MINUTES}] (got {minutes!r})")
    run_config: dict[str, Any] = {"job.strategy": job.get("strategy", "fedavg")}
    if "public-rows" in job:  # distributed DP: the public total of training rows every peer divides by
        run_config["job.public-rows"] = job["public-rows"]
    for section in ("model", "train", "dp", "secagg"):
        for key, value in document.get(section, {}).items():
            if section == "model" and key == "hidden":
                value = ",".join(str(v) for v in value) if isinstance(value, list) else value
            elif section == "model" and key in ("shared", "shared-vocabulary"):  # lists of names
                value = _joined(value, f"model.{key}", path)
            run_config[f"{section}.{key}"] = value
    now = now or dt.datetime.now(dt.UTC)
    body = {
        "schema": SCHEMA,
        "job_id": job["id"],
        "owner": owner,
        "host": job["host"],
        "participants": list(participants),
        "min_participants": job.get("min-participants", len(participants)),
        "source": job["source"],
        "label": job["label"],
        "setup": job.get("setup", "horizontal"),
        **({"shared_customers": job["shared-customers"]} if "shared-customers" in job else {}),
        **({"vertical_scheme": document["vertical"]["scheme"]} if "scheme" in document.get("vertical", {}) else {}),
        "run_config": run_config,
        "nonce": secrets.token_hex(16),
        "created": _utc(now),
        "expires": _utc(now + dt.timedelta(minutes=minutes)),
    }
    parse_document(body)  # every value checked before anything is signed or sent
    return body


def _joined(value: Any, key: str, path: Path) -> str:
    """A job file's list of names as the comma-separated run-config string; ConfigError if it is not one."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v and "," not in v for v in value):
        raise ConfigError(f"{key} in {path} must be a list of non-empty names without commas (got {value!r})")
    return ",".join(value)


def sign_job(identity: Identity, document: dict[str, Any]) -> dict[str, Any]:
    """The envelope a model owner sends: document, signature, certificate (and, gm, the suite signature)."""
    envelope = {
        "job": document,
        "signature": sign_document(identity.key, document),
        "certificate": certificate_pem(identity.certificate),
    }
    suite = identity.manifest.suite
    if suite != DEFAULT_SUITE:
        if identity.signing_key is None:
            raise IdentityError(
                f"{identity.name} holds no {suite} signing key: the consortium must admit it with one "
                f"(`fedsilo peer init --suite {suite}`, `consortium admit --signing-key`)"
            )
        envelope["suite_signature"] = sign_with_suite(suite, identity.signing_key, document)
    return envelope


def parse_document(body: dict[str, Any]) -> tuple[JobConfig, dict[str, Any]]:
    """The JobConfig a document describes, and its checked header fields; ConfigError otherwise."""
    try:
        if body.get("schema") != SCHEMA:
            raise ConfigError(f"job schema {body.get('schema')!r} is unknown; this fedsilo reads {SCHEMA}")
        job_id = check_name(body["job_id"], "job id")
        for name in [body["owner"], body["host"], *body["participants"]]:
            check_name(name, "member name")
        check_name(body["source"], "data source name")
        minimum = body["min_participants"]
        if not isinstance(minimum, int) or not 1 <= minimum <= len(body["participants"]):
            raise ConfigError(f"job min-participants must be in [1, {len(body['participants'])}] (got {minimum!r})")
        if not isinstance(body["label"], str) or not body["label"]:
            raise ConfigError("job.label must name the 0/1 target column")
        setup = body.get("setup", "horizontal")  # absent in documents signed before setups existed
        if setup not in SETUPS:
            raise ConfigError(f"job.setup {setup!r} is unknown: valid setups are {', '.join(SETUPS)}")
        run_config = body["run_config"]
        if not isinstance(run_config, dict):
            raise ConfigError("run_config must be a table")
        config = _job_config(job_id, body["label"], len(body["participants"]), run_config)
        shared_customers = body.get("shared_customers", False)
        if not isinstance(shared_customers, bool):
            raise ConfigError(f"job.shared-customers must be true or false (got {shared_customers!r})")
        _check_transfer(setup, config, shared_customers)
        scheme = _vertical_scheme(setup, body)
        return config, {
            "job_id": job_id,
            "expires": dt.datetime.fromisoformat(body["expires"]),
            "nonce": str(body["nonce"]),
            "setup": setup,
            "shared_customers": shared_customers,
            "vertical_scheme": scheme,
        }
    except KeyError as missing:
        raise ConfigError(f"the job document lacks {missing}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the job document is malformed ({exc})") from None


def _vertical_scheme(setup: str, body: dict[str, Any]) -> str:
    """The vertical scheme a document states (coded when absent); ConfigError for an unknown one, or one
    stated by a job of another setup."""
    if "vertical_scheme" not in body:
        return DEFAULT_VERTICAL_SCHEME
    scheme = body["vertical_scheme"]
    if setup != "vertical":
        raise ConfigError(f"[vertical] scheme belongs to vertical jobs only; this job's setup is {setup}")
    if scheme not in VERTICAL_SCHEMES:
        raise ConfigError(
            f"vertical.scheme {scheme!r} is unknown: valid schemes are {', '.join(map(repr, VERTICAL_SCHEMES))}"
        )
    return str(scheme)


def _check_transfer(setup: str, config: JobConfig, shared_customers: bool) -> None:
    """ConfigError unless a transfer job states its shared vocabulary and shared parameters (and no
    other setup does): see the module docstring."""
    if setup != "transfer":
        stated = [
            name
            for name, value in (
                ("model.shared", config.shared),
                ("model.shared-vocabulary", config.vocabulary),
                ("job.shared-customers", shared_customers),
            )
            if value
        ]
        if stated:
            raise ConfigError(f"{', '.join(stated)} belong to transfer jobs only; this job's setup is {setup}")
        return
    if config.model.kind != "mlp":
        raise ConfigError(f"a transfer job trains model kind mlp (its split input block), not {config.model.kind}")
    if not config.vocabulary:
        raise ConfigError(
            "a transfer job must state model.shared-vocabulary: the canonical column names the institutions share"
        )
    if len(set(config.vocabulary)) != len(config.vocabulary) or config.label in config.vocabulary:
        raise ConfigError(
            f"model.shared-vocabulary {list(config.vocabulary)} must list distinct columns, not the label {config.label!r}"
        )
    if not config.shared:
        raise ConfigError(
            'a transfer job must state model.shared: the parameters aggregated, e.g. ["shared_input", "hidden", "head"]'
        )
    names = transfer_parameter_names(config.model.hidden)
    for prefix in config.shared:
        matched = [n for n in names if n.startswith(prefix)]
        if not matched:
            raise ConfigError(f"model.shared names {prefix!r}, which is no parameter of the model ({', '.join(names)})")
        if "input.weight" in matched:
            raise ConfigError(
                f"model.shared names {prefix!r}, which covers input.weight: the own-columns block of each "
                "institution stays private"
            )


def transfer_parameter_names(hidden: tuple[int, ...]) -> list[str]:
    """The parameter names of a transfer job's split-input MLP (`fedsilo.privacy.split_input`), without torch."""
    layers = ["shared_input", *(f"hidden{i}" for i in range(1, len(hidden))), "head"]
    return ["input.weight", *(f"{layer}.{part}" for layer in layers for part in ("weight", "bias"))]


def _job_config(job_id: str, label: str, peers: int, run_config: dict[str, Any]) -> JobConfig:
    """JobConfig from the document's run config, refusing keys JobConfig does not know."""
    known = {
        "job.strategy",
        "job.public-rows",
        "model.kind",
        "model.hidden",
        "model.shared",
        "model.shared-vocabulary",
        *(f"model.{key}" for key in BOOST_KEYS),
    } | {
        f"{prefix}.{name.replace('_', '-')}"
        for prefix, spec in (("train", TrainSpec), ("dp", DPSpec), ("secagg", SecAggSpec))
        for name in spec.__dataclass_fields__
    } - {"dp.reproducible"}  # seeded noise: research mode, never deployed
    unknown = sorted(set(run_config) - known)
    if unknown:
        raise ConfigError(f"unknown job setting {unknown[0]!r}: valid settings are {', '.join(sorted(known))}")
    for key, value in run_config.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"job setting {key} must be a number or a string (got {value!r})")
    config = JobConfig.from_run_config(
        {**run_config, "job.id": job_id, "job.peers": peers, "data.label": label, "data.encoder": ""}
    )
    if config.strategy not in ("fedavg", "fedadam"):
        raise ConfigError(f"job strategy {config.strategy!r} is unknown: valid choices are fedavg, fedadam")
    ModelSpec(config.model.kind, config.model.hidden)
    _check_boost(config, run_config)
    return config


def _check_boost(config: JobConfig, run_config: dict[str, Any]) -> None:
    """ConfigError unless the boosting keys and the gbdt kind go together, and a gbdt job's terms hold."""
    boost_keys = sorted(f"model.{key}" for key in BOOST_KEYS if f"model.{key}" in run_config)
    if config.model.kind != "gbdt":
        if boost_keys:
            raise ConfigError(
                f"{boost_keys[0]} belongs to model kind gbdt only; this job's model is {config.model.kind}"
            )
        return
    if "model.hidden" in run_config:
        raise ConfigError("model.hidden belongs to the neural models: a gbdt job states trees, depth, bins instead")
    from fedsilo.peers.gbdt.job import GBDTJob

    GBDTJob.from_run_config(config.boost_run_config())  # banks >= 2, the DP terms: what every bank will check


def verify_envelope(
    envelope: Any, manifest: Manifest, ca_cert: Any, now: dt.datetime | None = None, check_live: bool = True
) -> SignedJob:
    """Check a received envelope (see the module docstring); Refused with the reason otherwise.

    `check_live=False` checks only the owner's signature and the document's form, not
    the expiry nor that the host and participants are still peers: what a puller needs
    to learn, from a job that finished long ago, which host must have signed its model.
    """
    keys = {"job", "signature", "certificate"} | ({"suite_signature"} if manifest.suite != DEFAULT_SUITE else set())
    if not isinstance(envelope, dict) or set(envelope) != keys:
        if isinstance(envelope, dict) and set(envelope) == keys - {"suite_signature"}:
            raise Refused(
                f"the job carries no {manifest.suite}-suite signature: this consortium uses the {manifest.suite} "
                "crypto suite, the owner must sign with its signing key"
            )
        raise Refused(f"a signed job is a JSON object with exactly the keys {', '.join(sorted(keys))}")
    body = envelope["job"]
    if not isinstance(body, dict):
        raise Refused("the job document must be a JSON object")
    try:
        cert = certificate_from_pem(envelope["certificate"])
        check_issued_by(cert, ca_cert)
        signer = manifest.by_fingerprint(certificate_fingerprint(cert))
        if signer is None or signer.name != certificate_name(cert):
            raise SignatureError("the job is signed by a certificate that is not in the consortium manifest")
        if not signer.has("model-owner"):
            raise SignatureError(f"the job is signed by {signer.name}, who is not an admitted model owner")
        if body.get("owner") != signer.name:
            raise SignatureError(f"the job names owner {body.get('owner')!r} but is signed by {signer.name}")
        verify_document(cert, body, envelope["signature"], "the job")
        if manifest.suite != DEFAULT_SUITE:
            if signer.signing_key is None:
                raise SignatureError(f"{signer.name} has no {manifest.suite} signing key in the manifest")
            verify_with_suite(manifest.suite, signer.signing_key, body, envelope["suite_signature"], "the job")
        config, header = parse_document(body)
    except FedsiloError as error:
        raise Refused(str(error), status=403 if isinstance(error, IdentityError) else 400) from None
    now = now or dt.datetime.now(dt.UTC)
    if check_live and header["expires"] <= now:
        raise Refused(f"the job expired at {_utc(header['expires'])}: the owner must sign it again", status=403)
    if check_live and header["expires"] > now + dt.timedelta(minutes=MAX_VALIDITY_MINUTES):
        raise Refused("the job's expiry is more than 7 days ahead: refused", status=403)
    for name in [body["host"], *body["participants"]] if check_live else []:
        member = manifest.member(name)
        if member is None or not member.has("peer"):
            raise Refused(f"job participant or host {name!r} is not a peer of the consortium", status=400)
    return SignedJob(
        job_id=header["job_id"],
        owner=body["owner"],
        host=body["host"],
        participants=tuple(body["participants"]),
        min_participants=body["min_participants"],
        source=body["source"],
        label=body["label"],
        setup=header["setup"],
        shared_customers=header["shared_customers"],
        vertical_scheme=header["vertical_scheme"],
        nonce=header["nonce"],
        expires=header["expires"],
        config=config,
        envelope=envelope,
    )
