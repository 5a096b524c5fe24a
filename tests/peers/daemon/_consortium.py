"""A real consortium on 127.0.0.1 for tests: CA, peers, a model owner, peer.toml files, data.

`make_consortium` runs the same operations as the CLI (init, peer init, admit) in a
temporary directory; `running(...)` starts peers' daemons in-process (real mutual TLS
on free ports); `member_client` calls them as any member.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.peers.daemon.app import start_daemon
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.config import load_config
from fedsilo.peers.daemon.service import PeerService
from fedsilo.peers.daemon.signed_job import sign_job
from fedsilo.peers.identity.consortium import Identity, admit, init_consortium, init_peer

OWNER = "risk-dept"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_table(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    label = (x1 + 0.5 * x2 + rng.normal(scale=0.5, size=rows) > 0.8).astype(int)
    pd.DataFrame(
        {
            "ID": np.arange(rows),
            "limit": rng.integers(1, 50, rows) * 1000.0,
            "x1": x1,
            "x2": x2,
            "kind": rng.choice(["a", "b", "c"], rows),
            "Y": label,
        }
    ).to_csv(path, index=False)


@dataclass
class Consortium:
    root: Path
    peers: list[str]
    addresses: dict[str, str]

    def identity_dir(self, name: str) -> Path:
        return self.root / name / "identity"

    def config_path(self, name: str) -> Path:
        return self.root / name / "peer.toml"

    def identity(self, name: str) -> Identity:
        return Identity.load(self.identity_dir(name))

    def write_peer_toml(self, name: str, policy: str = "", epsilon: float = 8.0) -> None:
        policy = policy or ('model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n')
        self.config_path(name).write_text(
            f'[peer]\nidentity = "identity"\nstate = "state"\n\n[policy]\n{policy}\n'
            f'[sources.credit-card]\npath = "data.csv"\nlabel = "Y"\nid-column = "ID"\nepsilon = {epsilon}\n'
            "delta = 1e-5\n"
        )

    def job_toml(
        self,
        path: Path,
        job_id: str,
        participants: list[str] | None = None,
        host: str | None = None,
        epsilon: float = 1.0,
        rounds: int = 2,
        min_participants: int | None = None,
        extra: str = "",
    ) -> Path:
        participants = participants or self.peers
        host = host or participants[0]
        minimum = min_participants or len(participants)
        path.write_text(
            f'[job]\nid = "{job_id}"\nhost = "{host}"\nparticipants = {participants!r}\n'
            f'min-participants = {minimum}\nsource = "credit-card"\nlabel = "Y"\n{extra}\n'
            f'[model]\nkind = "mlp"\nhidden = [16]\n\n[train]\nrounds = {rounds}\nbatch-size = 64\nlr = 0.5\n\n'
            f"[dp]\nepsilon = {epsilon}\ndelta = 1e-5\n".replace("'", '"')
        )
        return path


def make_consortium(
    root: Path,
    peers: tuple[str, ...] = ("bank-a", "bank-b", "bank-c"),
    rows: int = 400,
    extra_members: tuple[tuple[str, str], ...] = (),
    suite: str = "standard",
) -> Consortium:
    """CA, peers (role peer, with free ports), the model owner `risk-dept`, `extra_members` (name, roles).

    With `suite="gm"` every member also gets an SM2 signing key, bound in the manifest."""
    init_consortium(root / "consortium", "test-consortium", suite)
    addresses = {}
    members = [(p, "peer") for p in peers] + [(OWNER, "model-owner"), *extra_members]
    for name, roles in members:
        request = init_peer(root / name / "identity", name, None if suite == "standard" else suite)
        address = f"https://127.0.0.1:{free_port()}" if "peer" in roles.split(",") else None
        if address:
            addresses[name] = address
        signing_key = None if suite == "standard" else request.with_name("signing.pub")
        admit(
            root / "consortium",
            request,
            tuple(roles.split(",")),
            address,
            request.with_name("peer.pem"),
            signing_key=signing_key,
        )
    for name, _ in members:
        for file in (
            ("ca.pem", "manifest.json", "crl.pem")
            if suite == "standard"
            else ("ca.pem", "ca-signing.pub", "manifest.json", "crl.pem")
        ):
            shutil.copy(root / "consortium" / file, root / name / "identity" / file)
    consortium = Consortium(root, list(peers), addresses)
    for index, name in enumerate(peers):
        write_table(root / name / "data.csv", rows, seed=index)
        consortium.write_peer_toml(name)
    return consortium


@contextlib.asynccontextmanager
async def running(consortium: Consortium, names: list[str] | None = None) -> AsyncIterator[dict[str, PeerService]]:
    """Start the named peers' daemons in this event loop; stop them at the end."""
    runners, services = [], {}
    try:
        for name in names or consortium.peers:
            runner, service, _ = await start_daemon(load_config(consortium.config_path(name)))
            runners.append(runner)
            services[name] = service
        yield services
    finally:
        for runner in runners:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def member_client(consortium: Consortium, name: str) -> AsyncIterator[PeerClient]:
    async with PeerClient(consortium.identity(name), timeout=60) as client:
        yield client


def signed(consortium: Consortium, job_file: Path, signer: str = OWNER) -> dict[str, Any]:
    from fedsilo.peers.daemon.signed_job import job_document

    identity = consortium.identity(signer)
    return sign_job(identity, job_document(job_file, OWNER if signer != OWNER else signer))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
