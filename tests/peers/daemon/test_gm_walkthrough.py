"""docs/consortium.md's walkthrough ("Run a consortium"), run as a user would under `--suite gm`.

The commands are read from the page's console blocks and run in bash with the `fedsilo` console
script of this interpreter, the `peer.toml` and `job.toml` from its toml blocks; what changes is
explicit: free ports for 17101-17103, a generated UCI-like file for `$UCI`, and what the page says
a gm consortium adds (`--suite gm` on `consortium init` and `peer init`, `--signing-key
X/identity/signing.pub` on each `consortium admit`). The daemons are `fedsilo peer start`
processes. Smaller than the page's run: 200 rows a bank and a 16-unit model, so the job trains
in seconds. If the page and the product drift, this test fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from fedsilo.peers.identity.manifest import Manifest

from ._consortium import OWNER, free_port, write_table
from .test_consortium_e2e import stop

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "consortium.md"
BANKS = ("bank-a", "bank-b", "bank-c")
DOC_PORTS = {"bank-a": 17101, "bank-b": 17102, "bank-c": 17103}


def sections() -> dict[str, str]:
    """docs/consortium.md's `## ` sections by heading."""
    parts = re.split(r"^## (.+)$", DOC.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def commands(text: str) -> list[tuple[str, list[str]]]:
    """Each `$ ` line of the console blocks, with the output lines the page shows after it."""
    found: list[tuple[str, list[str]]] = []
    for block in blocks(text, "console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found:
                found[-1][1].append(line)
    return found


def gm(command: str) -> str:
    """What docs/consortium.md says a gm consortium adds to a command."""
    if re.match(r"fedsilo consortium init\b", command) or "fedsilo peer init" in command:
        command = re.sub(r"(fedsilo (consortium|peer) init [^;]*?)(;|$)", r"\1 --suite gm\3", command)
    admitted = re.match(r"fedsilo consortium admit (\S+)/peer\.csr", command)
    if admitted:
        command += f" --signing-key {admitted.group(1)}/signing.pub"
    # the CA's SM2 trust anchor travels with ca.pem
    return command.replace("cp consortium/ca.pem ", "cp consortium/ca.pem consortium/ca-signing.pub ")


def shape(line: str) -> str:
    """A line of output with what differs from run to run (hashes, times, figures) masked."""
    line = re.sub(r"\b(sha256|sm3)[: ]\s*[0-9a-f]+…", "HASH", line)
    return re.sub(r"\d+(\.\d+)?", "N", line).strip()


def gm_output(line: str) -> str:
    """What the page shows for a standard consortium, as a gm consortium prints it."""
    line = line.replace("standard crypto suite", "gm crypto suite")
    line = re.sub(
        r"^(admitted (\S+) .*give every member its new copy)$",
        r"\1; \2 also needs ca.pem and consortium/ca-signing.pub",
        line,
    )
    line = re.sub(r"each hashing the one before$", "each hashing the one before with SM3", line)
    return re.sub(
        r"^(\S+): key (\S+)/peer\.key \(mode 0600, keep it here\), request (\S+): send the request to",
        r"\1: key \2/peer.key (mode 0600, keep it here), gm signing key \2/signing.key (mode 0600), request \3: "
        r"send the request with \2/signing.pub to",
        line,
    )


class Walkthrough:
    """A shell session in a temporary directory: the page's commands with explicit substitutions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cwd = root
        self.ports = {name: free_port() for name in BANKS}
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "HOME": str(root),
        }
        self.daemons: dict[str, subprocess.Popen] = {}

    def substitute(self, text: str) -> str:
        for name, port in self.ports.items():
            text = text.replace(f"127.0.0.1:{DOC_PORTS[name]}", f"127.0.0.1:{port}")
        return text

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", "-c", gm(self.substitute(command))],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
        return done

    def start(self, command: str) -> None:
        """`(cd bank-a && fedsilo peer start --config peer.toml) &` as a process of its own."""
        where, argv = re.fullmatch(r"\(cd (\S+) && (fedsilo peer start .*)\) &", command).groups()
        log = (self.root / where / "daemon.log").open("ab")
        self.daemons[where] = subprocess.Popen(
            shlex.split(argv), cwd=self.cwd / where, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 180
        for name, process in self.daemons.items():
            while True:
                assert process.poll() is None, (self.root / name / "daemon.log").read_text()[-3000:]
                try:
                    socket.create_connection(("127.0.0.1", self.ports[name]), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{name} did not start"
                    time.sleep(0.3)

    def manifest(self) -> Manifest:
        """The consortium's manifest, checked against its CA."""
        ca = x509.load_pem_x509_certificate((self.root / "consortium" / "ca.pem").read_bytes())
        return Manifest.load(
            self.root / "consortium" / "manifest.json", ca, self.root / "consortium" / "ca-signing.pub"
        )

    def stop(self) -> None:
        for process in self.daemons.values():
            stop(process)


@pytest.fixture
def walk(tmp_path):
    walkthrough = Walkthrough(tmp_path)
    yield walkthrough
    walkthrough.stop()


def uci_like(path: Path, rows: int) -> None:
    """A file with the UCI credit-card file's id and label columns (`ID`, `Y`)."""
    write_table(path, rows, seed=7)


def test_the_consortium_walkthrough_runs_under_the_gm_suite(walk):
    page = sections()
    steps = [page[h] for h in page if re.match(r"[1-6]\. ", h)]
    assert len(steps) == 6, list(page)
    uci = walk.root / "data" / "UCI_Credit_Card.csv"
    uci.parent.mkdir()
    uci_like(uci, 600)
    outputs: dict[str, subprocess.CompletedProcess] = {}
    for index, text in enumerate(steps, start=1):
        tomls = blocks(text, "toml")
        if index == 2:  # the same peer.toml in every bank's directory
            [peer_toml] = tomls
            for bank in BANKS:
                (walk.root / bank).mkdir(exist_ok=True)
                polled = peer_toml.replace('state = "state"', 'state = "state"\nmanifest-poll-seconds = 1', 1)
                (walk.root / bank / "peer.toml").write_text(polled)
        if index == 4:  # the owner's job, smaller than the page's so that it trains in seconds
            [job_toml] = tomls
            assert "hidden = [64, 32]" in job_toml and "batch-size = 128" in job_toml
            job_toml = job_toml.replace("hidden = [64, 32]", "hidden = [16]").replace(
                "batch-size = 128", "batch-size = 64"
            )
            (walk.root / "risk-dept" / "job.toml").write_text(job_toml)
        for command, shown in commands(text):
            if command.startswith("UCI="):
                walk.env["UCI"] = str(uci)
            elif re.fullmatch(r"cd \S+", command):
                walk.cwd = (walk.cwd / command.split()[1]).resolve()
            elif "--background" in command or "fedsilo peer stop" in command:
                continue  # the page's alternative for a daemon already started: test_peer_background.py runs it
            elif "fedsilo peer start" in command:
                walk.start(command)
            elif "fedsilo job show" in command:  # "about two minutes later": the user asks until it is done
                walk.wait_listening()
                deadline = time.monotonic() + 600
                while "finished" not in (done := walk.run(command)).stdout:
                    assert "failed" not in done.stdout and time.monotonic() < deadline, done.stdout
                    time.sleep(2)
                outputs[command] = done
            elif shown and shown[0].startswith("fedsilo: error:"):  # the page shows a refusal
                if "fedsilo job submit" in command:
                    walk.wait_listening()
                done = walk.run(command, check=False)
                assert done.returncode != 0 and walk.substitute(shown[0]) in done.stderr, done.stderr
            else:
                if "fedsilo job submit" in command:
                    walk.wait_listening()
                outputs[command] = walk.run(command)
            if shown and command in outputs and not shown[0].startswith("..."):  # the page's output, in shape
                expected = gm_output(walk.substitute(shown[0]).replace("[64, 32]", "[16]"))
                actual = outputs[command].stdout.splitlines()[0]
                assert shape(actual) == shape(expected), f"$ {command}\n{actual}\nthe page shows\n{expected}"
        if index == 3:
            walk.wait_listening()

    def output(prefix: str) -> str:
        [done] = [done for command, done in outputs.items() if command.startswith(prefix)]
        return done.stdout

    # 1. a gm consortium, and every member bound to an SM2 key
    assert "(gm crypto suite)" in output("fedsilo consortium init")
    manifest = walk.manifest()
    assert manifest.suite == "gm" and len(manifest.members) == 4
    assert all(member.signing_key for member in manifest.members)
    # 4. accepted by the three banks, trained, finished
    assert "3 of 3 participants accepted" in output("fedsilo job submit job.toml")
    assert "finished (model published; 3 of 3 participants reported" in output("fedsilo job show")
    # 5. the pulled card's hashes are SM3, and it verifies
    pulled = output("fedsilo model pull")
    assert "verified: signed by bank-a" in pulled and "3 file(s) match their SM3;" in pulled, pulled
    assert re.search(r"model.safetensors +\d+ bytes  sm3 [0-9a-f]{16}…", pulled), pulled
    card = json.loads((walk.root / "risk-dept" / "model" / "model_card.json").read_text())
    assert sorted(card["artifacts"]["model.safetensors"]) == ["bytes", "sm3"]
    assert all(p["data_fingerprint"].startswith("sm3:") for p in card["participants"])
    # 6. bank-b's ledger committed what it spent; its SM3 audit chain verifies
    budget = json.loads(output("fedsilo peer budget"))
    [source] = budget["sources"]
    assert budget["peer"] == "bank-b" and source["jobs"] == 1 and source["reserved_epsilon"] == 0.0
    assert 0 < source["spent_epsilon"] <= 2.0
    assert "budget.commit" in output("fedsilo audit show") and "model.replicate" in output("fedsilo audit show")
    assert output("fedsilo audit verify").startswith("audit log intact:")

    # 7. the status page, as bank-a sees bank-b
    section = page[next(h for h in page if h.startswith("7. "))]
    [status] = [c for c, _ in commands(section) if c.startswith("fedsilo peer status")]
    walk.env["BANK_B"] = f"https://127.0.0.1:{walk.ports['bank-b']}"
    walk.cwd = walk.root
    shown = walk.run(status).stdout
    assert re.match(r"peer bank-b of consortium acme-credit \(manifest v5\), as seen by bank-a\n", shown), shown
    assert re.search(r"credit-default-1 +finished", shown) and shown.count(" reachable ") == 2, shown

    # cancelling a job: the owner submits another one and cancels it at once
    ending = page["Cancelling a job, removing a member"]
    [cancel] = re.findall(r"`(fedsilo job cancel [^`]*)`", ending)
    walk.cwd = walk.root / "risk-dept"
    walk.run("sed 's/credit-default-1/credit-default-3/; s/epsilon = 2.0/epsilon = 0.5/' job.toml > later.toml")
    url = f"https://127.0.0.1:{walk.ports['bank-a']}"
    walk.run(f"fedsilo job submit later.toml --peer {url}")
    cancelled = walk.run(cancel.replace("JOB", "credit-default-3").replace("URL", url)).stdout
    assert "cancelled" in cancelled, cancelled
    shown = walk.run(f"fedsilo job show credit-default-3 --peer {url}").stdout
    assert shown.startswith("job credit-default-3: cancelled"), shown

    # removing a member: the next manifest version, still gm and CA-signed, published to bank-a and fetched
    # by bank-b by itself; bank-c is then refused; an unknown name is refused
    walk.cwd = walk.root
    shown: list[tuple[str, tuple[subprocess.CompletedProcess, list[str]]]] = []
    for command, output in commands(ending):
        if command.startswith("sleep "):  # the page waits out the default poll; the daemons here poll every 1 s
            time.sleep(4)
            continue
        shown.append((command, (walk.run(command, check=False), output)))
    [(removed, _)] = [v for c, v in shown if c.startswith("fedsilo consortium remove bank-c")]
    assert re.match(r"removed bank-c; manifest consortium/manifest.json is now version 6 \(3 members\)", removed.stdout)
    assert walk.manifest().suite == "gm" and [m.name for m in walk.manifest().members] == ["bank-a", "bank-b", OWNER]
    [(published, _)] = [v for c, v in shown if c.startswith("fedsilo consortium publish")]
    assert "published manifest version 6" in published.stdout and "took it" in published.stdout, published
    [(after, _)] = [v for c, v in shown if "risk-dept/identity | head -1" in c][-1:]
    assert "(manifest v6)" in after.stdout, after.stdout  # bank-b took it from bank-a by itself
    [(refused, _)] = [v for c, v in shown if "--identity bank-c/identity" in c]
    assert refused.returncode != 0 and "cannot reach" in refused.stderr, refused.stderr
    [(done, refusal)] = [v for c, v in shown if "bank-z" in c]
    assert done.returncode != 0 and refusal[0].split(" of ")[0] in done.stderr, done.stderr

    # every bank's audit chain (the cancel included at bank-a) is SM3 and intact
    walk.cwd = walk.root
    for bank in BANKS:
        verified = walk.run(f"fedsilo audit verify --config {bank}/peer.toml").stdout
        assert re.fullmatch(r"audit log intact: \d+ entries, each hashing the one before with SM3\n", verified)
    assert "job.cancel" in walk.run("fedsilo audit show --config bank-a/peer.toml --job credit-default-3").stdout
