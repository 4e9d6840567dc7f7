"""Stethoscope read as Stethoscope reports, through the ingest API: raw settings, verdicts, what it cannot measure, time, owners, back-end records, the policy round trip, the gate's answer."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app

from gateway.ingest.stethoscope import STETHOSCOPE_PRACTICES
from policy_engine import CompiledPolicySet, compile_policy_set, convert_stethoscope_policy, parse_policy_document
from policy_engine.model import DeviceSnapshot, OsFamily, Version
from policy_engine.stethoscope import STETHOSCOPE_FACTS
from tests.conftest import LogLines
from tests.gateway.fullstack import catch_all_upstream, Keys, MovableClock, gatehouse_settings, ingest_headers
from tests.gateway.ingest.conftest import Ingest
from tests.gateway.ingest.support import API_TOKEN

PATH = "/.gatehouse/api/v1/snapshots"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
FIXTURES = Path(__file__).parents[2] / "fixtures" / "stethoscope"
DEPLOY = Path(__file__).parents[3] / "deploy"
PASS_ANSWERS = ("app-pass-darwin.json", "app-pass-win32.json", "app-pass-linux-ubuntu.json", "app-pass-linux-fedora.json")


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def imported_default_policy() -> CompiledPolicySet:
    """Stethoscope's real default policy through `import-stethoscope`'s conversion, as YAML text, compiled."""
    document = convert_stethoscope_policy(yaml.safe_load((FIXTURES / "policy.yaml").read_text()))
    text = yaml.safe_dump(document, sort_keys=False)
    return compile_policy_set(parse_policy_document(yaml.safe_load(text), source="stethoscope.yaml"))


async def post(ingest: Ingest, payload: object) -> Any:
    response = await ingest.client.post(PATH, json=payload, headers=AUTH)
    assert 200 == response.status, await response.text()
    return await response.json()


async def stored(ingest: Ingest, payload: object, serial: str) -> DeviceSnapshot:
    body = await post(ingest, payload)
    held = ingest.cache.get(serial)
    assert held is not None, body
    return held


class TestRawSettingsAndVerdicts:
    async def test_the_documented_answer_stores_the_screen_lock_as_off(self, log_lines: LogLines, ingest: Ingest) -> None:
        """In Stethoscope's documented answer the raw screen lock is OFF and the verdict PASS: OFF is stored, the disagreement logged and counted."""
        held = await stored(ingest, fixture("app-docs-example.json"), "C02TESTDOCS1")

        assert (False, True, True, False, True) == (
            held.screen_lock_enabled, held.firewall_enabled, held.disk_encrypted, held.remote_login_enabled, held.auto_updates_enabled)
        logged = log_lines.events("stethoscope.verdict_disagreed")
        assert [("C02TESTDOCS1", "screenLock", "OFF", "PASS")] == [(e["serial"], e["practice"], e["setting"], e["verdict"]) for e in logged]
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_stethoscope_disagreements_total", {"practice": "screenLock"})

    async def test_verdicts_fill_in_what_the_raw_settings_lack(self, ingest: Ingest) -> None:
        """A practice absent from `device.security` comes from its verdict; agreeing sources log nothing."""
        answer = fixture("app-pass-linux-ubuntu.json")
        del answer["data"]["device"]["security"]["firewall"]
        answer["data"]["policy"]["validate"]["firewall"] = "FAIL"

        held = await stored(ingest, answer, "PF3TEST01")

        assert (False, True, True) == (held.firewall_enabled, held.custom["screen_idle_ok"], held.custom["no_open_wifi_networks"])
        assert ingest.metrics.registry.get_sample_value("gatehouse_stethoscope_disagreements_total", {"practice": "firewall"}) is None

    async def test_unknown_raw_setting_is_not_measurable_whatever_the_verdict(self, ingest: Ingest) -> None:
        """`UNKNOWN` (automatic updates on Fedora, screen idle on Windows) is not measurable by Stethoscope, although its verdict is PASS."""
        fedora = await stored(ingest, fixture("app-pass-linux-fedora.json"), "9XTEST02")
        windows = await stored(ingest, fixture("app-pass-win32.json"), "5CG1234TEST")

        assert (None, {"auto_updates_enabled", "screen_lock_delay_s"}) == (fedora.auto_updates_enabled, set(fedora.unmeasurable))
        assert ("screen_idle_ok" in windows.custom, {"custom.screen_idle_ok", "screen_lock_delay_s"}) == (False, set(windows.unmeasurable))

    async def test_unsupported_from_an_old_app_is_not_measurable_and_null_is_not_reported(self, ingest: Ingest) -> None:
        """`UNSUPPORTED` (app 1.0.3 and older) is not measurable; a null setting is merely not reported."""
        answer = fixture("app-pass-win32.json")
        answer["data"]["device"]["security"].update(firewall="UNSUPPORTED", remoteLogin=None)

        held = await stored(ingest, answer, "5CG1234TEST")

        assert (None, None) == (held.firewall_enabled, held.remote_login_enabled)
        assert ("firewall_enabled" in held.unmeasurable, "remote_login_enabled" in held.unmeasurable) == (True, False)

    @pytest.mark.parametrize("verdict", ["PASS", "FAIL"])
    async def test_macos_screen_lock_that_the_app_never_reads_is_not_measurable(self, ingest: Ingest, verdict: str) -> None:
        """App 5.x answers screenLock ON and screenIdle PASS on macOS without reading them: both are not measurable, whatever the verdict."""
        answer = fixture("app-pass-darwin.json")
        answer["data"]["policy"]["validate"].update(screenLock=verdict, screenIdle=verdict)

        held = await stored(ingest, answer, "C02TESTPASS1")

        assert (None, False) == (held.screen_lock_enabled, "screen_idle_ok" in held.custom)
        assert frozenset({"screen_lock_enabled", "custom.screen_idle_ok", "screen_lock_delay_s"}) == held.unmeasurable

    async def test_a_linux_answer_measures_its_screen_lock(self, ingest: Ingest) -> None:
        """Where the app reads the screen lock (GNOME on Linux) it is a fact; only the idle time in seconds is not measurable."""
        held = await stored(ingest, fixture("app-pass-linux-ubuntu.json"), "PF3TEST01")

        assert (True, True, frozenset({"screen_lock_delay_s"})) == (held.screen_lock_enabled, held.custom["screen_idle_ok"], held.unmeasurable)


class TestDeviceFields:
    @pytest.mark.parametrize(
        ("name", "serial", "distribution", "version"),
        [("app-pass-linux-ubuntu.json", "PF3TEST01", "ubuntu", "24.4"), ("app-pass-linux-fedora.json", "9XTEST02", "fedora", "40")],
    )
    async def test_linux_distribution_comes_from_the_os_release_name(
        self, ingest: Ingest, name: str, serial: str, distribution: str, version: str
    ) -> None:
        """`platform: linux` with `platformName` Ubuntu or Fedora Linux gives the distribution id; `40.undefined.0` reads as 40."""
        held = await stored(ingest, fixture(name), serial)

        assert (OsFamily.LINUX, distribution, Version.parse(version)) == (held.platform, held.distribution, held.os_version)

    async def test_an_answer_without_time_is_dated_when_received(self, ingest: Ingest) -> None:
        """The app sends no time: the snapshot is dated at ingest."""
        held = await stored(ingest, fixture("app-pass-win32.json"), "5CG1234TEST")

        assert ingest.clock() == held.collected_at

    async def test_a_user_inside_the_answer_is_not_an_owner(self, ingest: Ingest) -> None:
        """An email inside the device's own answer is ignored; only the relay's `owners` beside it count."""
        answer = fixture("app-pass-win32.json")
        answer["data"]["device"]["email"] = "mallory@example.com"
        relayed = copy.deepcopy(answer) | {"owners": ["Bob@Example.com"]}
        relayed["data"]["device"]["hardwareSerial"] = "5CG1234TES2"

        alone = await stored(ingest, answer, "5CG1234TEST")
        with_relay = await stored(ingest, relayed, "5CG1234TES2")

        assert ((), ("bob@example.com",)) == (alone.owners, with_relay.owners)


class TestBackendRecords:
    async def test_merged_device_records_are_accepted_and_phones_refused(self, ingest: Ingest) -> None:
        """The back end's merged list is read by `identifiers.serial`, `last_sync` and `practices.*`; an iOS record is refused by platform."""
        body = await post(ingest, fixture("backend-merged-devices.json"))

        held = ingest.cache.get("C02TESTBACK1")
        assert ["stored", "rejected"] == [r["outcome"] for r in body["results"]]
        assert ["[1].platform"] == [e["field"].removeprefix("snapshots") for e in body["results"][1]["errors"]]
        assert held is not None
        assert (OsFamily.DARWIN, "2026-11-22T13:15:38.668000+00:00", True, True, False, True, False) == (
            held.platform, held.collected_at.isoformat(), held.firewall_enabled, held.disk_encrypted,
            held.auto_updates_enabled, held.screen_lock_enabled, held.remote_login_enabled)
        assert "PASS" == held.custom["stethoscope_os_version"]

    async def test_a_practice_the_back_end_marks_na_is_not_measurable(self, ingest: Ingest) -> None:
        """`status: na` (the back end's NA_PLATFORMS, such as remotelogin on Windows) is not measurable; `unknown` is not reported."""
        record = fixture("backend-merged-devices.json")[0]
        record["practices"]["remotelogin"] = {"status": "na"}
        record["practices"]["screenlock"] = {"status": "unknown"}

        held = await stored(ingest, record, "C02TESTBACK1")

        assert (None, None) == (held.remote_login_enabled, held.screen_lock_enabled)
        assert frozenset({"remote_login_enabled", "screen_lock_delay_s"}) == held.unmeasurable


class TestPolicyRoundTrip:
    def test_the_ingest_sets_the_facts_the_importer_checks(self) -> None:
        """Every practice the importer maps is a fact the Stethoscope ingest sets, under the same name."""
        assert dict(STETHOSCOPE_FACTS) == {practice: spec.fact for practice, spec in STETHOSCOPE_PRACTICES.items()}

    @pytest.mark.parametrize("name", PASS_ANSWERS)
    async def test_an_answer_stethoscope_rates_pass_is_allowed_at_every_tier(self, ingest: Ingest, name: str) -> None:
        """Stethoscope's default policy, imported: a device the app rates PASS is allowed at every tier."""
        answer = fixture(name)
        policies = imported_default_policy()

        held = await stored(ingest, answer, answer["data"]["device"]["hardwareSerial"])

        assert "PASS" == answer["data"]["policy"]["validate"]["status"]
        for tier in policies.tier_names:
            decision = policies.evaluate(held, tier, now=ingest.clock())
            assert (True, ()) == (decision.allowed, decision.failing), (tier, decision)

    async def test_an_answer_stethoscope_rates_fail_is_denied_naming_the_practices(self, ingest: Ingest) -> None:
        """The FAIL answer (FileVault off, Remote Login on) is denied at every tier, naming those two checks."""
        policies = imported_default_policy()

        held = await stored(ingest, fixture("app-fail-darwin.json"), "C02TESTFAIL1")

        for tier in policies.tier_names:
            decision = policies.evaluate(held, tier, now=ingest.clock())
            assert (False, ["disk_encryption", "remote_login"]) == (decision.allowed, sorted(f.check for f in decision.failing))


class GatedStack:
    """A full Gatehouse (create_app behind the production listener) fed by the Stethoscope JSON ingest, and a recording upstream."""

    def __init__(self, client: TestClient, keys: Keys, clock: MovableClock, upstream_paths: list[str]) -> None:
        self.client, self.keys, self.clock, self.upstream_paths = client, keys, clock, upstream_paths

    async def ingest(self, answer: object) -> None:
        response = await self.client.post(PATH, json={"snapshots": [answer]}, headers=ingest_headers())
        assert 200 == response.status, await response.text()

    async def get(self, path: str, serial: str, accept: str) -> tuple[int, str, str]:
        token = self.keys.token("erin@example.com", device=serial, now=self.clock())
        response = await self.client.get(path, headers={"Authorization": f"Bearer {token}", "Accept": accept})
        return response.status, response.headers.get("X-Gatehouse-Denied-Reason", ""), await response.text()


StartGated = Callable[[str], Awaitable[GatedStack]]


@pytest.fixture
def start_gated(aiohttp_client: Callable[..., Awaitable[TestClient]], aiohttp_server: Any, tmp_path: Path) -> StartGated:
    """Start a Gatehouse under `policy` (a file in deploy/) with route /steth/ at its first tier plus the example routes."""

    async def start(policy: str) -> GatedStack:
        paths: list[str] = []

        async def handle(request: web.Request) -> web.Response:
            paths.append(request.path)
            return web.Response(text="upstream")

        upstream = await catch_all_upstream(aiohttp_server, handle)
        policy_path = DEPLOY / policy
        tier = next(iter(yaml.safe_load(policy_path.read_text())["tiers"]))
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        routes = [{"id": "steth", "path_prefix": "/steth", "upstream": upstream, "tier": tier}]
        if policy == "policy.yaml":
            routes.append({"id": "wiki", "path_prefix": "/wiki", "upstream": upstream, "tier": "medium"})
        settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=upstream,
                                      policy=str(policy_path), routes=routes)
        client = await aiohttp_client(create_app(settings, clock=clock))
        return GatedStack(client, keys, clock, paths)

    return start


def stamped(name: str, clock: MovableClock) -> Any:
    """A fixture answer relayed with the time it was collected (the app itself sends none)."""
    return fixture(name) | {"collected_at": clock().isoformat()}


class TestThroughTheGate:
    async def test_the_imported_policy_lets_a_mac_stethoscope_rates_pass_through(self, start_gated: StartGated) -> None:
        """Under deploy/policy-stethoscope-default.yaml a Mac whose screen lock Stethoscope cannot see is proxied, not denied."""
        stack = await start_gated("policy-stethoscope-default.yaml")
        await stack.ingest(stamped("app-pass-darwin.json", stack.clock))

        status, reason, _ = await stack.get("/steth/", "C02TESTPASS1", "application/json")

        assert (200, "", ["/steth/"]) == (status, reason, stack.upstream_paths)

    async def test_the_imported_policy_denies_a_failing_mac_without_a_word_about_its_screen_lock(self, start_gated: StartGated) -> None:
        """FileVault off and Remote Login on: the denial names those two and never mentions the screen lock Stethoscope cannot see."""
        stack = await start_gated("policy-stethoscope-default.yaml")
        await stack.ingest(stamped("app-fail-darwin.json", stack.clock))

        status, reason, body = await stack.get("/steth/", "C02TESTFAIL1", "application/json")
        _, _, page = await stack.get("/steth/", "C02TESTFAIL1", "text/html")

        problem = orjson.loads(body)
        assert (403, "checks-failed") == (status, reason)
        assert (["disk_encryption", "remote_login"], []) == (
            sorted(f["check"] for f in problem["failing"]), [f["check"] for f in problem.get("nudges", [])])
        assert "FileVault" in page
        assert [] == [word for word in ("screen lock", "Screen Lock", "Lock Screen", "askForPassword") if word in page]

    async def test_the_example_policy_says_the_screen_lock_was_not_checked_instead_of_asking_to_fix_it(
        self, start_gated: StartGated
    ) -> None:
        """Under deploy/policy.yaml the same Mac's screen lock and idle time are "Not checked" notes without fix steps."""
        stack = await start_gated("policy.yaml")
        await stack.ingest(stamped("app-fail-darwin.json", stack.clock))

        status, reason, body = await stack.get("/wiki/", "C02TESTFAIL1", "application/json")
        _, _, page = await stack.get("/wiki/", "C02TESTFAIL1", "text/html")

        problem = orjson.loads(body)
        assert (403, "checks-failed") == (status, reason)
        assert {"screen_lock": True, "screen_lock_delay": True} == {
            f["check"]: f["unmeasurable"] for f in problem["nudges"] if f["check"].startswith("screen_lock")}
        assert "Not checked: require a password when the screen locks" in page
        assert "Not checked: lock the screen sooner when idle" in page
        assert [] == [word for word in ("Lock Screen", "askForPassword", "idleTime") if word in page]
