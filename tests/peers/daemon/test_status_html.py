"""GET /v1/status.html: the status page, its escaping, its headers, and who sees what on it.

The fast tests draw a status document full of hostile strings (a job id, member, list and
metric names, audit details holding `<script>` and `"><img onerror=...>`) and read the
page back with the standard library's HTML parser: no element, attribute or script comes
out of those strings, only text. The slow test runs real daemons over mutual TLS: bank-a
proposes a job whose id is hostile, and makes a refused request whose path is; bank-c makes
one of its own; each member's page shows exactly the numbers /v1/status shows it, bank-a's
entries never reach bank-c's page, and the operator's page over state/admin.sock shows all.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pytest

from fedsilo.peers.daemon.roles import views
from fedsilo.peers.daemon.status_page import CSP, HEADERS, STYLE, render
from fedsilo.peers.identity.tls import client_context

from ._consortium import make_consortium, run, running, signed
from .test_daemon_refusals import propose
from .test_status_page import LIST_TOML

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


class Page(HTMLParser):
    """Every element (tag, attributes) and the text of each element id'd or in a table cell."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}  # section id -> rows of cell texts
        self.svg_rects: list[dict[str, str | None]] = []
        self._section: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.elements.append((tag, found))
        if tag == "section":
            self._section = found["id"]
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "rect" and found.get("data-epsilon") is not None:
            self.svg_rects.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section:
            self.tables.setdefault(self._section, []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, section: str) -> list[list[str]]:
        """The body rows of the tables of `section` (headers dropped)."""
        return [row for row in self.tables.get(section, []) if row and row != self.tables[section][0]]


def hostile_status(operator: bool) -> dict[str, Any]:
    evil, img = HOSTILE
    entry = {"time": "t", "actor": evil, "action": img, "job": evil, "source": img, "outcome": "refused", "detail": img}
    return {
        "peer": evil,
        "consortium": img,
        "manifest_version": 3,
        "jobs": {evil: 1},
        "sources": [img],
        "models": 1,
        "you": "operator" if operator else evil,
        "job_list": [
            {
                "job_id": evil,
                "setup": img,
                "dp": evil,
                "state": img,
                "detail": img,
                "owner": evil,
                "host": img,
                "source": img,
                "rounds": 4,
                "metrics": {"model_version": 1, "rounds": 4, "final_auc": 0.75, "final_loss": 0.5},
                "updated": evil,
            }
        ],
        "budgets": [
            {
                "source": img,
                "epsilon_budget": 8.0,
                "delta": 1e-5,
                "spent_epsilon": 2.0,
                "reserved_epsilon": 1.0,
                "remaining_epsilon": 5.0,
                "jobs": 2,
                "accountant": evil,
            }
        ],
        "lists": [
            {
                "name": evil,
                "kind": img,
                "psi_quota": 500,
                "psi_left": 380,
                "query_quota": 40,
                "query_left": 39,
                "quota_window": 86400.0,
                **({"member": img} if operator else {}),
            }
        ],
        "audit": {"chain_ok": False, "entries": [entry]}
        | ({"entries_total": 9, "first_broken": 4, "reason": evil, "chain_hash": "sha256"} if operator else {})
        | ({"entries": [{"seq": 4, **entry}]} if operator else {}),
        "members": [{"member": evil, "address": img, "reachable": False, "detail": evil}],
    }


@pytest.mark.parametrize("operator", [False, True], ids=["member", "operator"])
def test_hostile_strings_stay_text(operator):
    page = Page(render(hostile_status(operator), operator))
    tags = {tag for tag, _ in page.elements}
    assert "script" not in tags and "img" not in tags
    assert not [(tag, a) for tag, attrs in page.elements for a in attrs if a.startswith("on")]
    text = "".join(page.text)
    for hostile in HOSTILE:  # shown as the very string, in every place it came from
        assert text.count(hostile) >= 5
    [job] = page.rows("jobs")
    assert job[0] == HOSTILE[0] and job[6:9] == ["4 of 4", "0.7500", "0.5000"]
    [quota] = page.rows("lists")
    assert quota[0] == (HOSTILE[1] if operator else "you") and quota[3:6] == ["120 of 500", "1 of 40", "86400 s"]
    # the source's name went into an SVG attribute and <title> too, escaped
    assert {g["data-source"] for tag, g in page.elements if tag == "g"} == {HOSTILE[1]}
    assert "hash chain BROKEN" in text
    assert ("at entry 4" in text) is operator  # a member learns no sequence number


def test_budget_chart_is_drawn_to_scale():
    page = Page(render(hostile_status(False), False))
    bars = {rect["class"]: rect for rect in page.svg_rects}
    assert {k: float(v["data-epsilon"]) for k, v in bars.items()} == {"spent": 2.0, "reserved": 1.0, "left": 5.0}
    widths = {k: float(v["width"]) for k, v in bars.items()}
    assert widths == {"spent": 120.0, "reserved": 60.0, "left": 300.0}  # of 480 for ε = 8
    assert float(bars["reserved"]["x"]) == float(bars["spent"]["x"]) + 120.0


def test_headers_allow_no_script_and_only_the_page_stylesheet():
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert HEADERS["Content-Security-Policy"] == CSP
    policy = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert policy == {
        "default-src": "'none'",
        "style-src": f"'sha256-{digest}'",
        "img-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert HEADERS["X-Content-Type-Options"] == "nosniff"
    assert f"<style>{STYLE}</style>" in render(hostile_status(False), False)  # the hashed text, byte for byte


# ---- real daemons -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    """bank-b holds a job bank-a proposed, and audit entries of bank-a (a hostile job id and path) and bank-c.

    A signed job's id is a name (letters, digits, '-'), so a hostile id reaches the page
    only through the audit entry of a refused, forged proposal."""
    root = tmp_path_factory.mktemp("status-html")
    consortium = make_consortium(root, extra_members=(("local", "model-owner"),))  # named like the peer's own entries
    (root / "bank-b" / "high-risk.csv").write_text("client\nC-1\nC-2\n")
    config = consortium.config_path("bank-b")
    config.write_text(config.read_text() + LIST_TOML)
    job = consortium.job_toml(root / "job.toml", "page-1", ["bank-a", "bank-b"])
    envelope = signed(consortium, job)
    forged = {"job": {"job_id": HOSTILE[0]}, "signature": HOSTILE[1], "certificate": HOSTILE[1]}

    async def body():
        async with running(consortium, ["bank-b"]):
            decision = await propose(consortium, envelope)
            status, _ = await fetch(consortium, "bank-a", "/v1/proposals", body=forged)  # a job id that ids refuse
            assert status in (400, 403)
            for member, path in (("bank-a", f"/v1/jobs/{HOSTILE[1]}"), ("bank-c", "/v1/jobs/bank-c-was-here")):
                status, _ = await fetch(consortium, member, path)
                assert status == 403
            return decision

    decision = run(body())
    consortium.decision = decision
    return consortium


async def fetch(consortium, member: str | None, path: str, peer: str = "bank-b", body: Any = None) -> tuple[int, Any]:
    """GET `path` (POST `body`) from `peer` as `member` over mutual TLS, or as its operator over the admin
    socket (None)."""
    if member is None:
        socket_path = consortium.root / peer / "state" / "admin.sock"
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=str(socket_path))
        url = f"http://operator{path}"
    else:
        identity = consortium.identity(member)
        connector = aiohttp.TCPConnector(ssl=client_context(identity.ca_path, identity.cert_path, identity.key_path))
        url = consortium.addresses[peer] + path
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.request("GET" if body is None else "POST", url, json=body) as reply:
            answer = await reply.json() if reply.content_type == "application/json" else await reply.text()
            if path.endswith(".html"):
                assert reply.content_type == "text/html" and reply.charset == "utf-8"
                for header, value in HEADERS.items():
                    assert reply.headers[header] == value
            return reply.status, answer


def numbers_match(page: Page, status: dict[str, Any]) -> None:
    """The page shows exactly the jobs, budgets, quotas and audit entries of the /v1/status document."""
    assert [row[0] for row in page.rows("jobs")] == [job["job_id"] for job in status["job_list"]]
    assert [row[1] for row in page.rows("jobs")] == [job["state"] for job in status["job_list"]]
    budget_rows = [r for r in page.rows("budgets")]
    assert [(r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in budget_rows] == [
        (
            b["source"],
            round(b["epsilon_budget"], 4),
            round(b["spent_epsilon"], 4),
            round(b["reserved_epsilon"], 4),
            round(b["remaining_epsilon"], 4),
        )
        for b in status["budgets"]
    ]
    chart = [float(r["data-epsilon"]) for r in page.svg_rects]
    keys = ("spent_epsilon", "reserved_epsilon", "remaining_epsilon")
    assert chart == [b[k] for b in status["budgets"] for k in keys]  # exact: repr of the same floats
    quotas = [
        [q.get("member", "you"), q["name"], f"{q['psi_quota'] - q['psi_left']} of {q['psi_quota']}"]
        + [f"{q['query_quota'] - q['query_left']} of {q['query_quota']}"]
        for q in status["lists"]
    ]
    assert [row[:2] + row[3:5] for row in page.rows("lists")] == quotas
    audit_rows = page.rows("audit")
    assert len(audit_rows) == len(status["audit"]["entries"])
    assert [row[-1] for row in audit_rows] == [e["detail"] for e in status["audit"]["entries"]]


@pytest.mark.slow
def test_each_caller_sees_on_the_page_what_status_shows_it(consortium):
    async def body():
        async with running(consortium, ["bank-a", "bank-b"]):
            seen = {}
            for caller in ("bank-a", "bank-c", "local", None):
                status_code, status = await fetch(consortium, caller, "/v1/status")
                page_code, html = await fetch(consortium, caller, "/v1/status.html")
                assert status_code == page_code == 200
                seen[caller] = status, Page(html), html
            return seen

    seen = run(body())
    assert consortium.decision["decision"] == "accepted"
    for status, page, _ in seen.values():
        numbers_match(page, status)
        tags = {tag for tag, _ in page.elements}
        assert "script" not in tags and "img" not in tags

    a_status, a_page, a_html = seen["bank-a"]
    [job] = a_status["job_list"]
    assert job["job_id"] == "page-1" and job["rounds"] == 2 and job["metrics"] is None
    assert HOSTILE[0] in {e["job"] for e in a_status["audit"]["entries"]}
    assert HOSTILE[0] not in a_html and HOSTILE[1] not in a_html and "&lt;script&gt;" in a_html  # escaped
    assert a_status["audit"]["chain_ok"] and "entries_total" not in a_status["audit"]
    assert {e["actor"] for e in a_status["audit"]["entries"]} == {"bank-a"}
    assert all("seq" not in e and "hash" not in e for e in a_status["audit"]["entries"])
    details = "".join(e["detail"] for e in a_status["audit"]["entries"])
    assert HOSTILE[1] in details and "bank-c-was-here" not in details
    assert "hash chain verified" in "".join(a_page.text)
    assert [row[:5] for row in a_page.rows("lists")] == [["you", "high-risk", "client", "0 of 500", "0 of 40"]]

    # bank-c: in no job here; sees no job or budget, and none of bank-a's entries, only its own
    c_status, c_page, c_html = seen["bank-c"]
    assert c_status["job_list"] == [] and c_status["budgets"] == [] and not c_page.svg_rects
    assert c_status["lists"] == [] and c_page.rows("lists") == []
    assert {e["actor"] for e in c_status["audit"]["entries"]} == {"bank-c"}
    assert "bank-c-was-here" in c_html
    for leak in ("bank-a", "&lt;script&gt;", "onerror", "credit-card"):
        assert leak not in re.sub(r'<section id="members">.*?</section>', "", c_html)

    # a member named "local" does not see the peer's own entries (actor "local")
    assert seen["local"][0]["audit"]["entries"] == [] and seen["local"][0]["job_list"] == []

    # the operator: every job, source and entry, with sequence numbers and the chain's length
    o_status, o_page, _ = seen[None]
    assert o_status["you"] == "operator" and o_status["audit"]["entries_total"] >= 5
    actors = {e["actor"] for e in o_status["audit"]["entries"]}
    assert {"bank-a", "bank-c", "local"} <= actors
    assert [row[:2] for row in o_page.rows("lists")] == [["bank-a", "high-risk"]]
    assert f"hash chain verified: {o_status['audit']['entries_total']} entries" in "".join(o_page.text)


@pytest.mark.slow
def test_an_altered_entry_shows_the_chain_broken_to_every_caller(consortium, monkeypatch):
    monkeypatch.setattr(views, "CHAIN_CHECK_SECONDS", 0.0)  # check afresh on every request
    path = consortium.root / "bank-b" / "state" / "state.sqlite"
    with sqlite3.connect(path) as conn:
        original = conn.execute("SELECT detail FROM audit WHERE seq = 2").fetchone()[0]
        conn.execute("UPDATE audit SET detail = 'nothing happened' WHERE seq = 2")

    async def body():
        async with running(consortium, ["bank-b"]):
            return [await fetch(consortium, caller, "/v1/status.html") for caller in ("bank-a", None)]

    try:
        (_, member_html), (_, operator_html) = run(body())
    finally:
        with sqlite3.connect(path) as conn:  # undo, for the other tests of this module
            conn.execute("UPDATE audit SET detail = ? WHERE seq = 2", (original,))
    member, operator = "".join(Page(member_html).text), "".join(Page(operator_html).text)
    assert "hash chain BROKEN" in member and "at entry" not in member and "verified" not in member
    assert "hash chain BROKEN at entry 2: its content does not match its hash (it was altered)" in operator
