"""The privacy page is generated from the policy in force and the retention settings."""

from __future__ import annotations

from gateway.web.views import PrivacyView, render_privacy
from policy_engine.evaluate import TierInfo
from tests.gateway.web.views import samples
from tests.policy_engine.factories import policies_from

CUSTOM_POLICY = """
format: 1
checks:
  edr:
    fact: custom.edr_running
    equals: true
tiers:
  only:
    checks: [edr]
    max_snapshot_age: 2h
    break_glass: never
"""


def test_lists_each_fact_the_policy_checks_with_its_checks_and_tiers() -> None:
    """os_version is checked by three checks in every tier; unused fields say they are not checked."""
    html = render_privacy(samples.privacy_view()).text

    row = html.split("<code>os_version</code>", 1)[1].split("</tr>", 1)[0]
    assert "<code>os_supported</code>, <code>os_current</code>, <code>os_update_available</code>" in row
    assert "Tiers: low, medium, high" in row
    build = html.split("<code>os_build</code>", 1)[1].split("</tr>", 1)[0]
    assert "Not checked by the current policy" in build


def test_custom_facts_in_use_are_listed() -> None:
    """A policy's custom fact gets its own row, named and attributed to its check."""
    view = PrivacyView.from_policies(policies_from(CUSTOM_POLICY), retention_days=30)

    html = render_privacy(view).text

    assert "<code>custom.edr_running</code>" in html
    assert "Edr running" in html
    assert "firewall_enabled" in html


def test_who_sees_it_and_how_long_it_is_kept() -> None:
    """Groups, retention days and what upstream services receive are stated."""
    html = render_privacy(samples.privacy_view()).text

    assert "<code>security-team</code>" in html
    assert "<code>eng-managers</code>" in html
    assert "Older reports are deleted after 90 days." in html
    assert "for 400 days." in html
    assert "kept for 30 days." in html
    assert "They do not receive the health report." in html
    assert "needs a report from the last 15 minutes" in html


def test_values_are_escaped() -> None:
    """Group names and contact text from settings are escaped."""
    view = PrivacyView(facts_in_use=(), tiers=(TierInfo("t<script>", 0, (), samples.policies().tiers[0].max_snapshot_age,
                                                        samples.policies().tiers[0].break_glass),),
                       retention_days=1, admin_groups=("<script>g</script>",), contact="<script>x</script>")

    rendered = render_privacy(view)

    assert "<script" not in rendered.text
    assert "1 day." in rendered.text
    assert "no-store" == rendered.headers["Cache-Control"]
