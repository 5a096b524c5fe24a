"""The status page in a real browser engine: Chromium driven by Playwright, over mutual TLS.

The browser holds a member's certificate (Playwright's `client_certificates`) and loads
bank-b's /v1/status.html: bank-a sees its job and the budget chart drawn (its bars laid
out to scale by the browser); bank-c, in no job there, sees neither, and none of
bank-a's audit entries. No script runs on the page (the hostile job id in bank-a's
entries stays text) and the browser loads nothing besides the page itself.

Chromium comes from Debian's `chromium-headless-shell` (`.ci/run` installs it):
`playwright install chromium` downloads from a CDN this machine cannot reach
(`FEDSILO_CHROMIUM` names another binary). Skipped, with the reason, where Playwright or
that binary is missing, except under CI, where a missing binary fails it.
`FEDSILO_STATUS_SCREENSHOT=PATH` saves bank-a's page (docs/status-page.png came from it).
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from fedsilo.peers.daemon.status_page import CSP

from ._consortium import run, running
from .test_status_html import HOSTILE, consortium  # noqa: F401  # the module's fixture: bank-b's state

CHROMIUM = os.environ.get("FEDSILO_CHROMIUM") or shutil.which("chromium-headless-shell") or shutil.which("chromium")
playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright is not installed (pip '.[test]')")
pytestmark = [
    pytest.mark.slow,
    # in CI (.ci/run installs it) a missing Chromium fails the test instead
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"), reason="no Chromium: apt-get install chromium-headless-shell"
    ),
]


async def page_as(browser, consortium, member: str):
    """A browser context presenting `member`'s certificate to bank-b; the loaded status page and its requests."""
    identity = consortium.identity(member)
    origin = consortium.addresses["bank-b"]
    context = await browser.new_context(
        client_certificates=[{"origin": origin, "certPath": identity.cert_path, "keyPath": identity.key_path}],
        ignore_https_errors=True,  # the daemon's certificate is the consortium CA's, not a public one
        viewport={"width": 1100, "height": 800},
    )
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    reply = await page.goto(f"{origin}/v1/status.html")
    assert reply is not None and reply.status == 200
    assert reply.headers["content-security-policy"] == CSP
    return context, page, requests, console


def test_a_member_s_browser_shows_its_job_and_budget_chart_and_not_another_s_entries(consortium):
    async def body():
        async with running(consortium, ["bank-b"]), playwright_api.async_playwright() as playwright:
            assert CHROMIUM is not None, "no Chromium: .ci/run installs Debian's chromium-headless-shell"
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                seen = {}
                for member in ("bank-a", "bank-c"):
                    context, page, requests, console = await page_as(browser, consortium, member)
                    jobs = await page.locator("#jobs tbody tr").all_inner_texts()
                    bars = {}
                    for rect in await page.locator("#budget-chart rect[data-epsilon]").all():
                        box = await rect.bounding_box()
                        bars[await rect.get_attribute("class")] = (float(await rect.get_attribute("data-epsilon")), box)
                    audit = await page.locator("#audit").inner_text()
                    scripts = await page.evaluate("document.scripts.length + document.images.length")
                    if member == "bank-a" and os.environ.get("FEDSILO_STATUS_SCREENSHOT"):
                        await page.screenshot(path=os.environ["FEDSILO_STATUS_SCREENSHOT"], full_page=True)
                    seen[member] = jobs, bars, audit, scripts, requests, console
                    await context.close()
                return seen
            finally:
                await browser.close()

    seen = run(asyncio.wait_for(body(), 120))
    jobs, bars, audit, scripts, requests, console = seen["bank-a"]
    [job] = jobs
    assert job.startswith("page-1\taccepted\thorizontal/local DP\trisk-dept\tbank-a\tcredit-card")
    assert set(bars) == {"spent", "reserved", "left"}
    (reserved, reserved_box), (left, left_box) = bars["reserved"], bars["left"]
    assert reserved > 0 and reserved + left == pytest.approx(8.0)
    # the browser laid the bars out: their drawn widths are in the ratio of the ε they stand for
    assert reserved_box["width"] / left_box["width"] == pytest.approx(reserved / left, rel=0.02)
    assert HOSTILE[0] in audit and "hash chain verified" in audit  # the forged job id, shown as text
    assert scripts == 0 and console == []  # no script, no image, no CSP violation reported
    assert len(requests) == 1 and requests[0].endswith("/v1/status.html")  # nothing else fetched

    jobs, bars, audit, scripts, requests, console = seen["bank-c"]
    assert jobs == [] and bars == {}
    assert "bank-c-was-here" in audit
    assert HOSTILE[0] not in audit and HOSTILE[1] not in audit and "page-1" not in audit
