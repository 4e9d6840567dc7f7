"""The fleet view: rows from decisions, pure filters, the GET form, CSV and JSON for auditors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from gateway.web.views import FleetFilter, FleetRow, filter_rows, render_fleet
from gateway.web.views.fleet import CSV_COLUMNS
from tests.gateway.web.views import samples

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"


def serials(rows: tuple[FleetRow, ...]) -> list[str]:
    return [r.serial for r in rows]


class TestRows:
    def test_row_summarises_the_decisions(self) -> None:
        """The outdated Mac reaches low only, fails two checks, and has one grace deadline."""
        row = samples.fleet_rows()[0]

        assert ("low",) == row.reachable_tiers
        assert ("firewall", "os_current") == row.failing
        assert [("screen_lock_delay", "2026-11-24T16:00:00+00:00")] == [(c, d.isoformat()) for c, d in row.grace]
        assert ("auto_updates", "os_update_available") == row.nudges
        assert True is row.non_compliant

    def test_unknown_and_stale_devices(self) -> None:
        """A device never heard from is not enrolled and stale; an old report is stale for every tier."""
        rows = {r.serial: r for r in samples.fleet_rows()}

        assert False is rows["NEVERSEEN01"].enrolled
        assert True is rows["NEVERSEEN01"].stale
        assert ("low", "medium", "high") == rows["5CG1234XYZ"].stale_tiers
        assert False is rows["PF3ABCD1"].stale


class TestFilters:
    @pytest.mark.parametrize(
        ("f", "expected"),
        [
            (FleetFilter(), ["C02XK1JHJG5J", "PF3ABCD1", "5CG1234XYZ", "FVFZ9XYZQ6L4", "NEVERSEEN01"]),
            (FleetFilter(non_compliant=True), ["C02XK1JHJG5J", "5CG1234XYZ", "NEVERSEEN01"]),
            (FleetFilter(stale=True), ["5CG1234XYZ", "NEVERSEEN01"]),
            (FleetFilter(check="firewall"), ["C02XK1JHJG5J"]),
            (FleetFilter(check="screen_lock_delay"), ["C02XK1JHJG5J"]),
            (FleetFilter(tier="high"), ["PF3ABCD1", "FVFZ9XYZQ6L4"]),
            (FleetFilter(owner="ALICE"), ["C02XK1JHJG5J", "PF3ABCD1"]),
            (FleetFilter(platform="windows"), ["5CG1234XYZ"]),
            (FleetFilter(non_compliant=True, tier="low"), ["C02XK1JHJG5J"]),
            (FleetFilter(owner="alice", tier="high"), ["PF3ABCD1"]),
        ],
    )
    def test_filter_rows(self, f: FleetFilter, expected: list[str]) -> None:
        """Each filter keeps only matching devices; filters combine with AND."""
        kept = filter_rows(samples.fleet_rows(), f)

        assert expected == serials(kept)

    def test_filters_read_from_and_write_to_the_query(self) -> None:
        """GET parameters parse to a filter (bad platform ignored) and serialise back."""
        f = FleetFilter.from_query({"non_compliant": "1", "tier": "high", "owner": " bob ", "platform": "bsd",
                                    "stale": "no", "other": "x"})

        assert FleetFilter(non_compliant=True, tier="high", owner="bob") == f
        assert {"non_compliant": "1", "tier": "high", "owner": "bob"} == f.to_query()


class TestFormats:
    def test_html_has_a_labelled_get_form_with_current_values(self) -> None:
        """The filter form is GET, every field is labelled, and the current filter is selected."""
        html = render_fleet(samples.fleet_view(FleetFilter(non_compliant=True, tier="medium")), accept=BROWSER).text

        assert '<form method="get" action="/.gatehouse/admin/devices"' in html
        for ident in ("f-non_compliant", "f-stale", "f-check", "f-tier", "f-platform", "f-owner"):
            assert f'for="{ident}"' in html and f'id="{ident}"' in html
        assert 'name="non_compliant" value="1" checked' in html
        assert '<option value="medium" selected>medium</option>' in html
        assert "format=csv" in html and "non_compliant=1" in html

    @pytest.mark.parametrize(("accept", "fmt"), [("text/csv", None), (BROWSER, "csv")])
    def test_csv_for_auditors(self, accept: str, fmt: str | None) -> None:
        """CSV (by Accept or ?format=csv) has a header and one row per matching device, as an attachment."""
        rendered = render_fleet(samples.fleet_view(FleetFilter(non_compliant=True)), accept=accept, format=fmt)

        rows = list(csv.reader(io.StringIO(rendered.text)))
        assert "text/csv" == rendered.content_type
        assert rendered.headers["Content-Disposition"].startswith('attachment; filename="gatehouse-devices-')
        assert list(CSV_COLUMNS) == rows[0]
        assert ["C02XK1JHJG5J", "5CG1234XYZ", "NEVERSEEN01"] == [r[0] for r in rows[1:]]
        assert "firewall;os_current" == rows[1][CSV_COLUMNS.index("failing_checks")]

    def test_csv_cells_cannot_become_spreadsheet_formulas(self) -> None:
        """A hostname starting with = is quoted so a spreadsheet shows it as text."""
        row = FleetRow(serial="S1", hostname='=HYPERLINK("http://evil","x")', owners=("+cmd@example.com",))
        view = samples.fleet_view()
        view = type(view)(rows=(row,), filter=FleetFilter(), tiers=view.tiers, checks=view.checks, now=view.now)

        text = render_fleet(view, accept="text/csv").text

        record = list(csv.reader(io.StringIO(text)))[1]
        assert "'=HYPERLINK(\"http://evil\",\"x\")" == record[1]
        assert "'+cmd@example.com" == record[2]

    def test_json_for_auditors(self) -> None:
        """JSON carries the filter, counts and every matching device."""
        rendered = render_fleet(samples.fleet_view(FleetFilter(tier="high")), accept=BROWSER, format="json")

        doc = json.loads(rendered.body)
        assert {"tier": "high"} == doc["filter"]
        assert 5 == doc["total"]
        assert ["PF3ABCD1", "FVFZ9XYZQ6L4"] == [d["serial"] for d in doc["devices"]]
        assert ["low", "medium", "high"] == doc["devices"][0]["reachable_tiers"]

    def test_html_row_limit_points_to_the_csv(self) -> None:
        """Beyond the limit, the page shows the first rows and says the CSV has them all."""
        view = samples.fleet_view()
        view = type(view)(rows=view.rows, filter=view.filter, tiers=view.tiers, checks=view.checks, now=view.now,
                          limit=2)

        html = render_fleet(view, accept=BROWSER).text

        assert "Showing the first 2 of 5" in html
        assert "carol-surface" not in html

    def test_hostile_values_are_escaped(self) -> None:
        """Hostnames, owners and serials from devices cannot inject markup; the filter echo is escaped."""
        row = FleetRow(serial='" onmouseover="x', hostname="<script>h</script>", owners=("<img src=x>",))
        view = samples.fleet_view(FleetFilter(owner='"><script>'))
        view = type(view)(rows=(row,), filter=FleetFilter(owner='"><script>'), tiers=view.tiers,
                          checks=view.checks, now=view.now)

        html = render_fleet(view, accept=BROWSER).text

        assert "<script" not in html
        assert "<img" not in html
        assert '" onmouseover=' not in html
