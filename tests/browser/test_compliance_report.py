"""The compliance report renders in headless Chromium under its strict CSP; its screenshot is kept in docs/.

The report is computed from the generated 90-day, 500-device fleet history, served by a tiny aiohttp
app on 127.0.0.1 (the pure renderer's output, as the other view pages are), loaded in Chromium, and
saved as docs/compliance-report.png for the README.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from gateway.report import DeviceInfo, compute_report
from gateway.web.views.report import report_response
from gateway.report.synthetic import generate_fleet_history
from policy_engine import compile_policy_set, parse_policy_document
from tests.browser.conftest import screenshot
from tests.policy_engine.factories import DEPLOY_POLICY

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_report_renders_with_charts_under_the_csp(aiohttp_server: AiohttpServer, browser_page: object) -> None:
    """Every chart draws (SVG boxes with height), nothing breaks the CSP, and the key numbers are on the page."""
    policies = compile_policy_set(parse_policy_document(yaml.safe_load(DEPLOY_POLICY.read_text()), source="policy.yaml"))
    fleet = generate_fleet_history(datetime(2026, 8, 1, tzinfo=UTC), days=90, devices=500)
    report = compute_report(fleet.entries, fleet.rollups, policies=policies, grants=fleet.grants,
                            devices={s: DeviceInfo(p) for s, p in fleet.platforms.items()},
                            since=fleet.start, until=fleet.until, now=fleet.until)
    rendered = report_response(report, "html", viewer="rita@example.com")

    async def handle(request: web.Request) -> web.Response:
        return rendered.response()

    app = web.Application()
    app.router.add_get("/report", handle)
    server = await aiohttp_server(app)
    page = browser_page
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)  # type: ignore[attr-defined]

    await page.goto(str(server.make_url("/report")))  # type: ignore[attr-defined]
    heights = await page.eval_on_selector_all("svg.chart", "els => els.map(e => e.getBoundingClientRect().height)")  # type: ignore[attr-defined]
    text = await page.inner_text("main")  # type: ignore[attr-defined]
    await page.set_viewport_size({"width": 1280, "height": 900})  # type: ignore[attr-defined]
    await screenshot(page, "compliance-report")
    await page.screenshot(path=str(DOCS / "compliance-report.png"), full_page=True,  # type: ignore[attr-defined]
                          clip={"x": 0, "y": 0, "width": 1280, "height": 1500})

    assert [] == violations
    assert 5 == len(heights) and all(h > 60 for h in heights)
    assert "Compliance report" in text and "500 devices evaluated" in text
    assert "Results by control" in text and "Median:" in text
