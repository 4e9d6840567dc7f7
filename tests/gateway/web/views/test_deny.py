"""The 403 denial: negotiation, every reason, own-platform steps, grace, nudges, forms, escaping."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.web.views import BreakglassOffer, DenyView, platform_from_user_agent, render_deny
from gateway.web.views.layout import CONTENT_SECURITY_POLICY
from policy_engine.decision import Decision, Finding, Reason
from policy_engine.document import Severity
from policy_engine.model import OsFamily, Version
from policy_engine.remediation import Remediation
from tests.gateway.web.views import samples
from tests.policy_engine.factories import make_snapshot

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
NOW = samples.NOW


def html_of(view: DenyView) -> str:
    return render_deny(view, accept=BROWSER).text


def problem_of(view: DenyView) -> dict[str, object]:
    rendered = render_deny(view, accept="application/problem+json")
    return json.loads(rendered.body)


def one_h1(html: str) -> bool:
    return 1 == len(re.findall(r"<h1[ >]", html))


class TestNegotiation:
    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            (BROWSER, "text/html"),
            ("text/html", "text/html"),
            ("*/*", "application/problem+json"),
            ("", "application/problem+json"),
            (None, "application/problem+json"),
            ("application/json", "application/problem+json"),
            ("application/problem+json", "application/problem+json"),
            ("application/json, text/html;q=0.5", "application/problem+json"),
            ("text/html;q=0.9, application/json;q=0.5", "text/html"),
        ],
    )
    def test_content_type_follows_accept(self, accept: str | None, expected: str) -> None:
        """Browsers get HTML; curl's `*/*`, no Accept and JSON clients get problem+json."""
        rendered = render_deny(samples.deny_view(), accept=accept)

        assert expected == rendered.content_type
        assert 403 == rendered.status

    @pytest.mark.parametrize("accept", [BROWSER, "*/*"])
    def test_every_response_carries_the_reason_and_security_headers(self, accept: str) -> None:
        """Both forms carry X-Gatehouse-Denied-Reason, the CSP, nosniff, no-referrer and no-store."""
        rendered = render_deny(samples.deny_view(), accept=accept)

        assert "checks-failed" == rendered.headers["X-Gatehouse-Denied-Reason"]
        assert CONTENT_SECURITY_POLICY == rendered.headers["Content-Security-Policy"]
        assert "nosniff" == rendered.headers["X-Content-Type-Options"]
        assert "no-referrer" == rendered.headers["Referrer-Policy"]
        assert "no-store" == rendered.headers["Cache-Control"]
        assert "Accept" == rendered.headers["Vary"]

    def test_problem_json_has_the_rfc_9457_members_and_the_page_content(self) -> None:
        """type/title/status/detail/instance, plus the findings with their sentences and steps."""
        doc = problem_of(samples.deny_view())

        assert "urn:gatehouse:problem:checks-failed" == doc["type"]
        assert 403 == doc["status"]
        assert "/repos/gatehouse?tab=code" == doc["instance"]
        assert doc["title"] and doc["detail"]
        assert "checks-failed" == doc["reason"]
        messages = [f["message"] for f in doc["failing"]]  # type: ignore[index,union-attr]
        assert "Your macOS is 13.2.1; this service needs at least 14.4" in messages
        assert ["screen_lock_delay"] == [f["check"] for f in doc["in_grace"]]  # type: ignore[index,union-attr]
        assert "2026-11-24T16:00:00+00:00" == doc["in_grace"][0]["grace_deadline"]  # type: ignore[index]
        assert {"auto_updates", "os_update_available"} == {f["check"] for f in doc["nudges"]}  # type: ignore[index,union-attr]
        assert "C02XK1JHJG5J" == doc["device"]["serial"]  # type: ignore[index]
        assert "medium" == doc["tier"]["name"]  # type: ignore[index]
        assert {"url": "/.gatehouse/recheck", "method": "POST", "refresh_eta_s": 20, "source": None} == doc["recheck"]
        assert True is doc["break_glass"]["needs_approval"]  # type: ignore[index]


def decision_for(reason: Reason) -> tuple[Decision, object]:
    """A realistic decision with the given reason, and the snapshot it came from."""
    mac = samples.outdated_mac()
    if reason is Reason.DEVICE_UNKNOWN:
        return samples.decide(None, "medium"), None
    if reason is Reason.SNAPSHOT_STALE:
        old = samples.outdated_mac(collected_at=NOW - timedelta(hours=5), received_at=NOW - timedelta(hours=5))
        return samples.decide(old, "high"), old
    if reason is Reason.SNAPSHOT_FROM_FUTURE:
        ahead = samples.outdated_mac(collected_at=NOW + timedelta(hours=2), received_at=NOW + timedelta(hours=2))
        return samples.decide(ahead, "medium"), ahead
    if reason is Reason.CHECKS_FAILED:
        return samples.decide(mac, "medium"), mac
    if reason is Reason.TIER_UNKNOWN:
        return samples.decide(mac, "secret"), mac
    if reason is Reason.CHECK_ERROR:
        return Decision(False, "medium", Reason.CHECK_ERROR, evaluated_at=NOW,
                        detail="check `os_current` raised TypeError"), mac
    if reason is Reason.CHECK_UNMEASURABLE:
        return Decision(False, "medium", reason, failing=(UNMEASURED_LOCK,), evaluated_at=NOW), mac
    return Decision(False, "medium", reason, evaluated_at=NOW), mac


UNMEASURED_LOCK = Finding("screen_lock", "screen_lock_enabled", "not measurable by osquery on darwin", "on",
                          Severity.FAIL, None, "screen_lock", True)

HEADLINES = {
    Reason.DEVICE_UNKNOWN: "Gatehouse has never received a health report from this device",
    Reason.SNAPSHOT_STALE: "Gatehouse has not heard from this device recently",
    Reason.SNAPSHOT_FROM_FUTURE: "Your device&#x27;s clock is ahead",
    Reason.CHECKS_FAILED: "Your device needs attention before you can open",
    Reason.TIER_UNKNOWN: "is not available right now",
    Reason.CHECK_ERROR: "Gatehouse could not check your device",
    Reason.CHECK_UNMEASURABLE: "Gatehouse could not check this device for",
    Reason.DEVICE_NOT_OWNED: "This device belongs to someone else",
    Reason.DEVICE_UNOWNED: "This device is not registered to anyone",
    Reason.OK: "was denied",
    Reason.IDENTITY_ONLY: "was denied",
}


class TestEveryReason:
    @pytest.mark.parametrize("reason", list(Reason))
    def test_each_reason_renders_a_page_and_a_problem(self, reason: Reason) -> None:
        """Every reason code gets its own headline, one h1, the code in the header, and valid JSON."""
        decision, snapshot = decision_for(reason)
        view = samples.deny_view(snapshot=snapshot, decision=decision, tier=decision.tier
                                 if decision.tier in samples.policies().tier_names else "medium")

        html = html_of(view)
        doc = problem_of(view)

        assert reason.value == decision.reason.value
        assert HEADLINES[reason] in html
        assert one_h1(html)
        assert f"<code>{reason.value}</code>" in html
        assert reason.value == doc["reason"]
        assert render_deny(view, accept="*/*").headers["X-Gatehouse-Denied-Reason"] == reason.value

    def test_unmeasurable_check_says_what_was_not_checked_and_gives_no_fix_steps(self) -> None:
        """A check the agent cannot measure is shown as not checked, with why, and never with steps to fix it."""
        decision, snapshot = decision_for(Reason.CHECK_UNMEASURABLE)
        view = samples.deny_view(snapshot=snapshot, decision=decision, tier="medium")

        html = html_of(view)
        doc = problem_of(view)

        assert "What Gatehouse could not check" in html
        assert "not measurable by osquery on darwin" in html
        assert "How to fix it" not in html and "Lock-Screen-Settings" not in html
        assert (True, "") == (doc["failing"][0]["unmeasurable"], doc["failing"][0]["steps"])

    def test_unknown_device_explains_how_to_start_its_agent(self) -> None:
        """A named device that never reported gets the agent's install steps with the osquery flags, and its serial."""
        html = html_of(samples.deny_view(None, serial="C02UNKNOWN99"))

        assert "Install and start the health agent" in html
        assert "--enroll_secret_path" in html
        assert "C02UNKNOWN99" in html

    def test_enrollment_steps_follow_the_browsers_platform(self) -> None:
        """Without a snapshot, the User-Agent's platform picks the enrollment steps; unknown shows all."""
        ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
        windows = html_of(samples.deny_view(None, serial="C02UNKNOWN99", platform_hint=platform_from_user_agent(ua)))
        unknown = html_of(samples.deny_view(None, serial="C02UNKNOWN99"))

        assert "Start-Service osqueryd" in windows
        assert "systemctl" not in windows and "osqueryctl" not in windows
        assert "Start-Service osqueryd" in unknown and "osqueryctl" in unknown and "systemctl" in unknown

    @pytest.mark.parametrize(
        ("user_agent", "expected"),
        [
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15", OsFamily.DARWIN),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", OsFamily.LINUX),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0", OsFamily.WINDOWS),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Safari/604.1", OsFamily.UNKNOWN),
            ("curl/8.5.0", OsFamily.UNKNOWN),
        ],
    )
    def test_platform_from_user_agent(self, user_agent: str, expected: OsFamily) -> None:
        """Desktop browsers map to their platform; phones and CLIs stay unknown."""
        assert expected == platform_from_user_agent(user_agent)

    def test_enrollment_text_is_configurable(self) -> None:
        """A deployment's own enrollment text replaces the default, rendered as Markdown."""
        view = samples.deny_view(None, serial="C02UNKNOWN99",
                                 enroll_help="Open **Self Service** and install *Gatehouse Agent*.")

        html = html_of(view)

        assert "Open <strong>Self Service</strong> and install <em>Gatehouse Agent</em>." in html
        assert "--enroll_secret_path" not in html

    def test_no_device_identity_says_so_and_offers_no_break_glass(self) -> None:
        """Without a verified serial the page says the device was not identified; break-glass is not offered."""
        html = html_of(samples.deny_view(None, serial=None, tier="low"))

        assert "Gatehouse could not identify this device" in html
        assert "/.gatehouse/break-glass" not in html

    def test_no_device_with_enrollment_on_gives_this_platforms_two_commands(self) -> None:
        """No device and a Gatehouse that enrolls laptops: the page gives the Mac's download and enroll commands only."""
        view = samples.deny_view(None, serial=None, platform_hint=OsFamily.DARWIN, enroll_origin="https://gh.example")

        html = html_of(view)

        assert "Enroll this laptop to open" in html
        assert "curl -fsSLO https://gh.example/.gatehouse/enroll/gatehouse_enroll.py" in html
        assert "python3 gatehouse_enroll.py https://gh.example" in html
        assert "Invoke-WebRequest" not in html and "osquery" not in html

    def test_no_device_on_an_unknown_platform_lists_every_platform(self) -> None:
        """A phone or unknown browser sees the macOS, Windows and Linux commands, each under its name."""
        view = samples.deny_view(None, serial=None, enroll_origin="https://gh.example")

        html = html_of(view)

        assert ['data-platform="darwin"', 'data-platform="windows"', 'data-platform="linux"'] == re.findall(
            r'data-platform="[a-z]+"', html)
        assert "py gatehouse_enroll.py https://gh.example" in html

    def test_no_device_with_enrollment_off_says_ask_it_not_install_osquery(self) -> None:
        """Without Gatehouse's device CA the page sends the user to IT, never to install an agent that cannot help."""
        html = html_of(samples.deny_view(None, serial=None, platform_hint=OsFamily.LINUX))

        assert "Ask IT how this device is identified" in html
        assert "osquery" not in html and "gatehouse_enroll.py" not in html

    def test_problem_json_carries_the_enroll_commands(self) -> None:
        """API clients get the same commands in an `enroll` object, for the client's platform."""
        view = samples.deny_view(None, serial=None, platform_hint=OsFamily.WINDOWS, enroll_origin="https://gh.example")

        doc = problem_of(view)

        assert {
            "client_url": "https://gh.example/.gatehouse/enroll/gatehouse_enroll.py", "platform": "windows",
            "commands": [{
                "platform": "windows", "terminal": "PowerShell",
                "install": "Invoke-WebRequest -Uri https://gh.example/.gatehouse/enroll/gatehouse_enroll.py -OutFile gatehouse_enroll.py",
                "enroll": "py gatehouse_enroll.py https://gh.example",
                "pipx": "pipx run https://gh.example/.gatehouse/enroll/gatehouse_enroll.py https://gh.example",
            }],
        } == {k: v for k, v in doc["enroll"].items() if k != "steps"}  # type: ignore[union-attr]

    def test_a_named_device_never_gets_enroll_commands(self) -> None:
        """A request that names a device is already enrolled: it gets the agent's steps even when enrollment is on."""
        view = samples.deny_view(None, serial="C02UNKNOWN99", platform_hint=OsFamily.DARWIN, enroll_origin="https://gh.example")

        html, doc = html_of(view), problem_of(view)

        assert "Install and start the health agent" in html and "gatehouse_enroll.py" not in html
        assert "enroll" not in doc

    def test_stale_snapshot_says_when_gatehouse_last_heard(self) -> None:
        """A stale device sees when its last report arrived, the tier's limit, and how to restart the agent."""
        decision, snapshot = decision_for(Reason.SNAPSHOT_STALE)

        html = html_of(samples.deny_view(snapshot=snapshot, decision=decision, tier="high"))

        assert "Gatehouse last heard from this device on" in html
        assert "sudo launchctl kickstart -k system/io.osquery.agent" in html
        assert "Restart-Service" not in html
        assert "22 Nov 10:00 UTC" in html
        assert "5 hours ago" in html
        assert "needs a report from the last 15 minutes" in html
        assert "Get the health agent reporting again" in html

    def test_clock_ahead_shows_the_clock_fix_for_the_platform(self) -> None:
        """A snapshot from the future shows how to set the clock automatically on the device's own OS."""
        decision, snapshot = decision_for(Reason.SNAPSHOT_FROM_FUTURE)

        html = html_of(samples.deny_view(snapshot=snapshot, decision=decision))

        assert "2 hours in the future" in html
        assert "x-apple.systempreferences:com.apple.Date-Time-Settings.extension" in html
        assert "timedatectl" not in html

    def test_check_error_gives_a_reference_for_it(self) -> None:
        """A broken check shows the request reference and the detail for IT."""
        decision, snapshot = decision_for(Reason.CHECK_ERROR)

        html = html_of(samples.deny_view(snapshot=snapshot, decision=decision))

        assert "req-7f3a9c" in html
        assert "check `os_current` raised TypeError" in html


class TestFindings:
    def test_failing_checks_show_title_sentence_why_and_doc_link(self) -> None:
        """Each blocking check shows its title, actual vs required, why it matters and the guide."""
        html = html_of(samples.deny_view())

        assert "Turn on the firewall" in html
        assert "Your firewall is off; this service needs it on." in html
        assert "Your macOS is 13.2.1; this service needs at least 14.4." in html
        assert "The firewall blocks unexpected incoming connections" in html
        assert 'href="https://wiki.example.com/it/os-updates"' in html

    def test_grace_checks_show_their_deadline(self) -> None:
        """A check in its grace period says from when it will block."""
        html = html_of(samples.deny_view())

        assert "This will block access from " in html
        assert ">24 Nov 16:00 UTC</time> (in 2 days 1 hour)." in html
        assert "Fix soon" in html

    def test_nudges_are_warnings_that_do_not_block(self) -> None:
        """Nudges appear under Recommended and say they never block."""
        html = html_of(samples.deny_view())

        recommended = html.split("<h2>Recommended</h2>", 1)[1].split("<h2>", 1)[0]
        assert "These never block access" in recommended
        assert "Turn on automatic updates" in recommended
        assert "Gatehouse recommends turning them on" in recommended

    @pytest.mark.parametrize(
        ("platform", "own", "others"),
        [
            (OsFamily.DARWIN, "x-apple.systempreferences:com.apple.preference.security?Firewall",
             ["sudo ufw enable", "Microsoft Defender Firewall"]),
            (OsFamily.WINDOWS, "Microsoft Defender Firewall", ["sudo ufw enable", "x-apple.systempreferences"]),
            (OsFamily.LINUX, "sudo ufw enable", ["Microsoft Defender Firewall", "x-apple.systempreferences"]),
        ],
    )
    def test_steps_are_for_the_devices_own_platform(self, platform: OsFamily, own: str, others: list[str]) -> None:
        """The firewall steps shown are the device's platform's, never another platform's."""
        snapshot = samples.outdated_mac(platform=platform, os_name={"darwin": "macOS", "windows": "Windows 11",
                                                                    "linux": "Ubuntu"}[platform.value],
                                        distribution="ubuntu" if platform is OsFamily.LINUX else "",
                                        os_version=Version.parse("24.04" if platform is OsFamily.LINUX
                                                                 else "10.0.26100" if platform is OsFamily.WINDOWS
                                                                 else "15.1"))

        html = html_of(samples.deny_view(snapshot=snapshot))

        assert own in html
        assert f"How to fix it on {samples.platform_label(platform)}" in html
        for text in others:
            assert text not in html

    def test_unknown_platform_shows_every_platforms_steps(self) -> None:
        """When the platform is unknown, every platform's steps are shown, labelled."""
        snapshot = samples.outdated_mac(platform=OsFamily.UNKNOWN, os_name="")

        html = html_of(samples.deny_view(snapshot=snapshot))

        assert "How to fix it on your device" in html
        assert "sudo ufw enable" in html and "Microsoft Defender Firewall" in html

    def test_a_check_without_a_catalog_entry_still_renders(self) -> None:
        """A finding whose remediation key is unknown gets a title from its check name."""
        decision = Decision(False, "medium", Reason.CHECKS_FAILED, failing=(
            Finding("edr_running", "custom.edr", "off", "on", Severity.FAIL, None, "edr"),), evaluated_at=NOW)

        html = html_of(samples.deny_view(decision=decision))

        assert "Edr running" in html
        assert "Your edr is off; this service needs it to be on." in html
        assert "Ask IT how to fix this on macOS." in html


class TestForms:
    def test_recheck_form_posts_return_url_and_csrf_token(self) -> None:
        """"I fixed it, check again" posts the return URL and the CSRF token to /.gatehouse/recheck."""
        html = html_of(samples.deny_view())

        form = html.split('action="/.gatehouse/recheck"', 1)[1].split("</form>", 1)[0]
        assert '<form method="post" action="/.gatehouse/recheck">' in html
        assert '<input type="hidden" name="return_to" value="/repos/gatehouse?tab=code">' in form
        assert '<input type="hidden" name="csrf_token" value="csrf-token-123">' in form
        assert "I fixed it, check again" in form

    def test_refresh_eta_is_announced(self) -> None:
        """When the agent can be asked for a fresh snapshot, the page says how long it takes."""
        with_eta = html_of(samples.deny_view(refresh_eta_s=45))
        without = html_of(samples.deny_view(refresh_eta_s=None))

        assert "that takes about 45 seconds" in with_eta
        assert "fresh health report" not in without

    def test_break_glass_form_when_the_tier_allows_it(self) -> None:
        """The break-glass form has a labelled reason (min length), duration choices and the CSRF token."""
        offer = BreakglassOffer.up_to(timedelta(hours=8), default=timedelta(hours=1), min_reason_length=30)

        html = html_of(samples.deny_view(tier="low", breakglass=offer))

        form = html.split('action="/.gatehouse/break-glass"', 1)[1].split("</form>", 1)[0]
        assert '<label for="bg-reason">' in form
        assert 'name="reason" required minlength="30"' in form
        assert '<label for="bg-duration">' in form
        assert ['900', '1800', '3600', '7200', '14400', '28800'] == re.findall(r'<option value="(\d+)"', form)
        assert '<option value="3600" selected>1 hour</option>' in form
        assert 'name="csrf_token" value="csrf-token-123"' in form
        assert "Access starts as soon as you submit." in html

    def test_approval_tier_says_an_approver_decides(self) -> None:
        """On an approval tier the form says the request waits for an approver."""
        html = html_of(samples.deny_view(tier="medium"))

        assert "An approver has to approve the request" in html

    def test_no_break_glass_form_where_the_tier_forbids_it(self) -> None:
        """The high tier (break_glass: never) shows no form and the JSON says null."""
        view = samples.deny_view(tier="high")

        assert None is view.breakglass
        assert "/.gatehouse/break-glass" not in html_of(view)
        assert None is problem_of(view)["break_glass"]


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
ATTR = '" onmouseover="alert(3)'


class TestEscaping:
    def hostile_view(self) -> DenyView:
        snapshot = samples.outdated_mac(hostname=HOSTILE, serial=ATTR, os_name="<script>mac</script>",
                                        owners=(HOSTILE,), agent_name="<b>agent</b>")
        catalog = dict(samples.policies().remediation)
        catalog["firewall"] = Remediation(
            key="firewall", title="<script>t</script>", why=HOSTILE,
            steps={OsFamily.DARWIN: "[click](javascript:alert(4)) <script>x</script> [ok](https://a.example/?q=1&r=2)"},
            doc_url="javascript:alert(5)")
        decision = samples.decide(snapshot, "medium")
        decision = dataclasses.replace(decision, failing=decision.failing + (
            Finding(HOSTILE, "custom.x", HOSTILE, ATTR, Severity.FAIL, None, HOSTILE),))
        return samples.deny_view(snapshot=snapshot, decision=decision, serial=ATTR, remediation=catalog,
                                 return_to=f"/x?{ATTR}", csrf_token=ATTR, user=HOSTILE, service_name=HOSTILE,
                                 route_id=HOSTILE, request_id=HOSTILE, tier="low",
                                 breakglass=samples.offer_for("low"))

    def test_no_raw_markup_from_any_input_reaches_the_page(self) -> None:
        """Hostile names, serials, owners, reasons, tokens and Markdown are escaped everywhere."""
        html = html_of(self.hostile_view())

        assert "<script" not in html.lower()
        assert "<img" not in html.lower()
        assert '" onmouseover=' not in html
        assert "javascript:" not in html
        assert "&lt;script&gt;" in html
        assert 'href="https://a.example/?q=1&amp;r=2"' in html

    def test_hostile_values_round_trip_through_problem_json(self) -> None:
        """JSON carries hostile values verbatim (it is data, not markup) and stays valid."""
        doc = problem_of(self.hostile_view())

        assert ATTR == doc["device"]["serial"]  # type: ignore[index]
        assert HOSTILE == doc["device"]["name"]  # type: ignore[index]
        assert "" == doc["failing"][0]["doc_url"]  # type: ignore[index]


def test_the_default_view_fills_now_from_the_decision() -> None:
    """Without `now`, relative times use the decision's evaluation time."""
    view = dataclasses.replace(samples.deny_view(), now=None)

    html = html_of(view)

    assert "(3 minutes ago)" in html


def test_a_snapshot_of_another_family_name_is_shown_as_reported() -> None:
    """The OS name shown is the agent's (Windows 11 Pro), not only the platform family."""
    win = make_snapshot(platform=OsFamily.WINDOWS, os_name="Windows 11 Pro", os_version=Version.parse("10.0.19045"),
                        sip_enabled=None, gatekeeper_enabled=None)

    html = html_of(samples.deny_view(snapshot=win, serial=win.serial))

    assert "Your Windows 11 Pro is 10.0.19045; this service needs at least 10.0.22631." in html


class TestOfferFromRule:
    def test_an_approval_rule_offers_choices_up_to_its_maximum(self) -> None:
        """The tier rule's maximum ends the choices, its default is selected, approval is flagged."""
        from breakglass.model import TierMode, TierRule

        offer = BreakglassOffer.from_rule(
            TierRule(TierMode.APPROVAL, max_duration=timedelta(hours=4), default_duration=timedelta(minutes=45)),
            min_reason_length=25, max_reason_length=500)

        assert offer is not None
        assert [15, 30, 45, 60, 120, 240] == [int(d.total_seconds() // 60) for d in offer.durations]
        assert timedelta(minutes=45) == offer.default_duration
        assert (True, 25, 500) == (offer.needs_approval, offer.min_reason_length, offer.max_reason_length)

    def test_a_never_rule_offers_nothing(self) -> None:
        """`never` tiers get no offer at all."""
        from breakglass.model import TierMode, TierRule

        assert None is BreakglassOffer.from_rule(TierRule(TierMode.NEVER))


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_device_and_request_values_never_add_markup(name: str, serial: str, user: str) -> None:
    """Whatever a device or request says, it adds no `<` to the page: every value is escaped."""
    baseline = html_of(samples.deny_view(snapshot=samples.outdated_mac(hostname="n", serial="s"), serial="s",
                                         user="u", return_to="/r", csrf_token="t", tier="low",
                                         breakglass=samples.offer_for("low")))

    html = html_of(samples.deny_view(snapshot=samples.outdated_mac(hostname=name, serial=serial), serial=serial,
                                     user=user, return_to=name, csrf_token=serial, tier="low",
                                     breakglass=samples.offer_for("low")))

    assert baseline.count("<") == html.count("<")
