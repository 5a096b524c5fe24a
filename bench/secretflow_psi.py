"""SecretFlow's PSI (`spu` 0.9.5) as the bench's anchor: two party processes over loopback, bytes counted.

`bench/psi_ot.py --spu-python PATH` uses this module; fedsilo never imports spu. The two
parties run `bench/spu_psi_party.py` under PATH, an interpreter with `spu==0.9.5` installed
(in its own venv: it needs numpy < 2). Each party listens on its own loopback port and reaches
the other through a relay in this process that forwards every byte both ways and counts it, so
the bytes reported are what crossed the wire between the parties (brpc's framing included). The
relay's own CPU is this process's, not counted in the parties'.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

PARTY = Path(__file__).resolve().with_name("spu_psi_party.py")
HOW_TO_ENABLE = (
    "python3 -m venv spuvenv && spuvenv/bin/pip install spu==0.9.5, "
    "then python bench/psi_ot.py --spu-python spuvenv/bin/python"
)


def unavailable(python: str | None) -> str | None:
    """Why the SecretFlow arm cannot run with this interpreter (None: it can)."""
    if not python:
        return f"no --spu-python given ({HOW_TO_ENABLE})"
    try:
        probe = subprocess.run(
            [python, "-c", "import spu.psi, spu.version; print(spu.version.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except OSError as error:
        return f"--spu-python {python} does not run: {error} ({HOW_TO_ENABLE})"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"--spu-python {python} cannot import spu.psi: {last} ({HOW_TO_ENABLE})"
    return None


def version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import spu.version; print(spu.version.__version__)"], capture_output=True, text=True
    ).stdout.strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CountingRelay:
    """Listens on a loopback port and forwards each connection to `target`, counting bytes both ways."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.bytes = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the party behind is not listening yet: drop, brpc reconnects
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(1 << 20):
                with self._lock:
                    self.bytes += len(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()


def write_ids(path: Path, identifiers: Iterable[str]) -> None:
    """The CSV the parties read: header `id`, one identifier a line."""
    with path.open("w") as out:
        out.write("id\n")
        out.writelines(f"{x}\n" for x in identifiers)


def _read_ids(path: Path) -> set[str]:
    with path.open() as lines:
        next(lines)
        return {line.strip().strip('"') for line in lines if line.strip()}


def run(python: str, protocol: str, receiver_csv: Path, sender_csv: Path, expected: set[str], job: str) -> dict:
    """One SecretFlow PSI run (`protocol`: "ecdh" or "rr22"), receiver rank 0, result to both.

    Returns each party's CPU seconds and wall seconds of `psi_execute`, the bytes both ways
    through the relays; raises AssertionError unless both parties' outputs equal `expected`."""
    ports = [_free_port(), _free_port()]
    relays = [CountingRelay(ports[0]), CountingRelay(ports[1])]
    work = Path(tempfile.mkdtemp(prefix="sfpsi-"))
    parties = []
    for rank, source in enumerate((receiver_csv, sender_csv)):
        command = [
            python,
            str(PARTY),
            "--rank",
            str(rank),
            "--protocol",
            protocol,
            "--ids",
            str(source),
            "--out",
            str(work / f"out{rank}.csv"),
            "--listen",
            f"127.0.0.1:{ports[rank]}",
            "--peer",
            f"127.0.0.1:{relays[1 - rank].port}",
            "--job",
            job,
        ]
        log = (work / f"party{rank}.log").open("w")
        parties.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True))
    try:
        reports = []
        for rank, party in enumerate(parties):
            out, _ = party.communicate(timeout=1800)
            if party.returncode != 0:
                tail = (work / f"party{rank}.log").read_text().strip().splitlines()[-3:]
                raise RuntimeError(f"SecretFlow {protocol} party {rank} failed: {' | '.join(tail)}")
            result = [line for line in out.splitlines() if line.startswith("RESULT ")]
            reports.append(json.loads(result[-1].removeprefix("RESULT ")))
    finally:
        for party in parties:
            if party.poll() is None:
                party.kill()
        for relay in relays:
            relay.close()
    outputs = [_read_ids(work / f"out{rank}.csv") for rank in (0, 1)]
    shutil.rmtree(work)
    for rank, got in enumerate(outputs):
        assert got == expected, f"SecretFlow {protocol} party {rank}: {len(got)} shared, expected {len(expected)}"
    return {
        "receiver_cpu": reports[0]["cpu"],
        "sender_cpu": reports[1]["cpu"],
        "cpu": reports[0]["cpu"] + reports[1]["cpu"],
        "wall": max(r["wall"] for r in reports),
        "bytes": relays[0].bytes + relays[1].bytes,
        "peak_mib": [r.get("peak_mib", float("nan")) for r in reports],
        "shared": len(expected),
    }
