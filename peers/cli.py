"""The peer network's commands: consortium, peer, job, model, audit.

    fedsilo consortium init --dir DIR --name NAME         root CA + empty signed manifest
    fedsilo consortium admit REQUEST --dir DIR ...        sign a member's request, add it to the manifest
    fedsilo consortium remove NAME --dir DIR              take a member out of the manifest, revoke its certificate
    fedsilo consortium publish --dir DIR --peer URL       hand the latest manifest and CRL to one member daemon
    fedsilo peer init --name NAME --dir DIR               a member's key (0600) and certificate request
    fedsilo peer start --config peer.toml [--background]  run the peer daemon (mutual TLS); PID file, log
    fedsilo peer stop --config peer.toml                  stop it (SIGTERM, wait)
    fedsilo peer status --peer URL [--json]               a peer's jobs, budgets, list quotas, reachable members
    fedsilo peer budget --peer URL                        a peer's remaining privacy budget
    fedsilo peer check-noise --job job.toml --data FILE   check this peer's DP noise (peers/check_noise_cli.py)
    fedsilo job submit job.toml --peer URL                sign a job as a model owner and submit it
    fedsilo job show|list|cancel ... --peer URL
    fedsilo model pull JOB --peer URL --out DIR           download, verify, print the card
    fedsilo audit verify|show --config peer.toml          check / list a peer's audit log
    fedsilo audit export --config peer.toml [--out FILE]  the running daemon's log, as its operator
    fedsilo psi --list FILE --with PEER [--mode MODE]     private set intersection with a peer's list
    fedsilo query ID... --list NAME --at PEER             anonymous query of a peer's list (labels)

`register(sub)` adds them all; simulations/cli.py calls it once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedsilo.peers import check_noise_cli
from fedsilo.peers.errors import IdentityError
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, get_suite

IDENTITY_HELP = "your identity directory: peer.key, peer.pem, ca.pem, manifest.json (default ./identity)"


def register(sub: argparse._SubParsersAction) -> None:
    _consortium(sub)
    _peer(sub)
    _job(sub)
    _model(sub)
    _audit(sub)
    _risk_lists(sub)


# -- consortium ------------------------------------------------------------------------
def _consortium(sub: argparse._SubParsersAction) -> None:
    family = sub.add_parser("consortium", help="create a consortium's root CA, admit and remove members")
    commands = family.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = commands.add_parser("init", help="create the root CA and an empty signed manifest")
    init.add_argument("--dir", required=True, type=Path, help="new directory for ca.key, ca.pem, manifest.json")
    init.add_argument("--name", required=True, help="the consortium's name (lower-case, digits, '-')")
    init.add_argument(
        "--suite",
        choices=("standard", "gm"),
        default="standard",
        help="crypto suite recorded in the signed manifest: standard (ECDSA, X25519, AES-GCM, SHA-256) or gm "
        "(SM2, SM3, SM4; docs/national-crypto.md). Default standard",
    )
    init.set_defaults(handler=consortium_init)
    admit = commands.add_parser("admit", help="sign a member's certificate request and add it to the manifest")
    admit.add_argument("request", type=Path, help="the member's peer.csr (from `fedsilo peer init`)")
    admit.add_argument("--dir", required=True, type=Path, help="the consortium directory")
    admit.add_argument("--roles", default="peer", help="comma-separated: peer, model-owner (default peer)")
    admit.add_argument("--address", help="https://HOST:PORT where the peer's daemon listens (needed for role peer)")
    admit.add_argument("--out", type=Path, help="where to write the certificate (default: peer.pem next to REQUEST)")
    admit.add_argument(
        "--signing-key",
        type=Path,
        help="the member's signing.pub (`fedsilo peer init --suite`); required by a gm consortium",
    )
    admit.set_defaults(handler=consortium_admit)
    remove = commands.add_parser(
        "remove", help="take a member out of the manifest and revoke its certificate (a new signed version and CRL)"
    )
    remove.add_argument("name", help="the member's name")
    remove.add_argument("--dir", required=True, type=Path, help="the consortium directory")
    remove.add_argument(
        "--certificate",
        type=Path,
        help="the member's peer.pem, needed only for a member admitted before the CA kept copies in DIR/issued/",
    )
    remove.set_defaults(handler=consortium_remove)
    publish = commands.add_parser(
        "publish",
        help="hand the consortium's latest signed manifest and CRL to one member daemon; the others fetch it from there",
    )
    publish.add_argument("--dir", required=True, type=Path, help="the consortium directory")
    publish.add_argument("--peer", required=True, help="https://HOST:PORT of any member daemon")
    publish.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
    publish.set_defaults(handler=consortium_publish)


def consortium_init(args: argparse.Namespace) -> int:
    from fedsilo.peers.identity.consortium import init_consortium
    from fedsilo.peers.identity.manifest import CA_SIGNING_KEY, CA_SIGNING_PUB

    manifest = init_consortium(args.dir, args.name, args.suite)
    print(
        f"consortium {manifest.consortium} ({manifest.suite} crypto suite): root CA {args.dir / 'ca.pem'} (key {args.dir / 'ca.key'}, mode 0600), "
        f"manifest {args.dir / 'manifest.json'} (version {manifest.version}, no members)"
    )
    if manifest.suite != DEFAULT_SUITE:
        print(
            f"the CA's {manifest.suite} signing key {args.dir / CA_SIGNING_KEY} (mode 0600) also signs the manifest; "
            f"its public key {args.dir / CA_SIGNING_PUB} is a trust anchor: copy it with ca.pem to every member"
        )
    return 0


def consortium_admit(args: argparse.Namespace) -> int:
    from fedsilo.peers.identity.consortium import admit
    from fedsilo.peers.identity.manifest import CA_SIGNING_PUB

    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    out = args.out or args.request.with_name("peer.pem")
    member = admit(args.dir, args.request, roles, args.address, out, signing_key=args.signing_key)
    where = f" at {member.address}" if member.address else ""
    anchor = args.dir / CA_SIGNING_PUB
    with_anchor = f"; {member.name} also needs ca.pem and {anchor}" if anchor.exists() else ""
    print(
        f"admitted {member.name} ({', '.join(member.roles)}){where}; certificate {out} "
        f"({member.fingerprint[:23]}…); manifest {args.dir / 'manifest.json'} updated: "
        f"give every member its new copy{with_anchor}"
    )
    return 0


def consortium_remove(args: argparse.Namespace) -> int:
    from fedsilo.peers.identity.consortium import remove

    manifest = remove(args.dir, args.name, args.certificate)
    print(
        f"removed {args.name}; manifest {args.dir / 'manifest.json'} is now version {manifest.version} "
        f"({len(manifest.members)} members) and {args.dir / 'crl.pem'} revokes its certificate. Publish it to any "
        f"one member daemon (`fedsilo consortium publish --dir {args.dir} --peer URL --identity DIR`, DIR: a "
        "member's identity): the other daemons fetch it from there within their manifest-poll-seconds, and each "
        "then refuses the removed member's certificate in the TLS handshake and cancels its jobs with it"
    )
    return 0


def consortium_publish(args: argparse.Namespace) -> int:
    from fedsilo.peers.identity.consortium import publication

    published = publication(args.dir)
    version = published["manifest"]["manifest"]["version"]
    answer = _call(args.identity, "POST", f"{args.peer.rstrip('/')}/v1/manifest", published)
    state = "took it" if answer["updated"] else "already held it"
    print(
        f"published manifest version {version} with its revocation list: {args.peer} {state} (it holds version "
        f"{answer['version']}); the other member daemons fetch it from there within their manifest-poll-seconds"
    )
    return 0


# -- peer ------------------------------------------------------------------------------
def _peer(sub: argparse._SubParsersAction) -> None:
    family = sub.add_parser("peer", help="a member's keys, its daemon, and questions to a peer")
    commands = family.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = commands.add_parser("init", help="create a key (mode 0600) and a certificate request")
    init.add_argument("--name", required=True, help="the member's name (lower-case, digits, '-')")
    init.add_argument("--dir", type=Path, default=Path("identity"), help="new identity directory (default ./identity)")
    init.add_argument(
        "--suite",
        choices=("standard", "gm"),
        help="also create a signing key of this crypto suite (signing.key, signing.pub); a gm consortium needs one",
    )
    init.set_defaults(handler=peer_init)
    start = commands.add_parser("start", help="run the peer daemon (HTTPS with mutual TLS) until interrupted")
    start.add_argument("--config", required=True, help="peer.toml (identity, state, policy, data sources)")
    start.add_argument(
        "--background",
        "--detach",
        action="store_true",
        help="run detached, output appended to STATE/peer.log, PID in STATE/peer.pid; return once it listens",
    )
    start.set_defaults(handler=peer_start)
    stop = commands.add_parser("stop", help="stop the daemon of a peer.toml (SIGTERM, then wait for it to exit)")
    stop.add_argument("--config", required=True, help="the peer.toml the daemon was started with")
    stop.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it to exit (default 120)")
    stop.set_defaults(handler=peer_stop)
    for name, what in (
        ("status", "a peer's jobs and their state, budgets left, your list quotas, the members it reaches"),
        ("budget", "a peer's remaining privacy budget"),
    ):
        command = commands.add_parser(name, help=what)
        command.add_argument("--peer", required=True, help="the peer's https://HOST:PORT")
        command.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
        command.set_defaults(handler=peer_query, path=f"/v1/{name}")
        if name == "status":
            command.add_argument("--json", action="store_true", help="print the peer's JSON answer as it is")
            command.set_defaults(handler=peer_status)
    check_noise_cli.register(commands)


def peer_init(args: argparse.Namespace) -> int:
    from fedsilo.peers.identity.consortium import init_peer

    request = init_peer(args.dir, args.name, args.suite)
    signing = f", {args.suite} signing key {args.dir / 'signing.key'} (mode 0600)" if args.suite else ""
    also = f" with {args.dir / 'signing.pub'}" if args.suite else ""
    print(
        f"{args.name}: key {args.dir / 'peer.key'} (mode 0600, keep it here){signing}, request {request}: "
        f"send the request{also} to the consortium (`fedsilo consortium admit`)"
    )
    return 0


def peer_start(args: argparse.Namespace) -> int:
    if args.background:
        from fedsilo.peers.daemon.background import LOG_FILE, start_background
        from fedsilo.peers.daemon.config import load_config

        config = load_config(args.config)  # a bad peer.toml is said here, not only in the log
        running = start_background(Path(args.config), config.state_dir)
        print(
            f"peer daemon started in the background (pid {running.pid}); log {config.state_dir / LOG_FILE}; "
            f"stop it with `fedsilo peer stop --config {args.config}`"
        )
        return 0
    from fedsilo.peers.daemon.app import run_daemon

    return run_daemon(args.config)


def peer_stop(args: argparse.Namespace) -> int:
    from fedsilo.peers.daemon.background import stop
    from fedsilo.peers.daemon.config import load_config

    running, seconds = stop(Path(args.config), load_config(args.config).state_dir, args.timeout)
    print(f"peer daemon (pid {running.pid}) stopped after {seconds:.1f} s")
    return 0


def peer_query(args: argparse.Namespace) -> int:
    print(json.dumps(_call(args.identity, "GET", f"{args.peer.rstrip('/')}{args.path}"), indent=2))
    return 0


def peer_status(args: argparse.Namespace) -> int:
    status = _call(args.identity, "GET", f"{args.peer.rstrip('/')}/v1/status")
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def format_status(status: dict[str, Any]) -> str:
    """`fedsilo peer status` as text: what the peer shows its caller in GET /v1/status."""
    lines = [
        f"peer {status['peer']} of consortium {status['consortium']} (manifest v{status['manifest_version']}), "
        f"as seen by {status['you']}",
        f"jobs ({len(status['job_list'])}):",
    ]
    lines += [
        f"  {j['job_id']:<24} {j['state']:<10} {j['setup']}/{j['dp']} DP, host {j['host']}"
        + (f": {j['detail']}" if j["detail"] else "")
        for j in status["job_list"]
    ] or ["  none you take part in"]
    lines.append("budgets:")
    lines += [
        f"  {b['source']:<24} ε left {b['remaining_epsilon']:.4f} of {b['epsilon_budget']:g} "
        f"(spent {b['spent_epsilon']:.4f}, reserved {b['reserved_epsilon']:.4f}, δ = {b['delta']:g})"
        for b in status["budgets"]
    ] or ["  none you may see"]
    lines.append("lists:")
    lines += [
        f"  {q.get('member', status['you'])}: {q['name']:<18} "
        f"PSI left {'-' if q['psi_left'] is None else q['psi_left']}, "
        f"queries left {'-' if q['query_left'] is None else q['query_left']} per {q['quota_window']:g} s"
        for q in status["lists"]
    ] or ["  none shared with you"]
    lines.append("members:")
    lines += [
        f"  {m['member']:<24} {'reachable' if m['reachable'] else 'UNREACHABLE':<12} {m['detail']}"
        for m in status["members"]
    ] or ["  no other member listens"]
    audit = status.get("audit")
    if audit is not None:  # the status page's audit section; its entries: GET /v1/status.html or --json
        whose = "(every actor)" if status["you"] == "operator" else "of yours"
        chain = "hash chain verified" if audit["chain_ok"] else "hash chain BROKEN"
        lines.append(f"audit: {chain}; {len(audit['entries'])} recent entries {whose}")
    return "\n".join(lines)


def _call(identity_dir: Path, method: str, url: str, body: Any = None) -> Any:
    from fedsilo.peers.daemon.client import PeerClient
    from fedsilo.peers.identity.consortium import Identity

    identity = Identity.load(identity_dir)

    async def run() -> Any:
        async with PeerClient(identity) as client:
            return await client.call(method, url, body)

    import asyncio  # here, not at the top: `fedsilo --help` should not pay for it

    return asyncio.run(run())


# -- job -------------------------------------------------------------------------------
def _job(sub: argparse._SubParsersAction) -> None:
    family = sub.add_parser("job", help="submit, follow and cancel training jobs (model owners)")
    commands = family.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = commands.add_parser("submit", help="sign job.toml with your key and submit it to its host")
    submit.add_argument("file", type=Path, help="job.toml (see docs/consortium.md)")
    submit.add_argument("--peer", required=True, help="the host's https://HOST:PORT")
    submit.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
    submit.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="wait this long for the participants' decisions (default 30; 0: do not wait)",
    )
    submit.set_defaults(handler=job_submit)
    for name, what in (("show", "a job's state and its participants' decisions"), ("cancel", "cancel a job")):
        command = commands.add_parser(name, help=what)
        command.add_argument("job_id", metavar="JOB")
        command.add_argument("--peer", required=True, help="the peer's https://HOST:PORT")
        command.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
        command.set_defaults(handler=job_show if name == "show" else job_cancel)
    listing = commands.add_parser("list", help="the jobs a peer hosts or takes part in")
    listing.add_argument("--peer", required=True, help="the peer's https://HOST:PORT")
    listing.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
    listing.set_defaults(handler=job_list)


def job_submit(args: argparse.Namespace) -> int:
    import time

    from fedsilo.peers.daemon.signed_job import job_document, sign_job
    from fedsilo.peers.identity.consortium import Identity

    identity = Identity.load(args.identity)
    if not identity.manifest.member(identity.name).has("model-owner"):
        raise IdentityError(
            f"{identity.name} is not a model owner: the consortium must admit it with --roles model-owner"
        )
    envelope = sign_job(identity, job_document(args.file, identity.name))
    base = args.peer.rstrip("/")
    view = _call(args.identity, "POST", f"{base}/v1/jobs", envelope)
    job_id = view["job_id"]
    print(f"job {job_id} signed by {identity.name} and submitted to {view['host']}: {view['state']}")
    deadline = time.monotonic() + args.wait
    while view["state"] == "proposing" and time.monotonic() < deadline:
        time.sleep(0.5)
        view = _call(args.identity, "GET", f"{base}/v1/jobs/{job_id}")
    _print_job(view)
    return 0


def _print_job(view: dict[str, Any]) -> None:
    print(f"job {view['job_id']}: {view['state']}" + (f" ({view['detail']})" if view.get("detail") else ""))
    for participant in view.get("participants", []):
        reason = f": {participant['reason']}" if participant["reason"] else ""
        print(f"  {participant['peer']:<16} {participant['decision']}{reason}")


def job_show(args: argparse.Namespace) -> int:
    _print_job(_call(args.identity, "GET", f"{args.peer.rstrip('/')}/v1/jobs/{args.job_id}"))
    return 0


def job_cancel(args: argparse.Namespace) -> int:
    _print_job(_call(args.identity, "POST", f"{args.peer.rstrip('/')}/v1/jobs/{args.job_id}/cancel", {}))
    return 0


def job_list(args: argparse.Namespace) -> int:
    for job in _call(args.identity, "GET", f"{args.peer.rstrip('/')}/v1/jobs")["jobs"]:
        print(
            f"{job['job_id']:<24} {job['state']:<12} owner {job['owner']:<14} host {job['host']:<14} "
            f"source {job['source'] or '-'}"
        )
    return 0


# -- model -----------------------------------------------------------------------------
def _model(sub: argparse._SubParsersAction) -> None:
    family = sub.add_parser("model", help="pull and verify a job's signed model")
    commands = family.add_subparsers(dest="action", required=True, metavar="ACTION")
    pull = commands.add_parser("pull", help="download a job's model, verify signature and hashes, print its card")
    pull.add_argument("job_id", metavar="JOB")
    pull.add_argument("--peer", required=True, help="a peer that holds the model: https://HOST:PORT")
    pull.add_argument("--out", required=True, type=Path, help="new directory for the model files")
    pull.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
    pull.set_defaults(handler=model_pull)


def model_pull(args: argparse.Namespace) -> int:
    from fedsilo.peers.daemon.client import PeerClient
    from fedsilo.peers.daemon.model_pull import pull_model
    from fedsilo.peers.identity.consortium import Identity

    identity = Identity.load(args.identity)

    async def run() -> dict[str, Any]:
        async with PeerClient(identity, timeout=600) as client:
            return await pull_model(client, args.peer, args.job_id, args.out)

    import asyncio

    card = asyncio.run(run())
    _print_card(card)
    algorithm = get_suite(identity.manifest.suite).hash_algorithm
    print(
        f"verified: signed by {card['signer']} (consortium CA, manifest), {len(card['artifacts'])} file(s) match "
        f"their {algorithm}; model {args.job_id} version {card['version']} in {args.out} "
        f"(full card: {args.out / 'model_card.json'})"
    )
    return 0


def _print_card(card: dict[str, Any]) -> None:
    job, metrics = card["job"], card["metrics"]
    if card.get("setup") == "vertical":
        print(
            f"model {card['job_id']} v{card['version']}: vertical ({card['scheme']} scheme), {job['model']['kind']} "
            f"{job['model']['hidden']} at the label holder, {job['rounds']} epochs; "
            + (
                f"each party's noised embeddings or gradients at ε = {job['dp']['epsilon']:g}, δ = "
                f"{job['dp']['delta']:g} (the feature party's bottom model stays with it)"
                if card["scheme"] == "split"
                else f"the feature party's codes by randomized response at ε = {job['dp']['epsilon']:g}"
            )
        )
    else:
        print(
            f"model {card['job_id']} v{card['version']}: {job['model']['kind']} {job['model']['hidden']}, "
            f"{job['strategy']}, {job['rounds']} rounds, DP {job['dp']['mode']} (target ε = "
            f"{job['dp']['epsilon']:g}, δ = {job['dp']['delta']:g}), secure aggregation {job['secure_aggregation']}"
        )
    print(f"owner {job['owner']}, host {job['host']}, created {card['created']}")
    transfer = card.get("transfer")
    if isinstance(transfer, dict):
        print(
            f"transfer: this model is the shared part ({', '.join(transfer['shared_parameters'])}) over the shared "
            f"vocabulary ({', '.join(transfer['shared_vocabulary'])}); each participant's own-columns block and "
            "encoder stayed with it"
        )
    if card.get("setup") == "vertical" and metrics.get("final_auc") is not None:
        print(
            f"ROC-AUC on the {metrics['test_customers_shared']} held-out shared customers: {metrics['final_auc']:.4f}"
        )
    elif metrics.get("final_auc") is not None:
        print(f"held-out ROC-AUC after the last round (example-weighted over peers): {metrics['final_auc']:.4f}")
    for peer in card["participants"]:
        spent = (
            f"ε = {peer['epsilon']:.4f}, δ = {peer['delta']:g}" if peer["reported"] else "did not report its spending"
        )
        print(f"  {peer['peer']:<14} {spent}, {peer['rows']} rows, data {peer['data_fingerprint'][:23]}…")
    for name, facts in card["artifacts"].items():
        label, digest = next(((k, v) for k, v in facts.items() if k != "bytes"), ("hash", "?"))
        print(f"  {name:<18} {facts['bytes']:>10} bytes  {label} {str(digest)[:16]}…")


# -- audit -----------------------------------------------------------------------------
def _audit(sub: argparse._SubParsersAction) -> None:
    family = sub.add_parser("audit", help="check and read a peer's hash-chained audit log (on the peer's machine)")
    commands = family.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = commands.add_parser("verify", help="check the hash chain; names the first broken entry")
    show = commands.add_parser("show", help="who did what to which job and data source, when")
    for command in (verify, show):
        command.add_argument("--config", required=True, help="the peer's peer.toml (its state directory is read)")
    show.add_argument("--job", help="only entries of this job")
    show.add_argument("--source", help="only entries of this data source")
    verify.set_defaults(handler=audit_verify)
    show.set_defaults(handler=audit_show)
    export = commands.add_parser(
        "export",
        help="the running daemon's log and chain check as JSON, over its admin socket (this peer's operators only)",
    )
    export.add_argument("--config", required=True, help="the peer's peer.toml (its state directory holds the socket)")
    export.add_argument("--since", type=int, default=0, metavar="SEQ", help="only entries after this one (default 0)")
    export.add_argument("--out", type=Path, help="write the JSON to this new file (default: standard output)")
    export.set_defaults(handler=audit_export)


def _audit_log(config_path: str) -> Any:
    from fedsilo.peers.daemon.audit_log import AuditLog
    from fedsilo.peers.daemon.config import load_config

    path = load_config(config_path).state_dir / "state.sqlite"
    if not path.is_file():
        raise IdentityError(f"{path} does not exist: the peer has not run yet")
    import sqlite3

    return AuditLog(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def audit_verify(args: argparse.Namespace) -> int:
    audit = _audit_log(args.config)
    check = audit.verify()
    if check.ok:
        algorithm = "" if audit.suite == DEFAULT_SUITE else f" with {get_suite(audit.suite).hash_algorithm}"
        print(f"audit log intact: {check.entries} entries, each hashing the one before{algorithm}")
        return 0
    print(f"audit log BROKEN at entry {check.first_broken}: {check.reason}")
    return 1


def audit_show(args: argparse.Namespace) -> int:
    for entry in _audit_log(args.config).entries():
        if (args.job and entry.job != args.job) or (args.source and entry.source != args.source):
            continue
        target = " ".join(
            x for x in (f"job={entry.job}" if entry.job else "", f"source={entry.source}" if entry.source else "") if x
        )
        print(
            f"{entry.seq:>4} {entry.time} {entry.actor:<14} {entry.action:<16} {entry.outcome:<8} {target}"
            + (f"  {entry.detail}" if entry.detail else "")
        )
    return 0


def audit_export(args: argparse.Namespace) -> int:
    """GET /v1/audit over the admin socket: only whoever can open it (the daemon's account) reads the log."""
    import asyncio

    from fedsilo.errors import ConfigError
    from fedsilo.peers.daemon.app import admin_socket
    from fedsilo.peers.daemon.client import admin_call
    from fedsilo.peers.daemon.config import load_config

    if args.since < 0:
        raise ConfigError(f"--since must be a non-negative entry number (got {args.since})")
    if args.out is not None and args.out.exists():
        raise ConfigError(f"{args.out} exists: give a new file for the export")
    log = asyncio.run(admin_call(admin_socket(load_config(args.config).state_dir), f"/v1/audit?since={args.since}"))
    text = json.dumps(log, indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")
        print(
            f"{len(log['entries'])} entries of {log['peer']}'s audit log written to {args.out}; chain "
            + ("intact" if log["chain_ok"] else f"BROKEN at entry {log['first_broken']}")
        )
    return 0 if log["chain_ok"] else 1


# -- psi, query ------------------------------------------------------------------------
def _risk_lists(sub: argparse._SubParsersAction) -> None:
    psi = sub.add_parser(
        "psi", help="which of your identifiers are on a peer's shared list (PSI: neither side sees the other's list)"
    )
    psi.add_argument(
        "--list",
        required=True,
        type=Path,
        dest="file",
        help="your identifiers: one per line, or a CSV with --id-column",
    )
    psi.add_argument("--id-column", help="the identifier column when --list is a CSV with a header")
    psi.add_argument("--with", required=True, dest="peer", help="the list holder: a member name or https://HOST:PORT")
    psi.add_argument("--their-list", help="the holder's list (default: the one it shares with you for PSI)")
    psi.add_argument(
        "--mode",
        default="to-me",
        choices=("to-me", "both", "count"),
        help="to-me: you learn the shared identifiers; both: the holder learns them too; count: you "
        "learn only how many (default to-me)",
    )
    psi.add_argument(
        "--protocol",
        default="auto",
        choices=("auto", "dh", "ot"),
        help="dh: Diffie-Hellman PSI (one round trip); ot: OT-extension PSI (KKRT16, far less CPU from about "
        "1,000 identifiers, not for count mode); auto: ot when the holder offers it and it is faster, else dh "
        "(default auto)",
    )
    psi.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
    psi.set_defaults(handler=psi_run)
    query = sub.add_parser(
        "query",
        help="look identifiers up in a peer's list without telling it which (labels of listed ones, under your quota)",
    )
    query.add_argument("ids", nargs="*", metavar="ID", help="identifiers to look up")
    query.add_argument("--file", type=Path, help="more identifiers, one per line (or a CSV with --id-column)")
    query.add_argument("--id-column", help="the identifier column when --file is a CSV with a header")
    query.add_argument("--list", required=True, dest="list_name", help="the holder's list name")
    query.add_argument("--at", required=True, dest="peer", help="the list holder: a member name or https://HOST:PORT")
    query.add_argument("--identity", type=Path, default=Path("identity"), help=IDENTITY_HELP)
    query.set_defaults(handler=query_run)


def _read_ids(path: Path, column: str | None) -> list[str]:
    from fedsilo.errors import DataError
    from fedsilo.peers.daemon.shared_lists import read_column

    if not path.is_file():
        raise DataError(f"{path} does not exist: give a file of identifiers")
    if column:
        return list(read_column(path, column))
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def psi_run(args: argparse.Namespace) -> int:
    from fedsilo.peers.risk_lists import psi_with

    ids = _read_ids(args.file, args.id_column)
    outcome = psi_with(args.identity, args.peer, ids, args.mode, args.their_list, args.protocol)
    print(
        f"PSI ({outcome.mode}, protocol {outcome.protocol}) with {outcome.peer}'s list {outcome.list_name}: {outcome.cardinality} of your "
        f"{outcome.own_size} distinct identifiers are on it (it holds {outcome.peer_size})"
    )
    for identifier in outcome.shared or []:
        print(identifier)
    return 0


def query_run(args: argparse.Namespace) -> int:
    from fedsilo.errors import ConfigError
    from fedsilo.peers.risk_lists import query_at

    ids = list(args.ids) + (_read_ids(args.file, args.id_column) if args.file else [])
    if not ids:
        raise ConfigError("give identifiers to look up: ID... or --file FILE")
    labels = query_at(args.identity, args.peer, args.list_name, ids)
    listed = sum(label is not None for label in labels.values())
    print(f"{listed} of {len(labels)} identifiers are on {args.peer}'s list {args.list_name}")
    for identifier, label in labels.items():
        print(f"{identifier}\t{label if label is not None else '-'}")
    return 0
