"""`/.gatehouse/admin/compliance` over real HTTP on a full Gatehouse: reviewers only, HTML with charts, JSON, CSV."""

from __future__ import annotations

import csv
import io

from tests.gateway.web.test_portal import BOB, HTML, Stack, seed_fleet, stack  # noqa: F401 - the fixture

PATH = "/.gatehouse/admin/compliance"


class TestCompliancePage:
    async def test_reviewer_gets_the_period_numbers_as_json(self, stack: Stack) -> None:
        """The history recorded at ingest is counted: on the last day one of three evaluated devices is compliant."""
        await seed_fleet(stack)

        response = await stack.client.get(f"{PATH}?format=json", headers=stack.reviewer())

        body = await response.json()
        last = body["fleet"]["days"][-1]
        assert 200 == response.status
        assert 30 == len(body["fleet"]["days"])
        assert (1, 3) == (last["passing"], last["counted"])
        assert 4 == body["devices"]

    async def test_html_has_svg_charts_tables_and_no_script(self, stack: Stack) -> None:
        """The page is the shared shell with the strict CSP, inline SVG charts with titles, and no script."""
        await seed_fleet(stack)

        response = await stack.client.get(PATH, headers=stack.reviewer(accept=HTML))

        text = await response.text()
        assert 200 == response.status
        assert "script-src" not in response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert '<svg xmlns="http://www.w3.org/2000/svg"' in text and "<script" not in text
        assert '<title id="chart-fleet-title">Share of devices compliant per day</title>' in text
        assert "Results by control" in text and "164.312(a)(2)(iv)" in text

    async def test_csv_is_a_download(self, stack: Stack) -> None:
        """format=csv is an attachment whose rows carry the daily numbers."""
        await seed_fleet(stack)

        response = await stack.client.get(f"{PATH}?format=csv&since=2026-01-01&until=2026-01-08", headers=stack.reviewer())

        rows = list(csv.reader(io.StringIO(await response.text())))
        assert 200 == response.status
        assert "attachment" in response.headers["Content-Disposition"]
        assert ["section", "item", "detail", "time", "count", "total"] == rows[0]
        assert 7 == sum(1 for r in rows if r[0] == "compliance-daily")

    async def test_non_reviewer_is_refused_with_the_groups_that_may(self, stack: Stack) -> None:
        """A user outside the reviewer and approver groups gets 403 naming `security`."""
        response = await stack.client.get(PATH, headers=stack.headers(BOB))

        assert 403 == response.status
        assert "the compliance report is open to members of `security`" in await response.text()

    async def test_a_bad_day_is_a_clear_400(self, stack: Stack) -> None:
        """A since that is not a day is refused naming it and the form expected."""
        response = await stack.client.get(f"{PATH}?since=last-week", headers=stack.reviewer())

        assert 400 == response.status
        assert "since `last-week` is not a day; write it as `2026-11-01`" in await response.text()
