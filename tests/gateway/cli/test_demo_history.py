"""The demo's recorded past: the compliance report over the seeded demo store shows the scripted story, exactly.

The expected numbers are worked out by hand from gateway/cli/demo_history.py's script with the test
clock's start (2026-11-22 15:00 UTC): day k of the script is 2026-11-22 minus k days, device i is
evaluated at 09:00 + 10 i minutes and its owner's requests come an hour later.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.cli.main import main
from gateway.cli.demo import mint_demo_token
from gateway.cli.demo_history import seed_demo_history
from gateway.config.settings import load_settings
from gateway.store import open_store
from tests.gateway.cli.test_demo import demo  # noqa: F401 - the fixture

SINCE = "2026-08-25"
"""The first day of the script (89 days before 2026-11-22)."""


async def report_page(demo: Any, query: str = "") -> dict[str, Any]:
    client, var, clock = demo
    clock.advance(timedelta(minutes=1))
    token = mint_demo_token(var, user="dave@example.com", device="C02DEMONOFW", now=clock(), groups=("security",))
    response = await client.get(f"/.gatehouse/admin/compliance?since={SINCE}&format=json{query}",
                                headers={"Authorization": f"Bearer {token}"})
    assert 200 == response.status, await response.text()
    return orjson.loads(await response.read())  # type: ignore[no-any-return]


class TestSeededReport:
    async def test_daily_compliance_follows_the_script(self, demo: Any) -> None:
        """Per day: the Ubuntu laptop's old release, the firewall days, BitLocker's 4 h, the reinstall, the old Mac joining, the stale laptop leaving."""
        body = await report_page(demo)

        days = {d["day"]: (d["passing"], d["counted"]) for d in body["fleet"]["days"]}
        assert 90 == len(days)
        assert {
            "2026-08-25": (5, 6), "2026-09-01": (5, 6), "2026-09-02": (6, 6), "2026-10-20": (5, 6), "2026-10-22": (6, 6),
            "2026-10-23": (5, 6), "2026-11-09": (6, 6), "2026-11-10": (5, 6), "2026-11-14": (5, 7), "2026-11-20": (5, 7),
            "2026-11-21": (4, 6), "2026-11-22": (3, 8),  # today the demo Fleet's two Macs join, neither passing every check
        } == {day: days[day] for day in ("2026-08-25", "2026-09-01", "2026-09-02", "2026-10-20", "2026-10-22", "2026-10-23",
                                         "2026-11-09", "2026-11-10", "2026-11-14", "2026-11-20", "2026-11-21", "2026-11-22")}
        assert 9 == body["devices"]

    async def test_longest_streaks_remediation_and_stale_devices(self, demo: Any) -> None:
        """Open streaks of the reinstalled desktop and the old Mac, 23 h and 3 h remediations, the stale laptop."""
        body = await report_page(demo)

        assert [
            ("PF3DEMONOLUKS", "2026-11-10T09:50:00Z", None, ["disk_encryption"]),
            ("C02DEMOOLD1", "2026-11-14T09:30:00Z", None, ["os_current"]),
            ("PF3DEMOLNX1", "2026-08-25T09:10:00Z", "2026-09-02T09:10:00Z", ["os_current"]),
            ("C02DEMONOFW", "2026-10-20T09:40:00Z", "2026-10-22T09:40:00Z", ["firewall"]),
        ] == [(s["device"], s["started"], s["ended"], s["checks"]) for s in body["longest_non_compliant"][:4]]
        assert [
            ("PF3DEMOLNX1", "2026-09-01T10:10:00Z", "2026-09-02T09:10:00Z"),
            ("5CG3DEMOWIN1", "2026-10-23T10:20:00Z", "2026-10-23T13:20:00Z"),
        ] == [(t["device"], t["denied_at"], t["fixed_at"]) for t in body["remediation"]["times"]]
        assert (13 * 3600, 2) == (body["remediation"]["median_s"], body["remediation"]["unresolved"])
        assert [("5CG3DEMOSTALE", "windows", "2026-11-19T15:00:00Z")] == [
            (s["device"], s["platform"], s["last_seen"]) for s in body["stale"]]

    async def test_break_glass_is_matched_to_its_grants_and_reviews(self, demo: Any) -> None:
        """Carol's BitLocker grant was reviewed by dave, Bob's reinstall grant is not yet; each served 6 wiki requests."""
        body = await report_page(demo)

        assert [
            ("bob@example.com", 1, 1, 1, 1, 6),
            ("carol@example.com", 1, 1, 1, 0, 6),
        ] == [(u["user"], u["requested"], u["issued"], u["used"], u["unreviewed"], u["requests"]) for u in body["break_glass"]]
        assert [
            ("2026-10-23T10:36:00Z", "carol@example.com", "5CG3DEMOWIN1", "checks-failed", 6, "reviewed", "dave@example.com"),
            ("2026-11-10T11:06:00Z", "bob@example.com", "PF3DEMONOLUKS", "checks-failed", 6, "unreviewed", None),
        ] == [(a["first_seen"], a["user"], a["device"], a["reason"], a["count"], a["review"], a["reviewed_by"])
              for a in body["non_compliant_access"] if a["verdict"] == "break-glass"]
        assert 1 == body["unreviewed_grants"]

    async def test_denials_in_the_ledger_are_the_scripted_ones(self, demo: Any) -> None:
        """Denied requests per tier: the desktop's 12 days on every tier, BitLocker's day, two past grace, two stale."""
        body = await report_page(demo)

        # low: desktop 12 + BitLocker 1; medium: desktop 12 + BitLocker 1 + Ubuntu 1 + old Mac 1 + stale 2;
        # high: desktop 12 + BitLocker 1 + Ubuntu 1 + old Mac 1.
        assert {"high": (15, 0), "medium": (17, 12), "low": (13, 0)} == {
            t["tier"]: (t["denied"], t["break-glass"]) for t in body["access"]}


class TestSeeding:
    async def test_a_second_start_records_nothing(self, demo: Any) -> None:
        """Seeding a store that has history already adds no evaluation, ledger row or grant."""
        client, var, clock = demo
        settings = load_settings(var / "gatehouse-demo.yaml", {})
        before = await _counts(settings)

        again = await seed_demo_history(settings, now=clock() + timedelta(days=1))

        assert (None, before) == (again, await _counts(settings))

    async def test_audit_log_holds_the_grants_and_verifies(self, demo: Any, capsys: Any) -> None:
        """Both grants' requests, approvals, first uses, expiries and the one review are in the chained log: 11 entries."""
        client, var, clock = demo

        code = await asyncio.to_thread(main, ["audit", "verify", "--config", str(var / "gatehouse-demo.yaml")])

        assert (0, "audit log ok: 11 entries checked") == (code, capsys.readouterr().out.split(", head")[0])

    async def test_the_readme_report_command_writes_the_html_report(self, demo: Any, capsys: Any) -> None:
        """`gatehouse report --config var/gatehouse-demo.yaml --since ... --format html -o report.html` reports the nine devices."""
        client, var, clock = demo
        out = var / "report.html"

        code = await asyncio.to_thread(main, ["report", "--config", str(var / "gatehouse-demo.yaml"), "--since", SINCE,
                                              "--until", "2026-11-23", "--format", "html", "-o", str(out)])

        assert 0 == code
        assert "reported 9 devices from 2026-08-25" in capsys.readouterr().err  # the seven, and the demo Fleet's two Macs
        assert "<svg" in out.read_text()


async def _counts(settings: Any) -> tuple[int, int, int]:
    store = await open_store(settings.store.reveal())
    try:
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        entries = [e async for e in store.iter_history(since=epoch)]
        rollups = [r async for r in store.iter_access(since=epoch)]
    finally:
        await store.close()
    return len(entries), len(rollups), sum(r.count for r in rollups)
