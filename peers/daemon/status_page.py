"""The status page: GET /v1/status.html, the answer of GET /v1/status drawn as one HTML page.

`render` takes the very document /v1/status returns to the same caller and draws it, so
the page shows what that caller may see and nothing more: its jobs (rounds planned and,
once the model is here, rounds run and final metrics), each visible source's budget as
an inline SVG bar chart the server draws, its list quotas with what is used of each, the
members this peer reaches, and what it may see of the audit log.

The page needs no JavaScript and loads nothing: `HEADERS` carry a Content-Security-Policy
that allows no script, no image, no connection, no frame and only this module's own
stylesheet (by its hash), plus `X-Content-Type-Options: nosniff`. Every string that
comes from the request's world (job ids, member, source, list and metric names, audit
details) goes through `html.escape` (quotes too) in `_text`, whether it lands in text,
an attribute or the SVG.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable
from typing import Any

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b;max-width:72em}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.4em 0}th,td{padding:.2em .7em;text-align:left;vertical-align:top}
th{background:#eee;white-space:nowrap}td:first-child{white-space:nowrap}tr:nth-child(even) td{background:#f7f7f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17612c;font-weight:bold}.bad{color:#a1130a;font-weight:bold}.none{color:#666}
""".strip()
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# the budget chart: spent, reserved, left, in this order along each source's bar
SEGMENTS = (("spent_epsilon", "spent", "#b3261e"), ("reserved_epsilon", "reserved", "#e8a33d"))
LEFT_COLOUR = "#7cb87f"
BAR_WIDTH, BAR_HEIGHT, LABEL_WIDTH = 480, 22, 170


def _text(value: Any) -> str:
    """`value` as escaped HTML text (safe in text, in a quoted attribute and in SVG); None as a dash."""
    return "–" if value is None else html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _text(value)


def _table(headers: Iterable[str], rows: list[list[str]], numeric: Iterable[int] = (), empty: str = "none") -> str:
    """An HTML table of already-escaped cells; `numeric`: the columns aligned right."""
    if not rows:
        return f'<p class="none">{_text(empty)}</p>'
    right = set(numeric)
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i in right else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def budget_chart(budgets: list[dict[str, Any]]) -> str:
    """One horizontal bar per source, its full width the source's ε budget: spent, reserved, left.

    Each segment carries its value in a `<title>` (a tooltip) and `data-` attributes; the
    bar's label says the same in words, so the chart reads without colour too."""
    if not budgets:
        return '<p class="none">no source of this peer is visible to you</p>'
    height = BAR_HEIGHT * 2 * len(budgets) + 40
    width = LABEL_WIDTH + BAR_WIDTH + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="budget-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-labelledby="budget-chart-title">',
        '<title id="budget-chart-title">ε budget per data source: spent, reserved and left</title>',
    ]
    for index, source in enumerate(budgets):
        y = 10 + index * BAR_HEIGHT * 2
        total = source["epsilon_budget"] or 0.0
        name = _text(source["source"])
        parts.append(
            f'<g class="source" data-source="{name}"><text x="0" y="{y + 15}" font-size="13">{name}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" fill="#eee" stroke="#999"/>'
        )
        x = float(LABEL_WIDTH)
        for key, label, colour in (*SEGMENTS, ("remaining_epsilon", "left", LEFT_COLOUR)):
            value = max(0.0, float(source[key] or 0.0))
            span = 0.0 if total <= 0 else min(BAR_WIDTH, BAR_WIDTH * value / total)
            parts.append(
                f'<rect class="{label}" x="{x:.2f}" y="{y}" width="{span:.2f}" height="{BAR_HEIGHT}" '
                f'fill="{colour}" data-epsilon="{value!r}"><title>{name}: ε {label} {value:.4f}</title></rect>'
            )
            x += span
        words = (
            f"spent {source['spent_epsilon']:.4f}, reserved {source['reserved_epsilon']:.4f}, "
            f"left {source['remaining_epsilon']:.4f} of {total:g}"
        )
        parts.append(f'<text x="{LABEL_WIDTH}" y="{y + BAR_HEIGHT + 14}" font-size="12">{_text(words)}</text></g>')
    legend_y = height - 22
    for index, (label, colour) in enumerate(
        (("spent", SEGMENTS[0][2]), ("reserved", SEGMENTS[1][2]), ("left", LEFT_COLOUR))
    ):
        x = LABEL_WIDTH + index * 110
        parts.append(
            f'<rect x="{x}" y="{legend_y}" width="14" height="14" fill="{colour}"/>'
            f'<text x="{x + 20}" y="{legend_y + 12}" font-size="12">ε {label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _jobs(jobs: list[dict[str, Any]]) -> str:
    rows = []
    for job in jobs:
        metrics = job.get("metrics") or {}
        rows.append(
            [
                _text(job["job_id"]),
                _text(job["state"]),
                _text(f"{job['setup']}/{job['dp']} DP"),
                _text(job["owner"]),
                _text(job["host"]),
                _text(job.get("source")),
                _text(f"{_number(metrics.get('rounds'))} of {_number(job.get('rounds'))}"),
                _number(metrics.get("final_auc")),
                _number(metrics.get("final_loss")),
                _text(job["detail"]),
                _text(job["updated"]),
            ]
        )
    headers = ("job", "state", "setup", "owner", "host", "source", "rounds run", "AUC", "loss", "detail", "updated")
    return _table(headers, rows, numeric=(6, 7, 8), empty="no job here that you take part in")


def _budgets(budgets: list[dict[str, Any]]) -> str:
    rows = [
        [
            _text(b["source"]),
            _number(b["epsilon_budget"]),
            _number(b["spent_epsilon"]),
            _number(b["reserved_epsilon"]),
            _number(b["remaining_epsilon"]),
            _text(f"{b['delta']:g}"),
            _number(b["jobs"]),
            _text(b["accountant"]),
        ]
        for b in budgets
    ]
    headers = ("source", "ε budget", "spent", "reserved", "left", "δ", "jobs", "accountant")
    return budget_chart(budgets) + _table(headers, rows, numeric=range(1, 7), empty="")


def _used(quota: Any, left: Any) -> str:
    """'used of quota' (a dash where there is no quota)."""
    return "–" if quota is None else f"{_number(quota - left)} of {_number(quota)}"


def _lists(lists: list[dict[str, Any]]) -> str:
    rows = [
        [
            _text(q.get("member", "you")),
            _text(q["name"]),
            _text(q["kind"]),
            _used(q["psi_quota"], q["psi_left"]),
            _used(q["query_quota"], q["query_left"]),
            _text(f"{q['quota_window']:g} s" if q["query_quota"] is not None else None),
        ]
        for q in lists
    ]
    headers = ("member", "list", "kind", "PSI rows used", "queries used", "per")
    return _table(headers, rows, numeric=(3, 4), empty="no list here is shared with you")


def _members(members: list[dict[str, Any]]) -> str:
    rows = [
        [
            _text(m["member"]),
            _text(m["address"]),
            '<span class="ok">reachable</span>' if m["reachable"] else '<span class="bad">UNREACHABLE</span>',
            _text(m["detail"]),
        ]
        for m in members
    ]
    return _table(("member", "address", "state", "detail"), rows, empty="no other member has an address")


def _audit(audit: dict[str, Any], operator: bool) -> str:
    if audit["chain_ok"]:
        state = '<p id="chain-state" class="ok">hash chain verified'
        state += f": {_number(audit['entries_total'])} entries</p>" if operator else "</p>"
    else:
        state = '<p id="chain-state" class="bad">hash chain BROKEN'
        state += f" at entry {_number(audit['first_broken'])}: {_text(audit['reason'])}</p>" if operator else "</p>"
    keys = ("seq", "time", "actor", "action", "job", "source", "outcome", "detail")
    if not operator:
        keys = keys[1:]
        state += '<p class="none">you see the entries you are the actor of; the log is its operator\'s</p>'
    rows = [[_text(e[k]) for k in keys] for e in audit["entries"]]
    return state + _table(keys, rows, empty="no entry")


def render(status: dict[str, Any], operator: bool) -> str:
    """The page of `status`, the document GET /v1/status answers the same caller (see the module docstring);
    `operator`: the caller is this peer's operator (who sees the audit log's sequence numbers and state)."""
    title = f"peer {status['peer']} of consortium {status['consortium']}"
    sections = (
        ("jobs", "Jobs", _jobs(status["job_list"])),
        ("budgets", "Privacy budget per data source", _budgets(status["budgets"])),
        ("lists", "PSI and query use against quotas", _lists(status["lists"])),
        ("members", "Members", _members(status["members"])),
        ("audit", "Audit log", _audit(status["audit"], operator)),
    )
    body = "".join(f'<section id="{key}"><h2>{heading}</h2>{content}</section>' for key, heading, content in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_text(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_text(title)}</h1>"
        f'<p id="caller">manifest v{_number(status["manifest_version"])}, as seen by '
        f"<strong>{_text(status['you'])}</strong>; {_number(status['models'])} models you may pull</p>"
        f"{body}</body></html>"
    )
