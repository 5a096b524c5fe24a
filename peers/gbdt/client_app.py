"""A bank's side of a boosting job over Flower messages: one ``query.gbdt`` message, one session call.

The host's ServerApp (`fedsilo.peers.gbdt.server_app`) sends every call of a multi-release
SecAgg+ session (`fedsilo.strategies.gbdt.SecureSession`) as a message (`fedsilo.peers.gbdt.wire`).
A deployed ClientApp is a new process for each message, so the bank keeps nothing in
memory: for each message it rebuilds its `GBDTBank` from its own rows (its node's data
path, the job's encoder), takes the job's terms from the run config (`GBDTJob`: the bank
derives its release plan, its SecAgg+ configurations and their noise itself), and
resumes its session from its node-local ``context.state`` (`SessionClient.state_dict`:
the session's keys and shares stay at the peer), written back after the call whether
it succeeded or was refused (a refusal ends the session for the peer, and that sticks).

A ``session_mask`` call carries the trees the host has finished and the tree being
grown: the bank recomputes its margins from the finished trees (with the job's
learning rate), its gradients, then the requested histograms or leaf totals, checks
them (`check_histogram`: NaN, infinities, the clipped range, refused naming the bank)
and masks them, with its noise share in distributed DP or its own Gaussian noise in
local DP.

Accounting. A release contains the bank's input when the host lists it among the
survivors of the unmask request; before the bank answers that request (which lets the
host decode), it appends the release's mechanism (`ReleasePlan.per_release`) to its
record of the job: the durable one in its node's state directory under the Deployment
Engine (`fedsilo.peers.client.node_state`, opened with the job's cap by its daemon), else
``context.state``. It refuses a release beyond the job's planned count, so the host
cannot make a bank spend more than its ledger reserved.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message

from fedsilo.errors import ConfigError, FedsiloError, ProtocolError
from fedsilo.peers.client import node_state
from fedsilo.peers.client.mods.secagg import round_identity
from fedsilo.peers.data.bank import load_training_arrays
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.errors import Refused
from fedsilo.peers.gbdt.bank import LEAVES, LEVEL, GBDTBank
from fedsilo.peers.gbdt.bins import layout_from_encoder
from fedsilo.peers.gbdt.job import GBDTJob
from fedsilo.peers.gbdt.wire import answer_content, read_call, tree_from_state
from fedsilo.peers.job import JobConfig
from fedsilo.privacy.accounting import Mechanism
from fedsilo.privacy.gbdt import ReleasePlan
from fedsilo.privacy.secagg.session import ReleaseRequest
from fedsilo.strategies.gbdt.layout import BinLayout
from fedsilo.strategies.gbdt.tree import Tree

STATE_KEY = "fedsilo.gbdt.client"
BANKS_KEPT = 64  # binned tables a worker process keeps (`binned_rows`)
ERROR_CODE_GBDT = 4003

Paths = Callable[[JobConfig, Context], tuple[str, str]]


def answer(msg: Message, context: Context, paths: Paths) -> Message:
    """This bank's answer to one session call, or an error reply naming what it refused."""
    try:
        job = JobConfig.from_run_config(context.run_config)
        terms = GBDTJob.from_run_config(context.run_config)
        if terms.session != job.job_id:
            raise ConfigError(f"the boosting terms name job {terms.session!r}, the run is job {job.job_id!r}")
        if context.node_config.get("state-dir"):
            check_accepted_terms(terms, context)
        method, args, body = read_call(msg.content)
    except FedsiloError as error:
        return _refuse(msg, error)
    bank = plan = None
    try:
        bank, plan = _bank(job, terms, context, paths)
        _resume(bank, context, job)
        if method == "session_mask":
            _prepare_release(bank, terms, body, args[0], plan, context, job)
        result = getattr(bank, method)(*args)
        if method == "session_unmask":  # the session accepted the request: record it before the answer leaves
            _record_release(bank, args, plan, context, job, terms)
    except FedsiloError as error:
        return _refuse(msg, error)
    finally:
        if bank is not None and bank.session is not None:
            _save(bank, context, job)
    return Message(answer_content(method, result), reply_to=msg)


def check_accepted_terms(terms: GBDTJob, context: Context) -> None:
    """A deployed bank's check of the host's run config against the terms its daemon accepted (node config
    ``gbdt-terms``, from the owner-signed job): every term equal, and no more banks than the job's participants
    (more would shrink each bank's noise share below what the plan needs). ConfigError naming the first change.

    The node config carries them as the hex of their JSON (`fedsilo.peers.deployment.join`)."""
    raw = str(context.node_config.get("gbdt-terms") or "")
    try:
        accepted = json.loads(bytes.fromhex(raw)) if raw else None
    except (ValueError, UnicodeDecodeError):
        accepted = None
    if not isinstance(accepted, dict):
        raise ConfigError("this peer's daemon pinned no boosting terms for the job (node config gbdt-terms): refused")
    offered = terms.to_run_config()
    for key, value in sorted(accepted.items()):
        if key == "gbdt.banks":
            if not isinstance(value, int) or offered[key] > value:
                raise ConfigError(f"the host's run config says {offered[key]} banks, the signed job has {value}")
        elif offered.get(key) != value:
            raise ConfigError(
                f"the host's run config says {key} = {offered.get(key)!r}, the signed job this peer accepted "
                f"says {value!r}: refused"
            )


def _refuse(msg: Message, error: FedsiloError) -> Message:
    return Message(Error(code=ERROR_CODE_GBDT, reason=f"{error.__class__.__name__}: {error}"), reply_to=msg)


def _bank(job: JobConfig, terms: GBDTJob, context: Context, paths: Paths) -> tuple[GBDTBank, ReleasePlan | None]:
    """This bank's rows binned by the job's layout, with its SecAgg+ identity and the job's configurations."""
    data_path, encoder_path = paths(job, context)
    layout, bins, labels = binned_rows(
        data_path,
        _stamp(data_path),
        encoder_path,
        _stamp(encoder_path),
        job.train.test_fraction,
        job.train.seed,
        terms.bins,
    )
    name = str(context.node_config.get("bank-name") or f"node {context.node_id}")
    if len(bins) > terms.row_bound:
        raise Refused(
            f"bank {name} has {len(bins)} training rows, above the job's gbdt.row-bound {terms.row_bound}: "
            "the noise is calibrated for at most that many; the job owner must raise the bound"
        )
    plan = terms.plan()
    signer, verifier = round_identity(context)
    bank = GBDTBank(
        name,
        int(context.node_id),
        bins,
        labels,
        layout,
        terms.row_bound,
        secagg=terms.configs(layout, plan),
        signer=signer,
        verifier=verifier,
        local_sigma=terms.local_sigma(layout, plan),
    )
    return bank, plan


def _stamp(path: str) -> tuple[int, int]:
    """What identifies a file's version for the cache: its modification time and size (missing: read fails later)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=BANKS_KEPT)
def binned_rows(
    data_path: str,
    data_stamp: tuple[int, int],
    encoder_path: str,
    encoder_stamp: tuple[int, int],
    test_fraction: float,
    seed: int,
    bins: int,
) -> tuple[BinLayout, np.ndarray, np.ndarray]:
    """(layout, binned training rows, labels) of a bank's table, read-only; cached per process.

    Every session call needs them: a deployed ClientApp is a new process per message and reads the
    table each time, but a Simulation Engine worker (a Ray actor) serves many calls of its banks, and
    re-reading, encoding and binning the table was most of a call's time (bench/gbdt_apps.py). The
    key holds each file's modification time and size (``_stamp``), so a changed table or encoder is
    read again."""
    del data_stamp, encoder_stamp  # only part of the key
    encoder = TabularEncoder.from_json(Path(encoder_path).read_text())
    x_train, y_train = load_training_arrays(data_path, encoder_path, test_fraction, seed)
    layout = layout_from_encoder(encoder, bins)
    binned = layout.bin_rows(x_train.astype(np.float64))
    for array in (binned, y_train):
        array.flags.writeable = False
    return layout, binned, y_train


def _resume(bank: GBDTBank, context: Context, job: JobConfig) -> None:
    record = context.state.get(STATE_KEY)
    if isinstance(record, ConfigRecord) and record.get("job") == job.job_id:
        assert bank.session is not None
        bank.session.load_state_dict(json.loads(str(record["session"])))


def _save(bank: GBDTBank, context: Context, job: JobConfig) -> None:
    assert bank.session is not None
    context.state[STATE_KEY] = ConfigRecord({"job": job.job_id, "session": json.dumps(bank.session.state_dict())})


def _prepare_release(
    bank: GBDTBank,
    terms: GBDTJob,
    body: dict,
    request: ReleaseRequest,
    plan: ReleasePlan | None,
    context: Context,
    job: JobConfig,
) -> None:
    """Margins from the host's finished trees, this tree's gradients, and the requested release."""
    assert bank.session is not None
    spent = recorded_spent(context, job, terms)  # a deployed peer's record: the accepted terms, the job not over
    if plan is not None and len(spent) >= plan.releases:
        raise Refused(
            f"bank {bank.name} has taken part in the {plan.releases} releases its ledger reserved for "
            f"job {job.job_id}: refusing release {request.release}"
        )
    bank.session.expect_release(request)  # a replayed or out-of-order release is refused before any work
    kind = body.get("kind")
    if kind not in (LEVEL, LEAVES) or kind != request.purpose:
        raise ProtocolError(f"bank {bank.name}: release kind {kind!r} is not its purpose {request.purpose!r}")
    try:
        finished = [Tree.from_dict(t, len(bank.layout.groups)) for t in body["model"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bank {bank.name}: malformed finished trees ({exc})") from None
    if len(finished) > terms.trees:
        raise ProtocolError(f"bank {bank.name}: the host sent {len(finished)} trees, the job has {terms.trees}")
    tree = tree_from_state(body.get("tree"), bank.layout)
    for done in finished:
        bank.finish_tree(done, terms.learning_rate)
    bank.start_tree()
    bank.request(str(kind), tree)


def _durable(context: Context, job: JobConfig, terms: GBDTJob) -> node_state.JobPrivacy:
    """This peer's durable record of the job, checked against the terms it accepted (caller holds the lock)."""
    record = node_state.read_privacy(_state_dir(context), job.job_id)
    if record is None or record.cap is None:
        raise ConfigError(
            f"this peer has no privacy record with the cap of job {job.job_id}: its daemon opens one before joining"
        )
    if record.finished:
        raise Refused(f"job {job.job_id} has ended at this peer: it takes part in no further release")
    if terms.dp_mode != "off" and record.cap != node_state.PrivacyCap(terms.epsilon, terms.delta, terms.accountant):
        raise Refused(
            f"the run config's privacy terms differ from the ones this peer accepted for job {job.job_id} "
            f"({record.cap}): refused"
        )
    return record


def _state_dir(context: Context) -> Path:
    return Path(str(context.node_config["state-dir"]))


def recorded_spent(context: Context, job: JobConfig, terms: GBDTJob) -> tuple[Mechanism, ...]:
    """The releases this bank has recorded as spent in the job: its durable record (deployed), else ``context.state``."""
    if context.node_config.get("state-dir"):
        with node_state.job_lock(_state_dir(context), job.job_id):
            return _durable(context, job, terms).spent
    raw = context.state.get(STATE_KEY + ".spent")
    if not isinstance(raw, ConfigRecord) or raw.get("job") != job.job_id:
        return ()
    return tuple(Mechanism.from_dict(m) for m in json.loads(str(raw["spent"])))


def _record_release(
    bank: GBDTBank, args: tuple, plan: ReleasePlan | None, context: Context, job: JobConfig, terms: GBDTJob
) -> None:
    """Before answering an unmask request that lists this bank as a survivor, record the release as spent."""
    _, _, request = args
    if plan is None or bank.node_id not in request.survivors:
        return
    if context.node_config.get("state-dir"):
        with node_state.job_lock(_state_dir(context), job.job_id):
            record = _durable(context, job, terms)
            node_state.write_privacy(_state_dir(context), replace(record, spent=(*record.spent, plan.per_release)))
        return
    spent = (*recorded_spent(context, job, terms), plan.per_release)
    context.state[STATE_KEY + ".spent"] = ConfigRecord(
        {"job": job.job_id, "spent": json.dumps([m.to_dict() for m in spent])}
    )
