"""The `gatehouse` command: every subcommand's exit codes and output, over real files, stores and audit logs."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import orjson
import pytest
import yaml

from breakglass import BreakglassService, GrantRequest, Scope, TierMode, TierRule
from gateway.config.breakglass import BreakglassSettings
from gateway.cli.main import main
from gateway.cli.commands import (
    EXIT_USAGE, Progress, Refused, check_config, check_policy, cross_check, explain_device, import_snapshots,
    parse_moment, simulate_policy,
)
from gateway.cli.demo import DEMO_KEY_FILE, ensure_demo_key
from gateway.config.policy_file import load_policy
from gateway.config.settings import load_settings
from gateway.store import open_store
from gateway.store.sqlite_audit import SqliteAuditSink
from policy_engine import DeviceSnapshot, outcome_of
from tests.conftest import free_port
from tests.policy_engine.factories import make_snapshot

ROOT = Path(__file__).resolve().parents[3]
DEPLOY_POLICY = ROOT / "deploy" / "policy.yaml"
STETHOSCOPE_POLICY = ROOT / "tests" / "fixtures" / "stethoscope" / "policy.yaml"
OSQUERY_FIXTURES = ROOT / "tests" / "fixtures" / "osquery"
NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
REASON = "paged at 3am: billing database is down, INC-4711"

FLEET: tuple[DeviceSnapshot, ...] = (
    make_snapshot(serial="GOOD1", owners=("alice@example.com",)),
    make_snapshot(serial="FWGRACE", owners=("bob@example.com",), firewall_enabled=False),
    make_snapshot(serial="FWLATE", owners=("carol@example.com",), firewall_enabled=False),
    make_snapshot(serial="NODISK", owners=("dave@example.com",), disk_encrypted=False),
    make_snapshot(serial="STALE", owners=("erin@example.com",), age=timedelta(hours=2)),
    make_snapshot(serial="NUDGE", owners=("frank@example.com",), auto_updates_enabled=False),
)
FAILING = (("FWGRACE", "firewall", NOW - timedelta(hours=1)), ("FWLATE", "firewall", NOW - timedelta(hours=100)))
"""The firewall grace is 72 h: FWGRACE is still in grace at NOW, FWLATE is past it."""


def clock() -> datetime:
    return NOW


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def write_config(tmp_path: Path, **extra: object) -> Path:
    """A configuration with three routes on deploy/policy.yaml's tiers and a SQLite store in ``tmp_path``."""
    raw: dict[str, object] = {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "store": f"sqlite:///{tmp_path / 'gatehouse.db'}",
        "policy": str(DEPLOY_POLICY),
        "routes": [
            {"id": "wiki", "path_prefix": "/wiki", "upstream": "http://127.0.0.1:9", "tier": "low"},
            {"id": "source", "path_prefix": "/source", "upstream": "http://127.0.0.1:9", "tier": "medium"},
            {"id": "prod", "path_prefix": "/prod", "upstream": "http://127.0.0.1:9", "tier": "high"},
        ],
    }
    raw.update(extra)
    path = tmp_path / "gatehouse.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def db_of(tmp_path: Path) -> Path:
    return tmp_path / "gatehouse.db"


def seed_store(tmp_path: Path, snapshots: Sequence[DeviceSnapshot] = FLEET,
               failing: Iterable[tuple[str, str, datetime]] = FAILING) -> None:
    """Put snapshots and failing-since history into the store through the real store API."""
    async def work() -> None:
        store = await open_store(f"sqlite:///{db_of(tmp_path)}")
        try:
            await store.put_snapshots(snapshots)
            for serial, check, since in failing:
                await store.set_failing_since(serial, check, since)
        finally:
            await store.close()

    asyncio.run(work())


def stored_failing_since(tmp_path: Path) -> dict[str, dict[str, datetime]]:
    async def work() -> dict[str, dict[str, datetime]]:
        store = await open_store(f"sqlite:///{db_of(tmp_path)}")
        try:
            return {k: dict(v) for k, v in (await store.load_failing_since()).items()}
        finally:
            await store.close()

    return asyncio.run(work())


def write_audit_log(tmp_path: Path) -> None:
    """Two break-glass grants written through BreakglassService into the store's SQLite audit log (4 entries)."""
    allowed = TierRule(TierMode.ALLOWED, max_duration=timedelta(hours=4))

    async def work() -> None:
        sink = await SqliteAuditSink.open(db_of(tmp_path))
        try:
            service = await BreakglassService.open(sink, config=BreakglassSettings().to_config())
            for user, at in (("alice", NOW - timedelta(days=2)), ("bob", NOW - timedelta(minutes=10))):
                await service.request(GrantRequest(user=user, user_email=f"{user}@example.com", device_serial="C02XK1JHJG5J",
                                                   scope=Scope.for_tier("low"), reason=REASON, duration=timedelta(minutes=30)),
                                      rule=allowed, now=at)
        finally:
            await sink.close()

    asyncio.run(work())


def tamper(tmp_path: Path, sql: str) -> None:
    with contextlib.closing(sqlite3.connect(db_of(tmp_path))) as conn:
        conn.execute(sql)
        conn.commit()


def osquery_result_lines() -> list[bytes]:
    """The osquery fixtures' result items, one JSON object per line as the filesystem logger writes them."""
    items: list[object] = []
    for name in ("log_result_snapshot.json", "log_result_batched_differential.json", "log_result_event_differential.json"):
        items.extend(orjson.loads((OSQUERY_FIXTURES / name).read_bytes())["data"])
    return [orjson.dumps(item) for item in items]


def api_item(serial: str, minute: int = 0, **facts: object) -> dict[str, object]:
    return {"serial": serial, "collected_at": f"2026-11-22T14:{minute:02d}:00Z", "platform": "linux", "os_name": "Debian",
            "os_version": "12.8", "distribution": "debian", "owners": [f"{serial.lower()}@example.com"], "disk_encrypted": True, **facts}


class TestUsage:
    def test_help_runs_as_the_installed_script(self) -> None:
        """`.venv/bin/gatehouse --help` lists the subcommands and exits 0."""
        script = Path(sys.executable).parent / "gatehouse"

        done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)

        assert 0 == done.returncode
        for name in ("serve", "check-config", "policy", "import", "evidence", "audit", "break-glass", "demo"):
            assert name in done.stdout

    def test_python_dash_m_gateway_is_the_same_command(self) -> None:
        """`python -m gateway` parses the same way and prints the same usage errors as `gatehouse`."""
        done = subprocess.run([sys.executable, "-m", "gateway", "policy", "check"], capture_output=True, text=True,
                              timeout=60, check=False, cwd=ROOT)

        assert 2 == done.returncode
        assert done.stderr.startswith("usage: gatehouse policy check")

    def test_no_subcommand_is_bad_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a subcommand the usage is printed and the exit code is 2."""
        code = main([])

        assert 2 == code
        assert "usage: gatehouse" in capsys.readouterr().err

    def test_help_exits_0(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`gatehouse policy simulate --help` shows the options and exits 0."""
        code = main(["policy", "simulate", "--help"])

        assert 0 == code
        assert "--format {text,json}" in capsys.readouterr().out


class TestDates:
    @pytest.mark.parametrize(("text", "expected"), [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T08:00:00Z", datetime(2026, 11, 1, 8, tzinfo=UTC)),
        ("2026-11-01T09:30:00+01:30", datetime(2026, 11, 1, 8, tzinfo=UTC)),
    ])
    def test_dates_and_rfc3339_times(self, text: str, expected: datetime) -> None:
        """A date is midnight UTC; an RFC 3339 time keeps its offset."""
        moment = parse_moment(text, option="--since", example="gatehouse evidence export ...")

        assert expected == moment

    @pytest.mark.parametrize(("text", "message"), [("yesterday", "is not a date"), ("2026-11-01T08:00", "has no timezone")])
    def test_bad_dates_are_bad_usage_showing_a_working_command(self, text: str, message: str) -> None:
        """A word or a time without zone is refused with exit 2, what is expected and a command that works."""
        with pytest.raises(Refused) as caught:
            parse_moment(text, option="--since", example="gatehouse evidence export --since 2026-11-01")

        assert EXIT_USAGE == caught.value.code
        assert message in caught.value.text
        assert caught.value.text.endswith("gatehouse evidence export --since 2026-11-01")


class TestCheckConfig:
    def test_good_configuration(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A configuration whose policy, routes, key files and route sets agree exits 0 with a summary."""
        jwks = ensure_demo_key(tmp_path / "keys").parent / "demo-user-jwks.json"
        config = write_config(tmp_path, identity={"jwt": {"issuers": ["https://idp.test"], "audiences": ["gatehouse"],
                                                          "key_files": [str(jwks)]}},
                              breakglass={"route_sets": {"eng": ["wiki", "source"]}})

        code = main(["check-config", str(config)])

        assert 0 == code
        assert f"{config}: ok (3 routes, 1 listeners)\n" == capsys.readouterr().out

    def test_key_files_route_sets_and_tiers_are_all_listed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing key file, a route set naming no route and an unknown tier are each listed; exit 1."""
        config = write_config(
            tmp_path,
            identity={"jwt": {"issuers": ["https://idp.test"], "audiences": ["gatehouse"], "key_files": [str(tmp_path / "nope.json")]}},
            breakglass={"route_sets": {"eng": ["wiki", "payroll"]}},
            routes=[{"id": "wiki", "path_prefix": "/wiki", "upstream": "http://127.0.0.1:9", "tier": "secret"}],
        )

        code = main(["check-config", str(config)])

        out = capsys.readouterr().out
        assert 1 == code
        assert f"{config}: 3 problem(s)" in out
        assert "identity.jwt.key_files[0]:" in out
        assert "route `payroll` is not a configured route" in out
        assert "routes[0].tier: `secret` is not a tier of the policy" in out
        assert out.rstrip().endswith(f"run `gatehouse check-config {config}` again")

    def test_owner_binding_on_a_device_optional_tier_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`require_owner` on a route whose tier says `device: optional` is refused, naming the route and the tier; exit 1."""
        raw = yaml.safe_load(DEPLOY_POLICY.read_text())
        raw["tiers"]["low"]["device"] = "optional"
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = write_config(tmp_path, policy=str(policy), routes=[
            {"id": "wiki", "path_prefix": "/wiki", "upstream": "http://127.0.0.1:9", "tier": "low", "require_owner": True},
            {"id": "lobby", "path_prefix": "/lobby", "upstream": "http://127.0.0.1:9", "tier": "low"},
        ])

        code = main(["check-config", str(config)])

        out = capsys.readouterr().out
        assert 1 == code
        assert f"{config}: 1 problem(s)" in out
        assert "routes[0].require_owner: route `wiki` requires the device's owner, but its tier `low` says `device: optional`" in out

    def test_device_assertion_without_issuers_is_named(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Device assertions without `issuers` are refused with the same message as a user token without them; exit 1."""
        config = write_config(tmp_path, identity={
            "jwt": {"audiences": ["gatehouse"], "jwks_url": "https://idp.test/jwks"},
            "device": {"sources": ["assertion"], "assertion": {"key_files": [str(tmp_path / "device.pem")]}},
        })

        code = main(["check-config", str(config)])

        out = capsys.readouterr().out
        assert 1 == code
        assert "identity.jwt.issuers: is required" in out
        assert "identity.device.assertion.issuers: is required" in out

    def test_invalid_file_lists_problems(self, tmp_path: Path) -> None:
        """A file that does not validate exits 1 through the plain function, naming the key."""
        path = tmp_path / "bad.yaml"
        path.write_text("listeners: []\nbogus: 1\n")
        out = io.StringIO()

        code = check_config(path, out=out, environ={})

        assert 1 == code
        assert "bogus: unknown key" in out.getvalue()

    def test_cross_check_without_identity_or_routes_is_clean(self, tmp_path: Path) -> None:
        """With no routes, no policy and no identity there is nothing to cross-check."""
        settings = load_settings(write_config(tmp_path, routes=[], policy=None), {})

        assert [] == cross_check(settings)

    def test_missing_file_argument_is_bad_usage(self) -> None:
        """`gatehouse check-config` without a file exits 2."""
        assert 2 == main(["check-config"])


class TestServe:
    def test_broken_configuration_is_refused_before_starting(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A configuration with problems exits 1 and points at check-config."""
        path = tmp_path / "bad.yaml"
        path.write_text("listeners: [{address: nowhere}]\n")

        code = main(["serve", "--config", str(path)])

        err = capsys.readouterr().err
        assert 1 == code
        assert "listeners[0].address" in err
        assert err.rstrip().endswith(f"`gatehouse check-config {path}`")

    @pytest.mark.parametrize("argv", [["serve"], ["serve", "--config", "x.yaml", "--workers", "many"]])
    def test_bad_usage(self, argv: list[str]) -> None:
        """A missing --config or a non-number of workers exits 2."""
        assert 2 == main(argv)

    def test_zero_workers_is_bad_usage(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`--workers 0` exits 2 with a command that works."""
        config = write_config(tmp_path)

        code = main(["serve", "--config", str(config), "--workers", "0"])

        assert 2 == code
        assert f"gatehouse serve --config {config} --workers 2" in capsys.readouterr().err

    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_serves_until_sigterm_then_exits_0(self, tmp_path: Path, workers: str) -> None:
        """`gatehouse serve --workers N` starts the full gateway in N processes, logs gateway.started, and exits 0 on SIGTERM."""
        jwks = ensure_demo_key(tmp_path / "keys").parent / "demo-user-jwks.json"
        port = free_port()
        config = write_config(tmp_path, listeners=[{"address": f"127.0.0.1:{port}"}], logging={"format": "json"},
                              metrics={"address": f"127.0.0.1:{free_port()}"},  # never the default 9090 a demo may hold
                              identity={"jwt": {"issuers": ["https://idp.test"], "audiences": ["gatehouse"], "key_files": [str(jwks)]}})
        script = Path(sys.executable).parent / "gatehouse"
        with subprocess.Popen([str(script), "serve", "--config", str(config), "--workers", workers], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            try:
                assert proc.stdout is not None
                seen = []
                for line in proc.stdout:
                    seen.append(line)
                    if "gateway.started" in line:
                        break
                assert any("gateway.started" in line for line in seen), "".join(seen)
                # serve() installs its signal handlers just after logging gateway.started; an answered
                # request means the event loop has moved past that point.
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/.gatehouse/healthz", timeout=10) as response:
                    assert 200 == response.status
                proc.send_signal(signal.SIGTERM)
                rest, _ = proc.communicate(timeout=30)
                code = proc.returncode
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

        assert 0 == code
        assert (workers == "2") == ('"workers":2' in rest), rest


class TestPolicyCheck:
    def test_shipped_policy_is_ok(self, capsys: pytest.CaptureFixture[str]) -> None:
        """deploy/policy.yaml passes with its tiers named."""
        code = main(["policy", "check", str(DEPLOY_POLICY)])

        assert 0 == code
        assert "ok (version " in capsys.readouterr().out

    def test_every_problem_is_listed(self, tmp_path: Path) -> None:
        """A policy with several mistakes lists each with its location and exits 1."""
        path = tmp_path / "policy.yaml"
        path.write_text("format: 1\nchecks:\n  fw: {fact: firewall_enabled, equals: true, colour: red}\n"
                        "tiers:\n  low: {checks: [fw, nope], max_snapshot_age: 24x}\n")
        err = io.StringIO()

        code = check_policy(path, out=io.StringIO(), err=err)

        text = err.getvalue()
        assert 1 == code
        assert "checks.fw.colour" in text
        assert "tiers.low.max_snapshot_age" in text
        assert text.rstrip().endswith(f"run `gatehouse policy check {path}` again")

    def test_missing_file_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file that does not exist exits 1 saying it cannot be read."""
        code = main(["policy", "check", str(tmp_path / "none.yaml")])

        assert 1 == code
        assert "cannot read the policy file" in capsys.readouterr().err

    def test_missing_argument_is_bad_usage(self) -> None:
        """`gatehouse policy check` without a file exits 2."""
        assert 2 == main(["policy", "check"])


def candidate_without_firewall_grace(tmp_path: Path) -> Path:
    """deploy/policy.yaml with the firewall's 72 h grace removed: devices in that grace lose access."""
    text = DEPLOY_POLICY.read_text()
    stricter = text.replace("    fact: firewall_enabled\n    equals: true\n    grace: 72h\n", "    fact: firewall_enabled\n    equals: true\n")
    assert stricter != text
    path = tmp_path / "candidate.yaml"
    path.write_text(stricter)
    return path


class TestPolicySimulate:
    def test_counts_match_per_device_decisions(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Every tier's counts are the outcomes of evaluating each stored device with its failing-since history."""
        config = write_config(tmp_path)
        seed_store(tmp_path)
        policies = load_policy(DEPLOY_POLICY)
        history = stored_failing_since(tmp_path)

        code = main(["policy", "simulate", str(DEPLOY_POLICY), "--config", str(config), "--format", "json"], clock=clock)

        report = orjson.loads(capsys.readouterr().out)
        assert 0 == code
        assert len(FLEET) == report["devices"]
        for tier in report["tiers"]:
            expected = Counter(outcome_of(policies.evaluate(s, tier["tier"], now=NOW, failing_since=history.get(s.serial))).value
                               for s in FLEET)
            assert expected == Counter(tier["counts"])
            assert [] == tier["lost_access"] == tier["gained_access"]
        medium = next(t for t in report["tiers"] if t["tier"] == "medium")
        assert (1, 1) == (medium["counts"]["in-grace"], medium["denied_by_reason"]["checks-failed"] - 1)
        assert ["bob@example.com"] == medium["owners"]["in-grace"]

    def test_diff_against_the_policy_in_force(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Removing a grace period shows who would lose access at each tier that requires the check."""
        config = write_config(tmp_path)
        seed_store(tmp_path)

        code = main(["policy", "simulate", str(candidate_without_firewall_grace(tmp_path)), "--config", str(config)], clock=clock)

        out = capsys.readouterr().out
        assert 0 == code
        assert out.count("loses access (1): FWGRACE (bob@example.com)") == 2
        assert "gains access" not in out

    async def test_progress_only_on_a_terminal(self, tmp_path: Path) -> None:
        """On a terminal a status line is drawn and cleared; piped, stderr stays empty."""
        config = write_config(tmp_path)
        await asyncio.to_thread(seed_store, tmp_path)
        tty, piped = Tty(), io.StringIO()

        for err in (tty, piped):
            assert 0 == await simulate_policy(DEPLOY_POLICY, config, now=NOW, out=io.StringIO(), err=err, environ={})

        assert "loading snapshots" in tty.getvalue()
        assert tty.getvalue().endswith("\r\x1b[K")
        assert "" == piped.getvalue()

    async def test_unknown_format_is_bad_usage_before_any_work(self, tmp_path: Path) -> None:
        """The plain function refuses a format it cannot write with exit 2 and a command that works."""
        err = io.StringIO()

        code = await simulate_policy(DEPLOY_POLICY, tmp_path / "none.yaml", now=NOW, fmt="xml", out=io.StringIO(), err=err)

        assert 2 == code
        assert err.getvalue().rstrip().endswith("--format json")

    def test_broken_candidate_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A candidate that does not compile exits 1 and points at `policy check`."""
        config = write_config(tmp_path)
        seed_store(tmp_path)
        bad = tmp_path / "bad.yaml"
        bad.write_text("format: 1\nchecks: {}\ntiers: {low: {checks: [nope], max_snapshot_age: 1h}}\n")

        code = main(["policy", "simulate", str(bad), "--config", str(config)], clock=clock)

        assert 1 == code
        assert capsys.readouterr().err.rstrip().endswith(f"`gatehouse policy check {bad}`")

    def test_missing_store_is_refused_not_created(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A store file that does not exist exits 1 and is not created empty."""
        config = write_config(tmp_path)

        code = main(["policy", "simulate", str(DEPLOY_POLICY), "--config", str(config)], clock=clock)

        assert 1 == code
        assert "there is no store at" in capsys.readouterr().err
        assert not db_of(tmp_path).exists()

    @pytest.mark.parametrize("extra", [["--format", "xml"], []])
    def test_bad_usage(self, tmp_path: Path, extra: list[str]) -> None:
        """An unknown format, or no --config, exits 2."""
        argv = ["policy", "simulate", str(DEPLOY_POLICY)] + (["--config", "x.yaml", *extra] if extra else [])

        assert 2 == main(argv, clock=clock)


class TestPolicyExplain:
    def test_text_names_each_tier_and_failing_check(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A device past its firewall grace is allowed at low and denied at medium and high, naming the check."""
        config = write_config(tmp_path)
        seed_store(tmp_path)

        code = main(["policy", "explain", "FWLATE", "--config", str(config)], clock=clock)

        out = capsys.readouterr().out
        assert 0 == code
        assert "device FWLATE (carol@example.com)" in out
        assert "  low: allowed" in out
        assert "  medium: denied (checks-failed" in out
        assert "fails: firewall:" in out

    async def test_json_has_one_decision_per_tier_with_grace_deadline(self, tmp_path: Path) -> None:
        """JSON output carries a decision per tier; the grace deadline comes from the stored failing-since."""
        config = write_config(tmp_path)
        await asyncio.to_thread(seed_store, tmp_path)
        out = io.StringIO()

        code = await explain_device("FWGRACE", config, now=NOW, fmt="json", out=out, err=io.StringIO(), environ={})

        data = orjson.loads(out.getvalue())
        assert 0 == code
        assert ["low", "medium", "high"] == [d["tier"] for d in data["decisions"]]
        assert all(d["allowed"] for d in data["decisions"])
        assert (NOW + timedelta(hours=71)).isoformat() in out.getvalue()

    def test_unknown_device_exits_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A serial the store has never seen is explained (denied everywhere) and exits 1 with what to do."""
        config = write_config(tmp_path)
        seed_store(tmp_path)

        code = main(["policy", "explain", "NOPE", "--config", str(config)], clock=clock)

        captured = capsys.readouterr()
        assert 1 == code
        assert "  high: denied" in captured.out
        assert "no snapshot of device `NOPE`" in captured.err
        assert captured.err.rstrip().endswith(f"`gatehouse import FILE --config {config}`")

    def test_configuration_without_policy_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Explaining needs the policy in force; a configuration without one exits 1."""
        config = write_config(tmp_path, policy=None, routes=[])
        seed_store(tmp_path)

        code = main(["policy", "explain", "GOOD1", "--config", str(config)], clock=clock)

        assert 1 == code
        assert "names no policy" in capsys.readouterr().err

    def test_missing_serial_is_bad_usage(self) -> None:
        """`gatehouse policy explain --config X` without a serial exits 2."""
        assert 2 == main(["policy", "explain", "--config", "x.yaml"])


class TestImportStethoscope:
    def test_default_policy_converts_to_a_policy_that_checks(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Stethoscope's default policy becomes YAML in a readable order that `policy check` accepts."""
        out_file = tmp_path / "converted.yaml"

        code = main(["policy", "import-stethoscope", str(STETHOSCOPE_POLICY), "-o", str(out_file)])
        document = yaml.safe_load(out_file.read_text())

        assert 0 == code
        assert ["format", "description", "checks", "tiers", "remediation"] == list(document)
        assert "NEVER" in document["checks"]["remote_login"]["description"]
        assert f"`gatehouse policy check {out_file}`" in capsys.readouterr().err
        assert 0 == main(["policy", "check", str(out_file)])

    def test_stdout_when_no_output_file(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without -o the converted policy is printed, starting with a comment saying where it came from."""
        code = main(["policy", "import-stethoscope", str(STETHOSCOPE_POLICY)])

        out = capsys.readouterr().out
        assert 0 == code
        assert out.startswith("# Converted from the Stethoscope policy policy.yaml")
        assert 8 <= len(yaml.safe_load(out)["checks"])

    def test_shipped_converted_policy_is_what_the_command_writes(self, capsys: pytest.CaptureFixture[str]) -> None:
        """deploy/policy-stethoscope-default.yaml is the command's output for Stethoscope's default policy, comments aside."""
        def body(text: str) -> list[str]:
            return [line for line in text.splitlines() if not line.startswith("#")]

        code = main(["policy", "import-stethoscope", str(STETHOSCOPE_POLICY)])

        assert 0 == code
        assert body((ROOT / "deploy" / "policy-stethoscope-default.yaml").read_text()) == body(capsys.readouterr().out)

    def test_every_unsupported_value_is_listed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Values with no Gatehouse equivalent are each listed; exit 1 and nothing is written."""
        source = tmp_path / "stethoscope.yaml"
        source.write_text('firewall: SOMETIMES\nscreenIdle: "soon"\n')
        out_file = tmp_path / "converted.yaml"

        code = main(["policy", "import-stethoscope", str(source), "-o", str(out_file)])

        err = capsys.readouterr().err
        assert 1 == code
        assert "firewall:" in err and "screenIdle:" in err
        assert not out_file.exists()

    def test_missing_file_is_refused_and_no_argument_is_bad_usage(self, tmp_path: Path) -> None:
        """A missing file exits 1; no file at all exits 2."""
        assert 1 == main(["policy", "import-stethoscope", str(tmp_path / "none.yaml")])
        assert 2 == main(["policy", "import-stethoscope"])


class TestImport:
    def test_osquery_results_and_json_arrays(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """osquery filesystem-logger lines and a JSON array are stored; the summary goes to stdout and nothing to stderr."""
        config = write_config(tmp_path)
        results = tmp_path / "osqueryd.results.log"
        results.write_bytes(b"\n".join(osquery_result_lines()) + b"\n")
        array = tmp_path / "export.json"
        array.write_bytes(orjson.dumps([api_item("DEB1"), api_item("DEB2")]))

        code = main(["import", str(results), str(array), "--config", str(config)], clock=clock)

        captured = capsys.readouterr()
        assert 0 == code
        assert "imported 8 items in 2 file(s): 3 stored, 0 already stored" in captured.out
        assert "" == captured.err
        assert 0 == main(["policy", "explain", "PF3ABCDE", "--config", str(config)], clock=clock)

    def test_rejected_items_exit_1_with_file_and_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Bad lines are listed as file:line, the good ones are still stored, and the fix command ends the output."""
        config = write_config(tmp_path)
        mixed = tmp_path / "mixed.jsonl"
        mixed.write_bytes(b"\n".join([orjson.dumps(api_item("GOOD1")), b"{broken", orjson.dumps({"serial": "0", "platform": "linux"})]))

        code = main(["import", str(mixed), "--config", str(config)], clock=clock)

        captured = capsys.readouterr()
        assert 1 == code
        assert "1 stored" in captured.out and "2 rejected" in captured.out
        assert f"{mixed}:2: " in captured.err and f"{mixed}:3: " in captured.err
        assert captured.err.rstrip().endswith("(items already stored are skipped)")
        assert f"gatehouse import {mixed} --config {config}" in captured.err

    async def test_progress_on_a_terminal_only(self, tmp_path: Path) -> None:
        """A terminal gets a self-overwriting progress line; a pipe gets nothing."""
        config = write_config(tmp_path)
        array = tmp_path / "export.json"
        array.write_bytes(orjson.dumps([api_item(f"DEV{i}") for i in range(3)]))
        tty, piped = Tty(), io.StringIO()

        for err in (tty, piped):
            assert 0 == await import_snapshots([array], config, clock=clock, out=io.StringIO(), err=err, environ={})

        assert "\rimporting" in tty.getvalue().replace("\x1b[K", "")
        assert "" == piped.getvalue()

    def test_no_files_is_bad_usage(self) -> None:
        """`gatehouse import --config X` without files exits 2."""
        assert 2 == main(["import", "--config", "x.yaml"])


class TestEvidenceExport:
    def imported(self, tmp_path: Path) -> Path:
        """A store filled by `gatehouse import`, which records each device's checks in the compliance history."""
        config = write_config(tmp_path)
        array = tmp_path / "export.json"
        array.write_bytes(orjson.dumps([api_item("DEB1"), api_item("DEB2", minute=30, disk_encrypted=False)]))
        assert 0 == main(["import", str(array), "--config", str(config)], clock=clock)
        return config

    def test_jsonl_one_evaluation_per_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Each imported device has one evaluation with pass/fail per check of the policy in force."""
        config = self.imported(tmp_path)
        capsys.readouterr()

        code = main(["evidence", "export", "--config", str(config), "--since", "2026-11-22", "--format", "jsonl"])

        captured = capsys.readouterr()
        lines = [orjson.loads(line) for line in captured.out.splitlines()]
        assert 0 == code
        assert {("DEB1", "pass"), ("DEB2", "fail")} == {(e["device"], e["checks"]["disk_encryption"]) for e in lines}
        assert "exported 2 evaluations from 2026-11-22T00:00:00+00:00 as jsonl\n" == captured.err

    def test_csv_to_a_file_within_a_window(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`--until` is exclusive, and -o writes the CSV to a file."""
        config = self.imported(tmp_path)
        out_file = tmp_path / "evidence.csv"

        code = main(["evidence", "export", "--config", str(config), "--since", "2026-11-22T00:00:00Z",
                     "--until", "2026-11-22T14:30:00Z", "--format", "csv", "-o", str(out_file)])

        rows = list(csv.reader(io.StringIO(out_file.read_text())))
        assert 0 == code
        assert ["device", "owners", "time", "check", "result"] == rows[0]
        assert {"DEB1"} == {row[0] for row in rows[1:]}
        assert f"to {out_file}" in capsys.readouterr().err

    @pytest.mark.parametrize(("argv", "message"), [
        (["--since", "last week", "--format", "csv"], "is not a date"),
        (["--since", "2026-11-22T08:00", "--format", "csv"], "has no timezone"),
        (["--since", "2026-11-22", "--until", "2026-11-01", "--format", "csv"], "is not after --since"),
    ])
    def test_bad_dates_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
        """Unreadable or inverted dates exit 2 with what is expected and a command that works."""
        config = write_config(tmp_path)

        code = main(["evidence", "export", "--config", str(config), *argv])

        err = capsys.readouterr().err
        assert 2 == code
        assert message in err
        assert "gatehouse evidence export --config" in err.splitlines()[-1]

    @pytest.mark.parametrize("argv", [["--since", "2026-11-22"], ["--since", "2026-11-22", "--format", "xml"], ["--format", "csv"]])
    def test_missing_or_unknown_options_exit_2(self, tmp_path: Path, argv: list[str]) -> None:
        """No format, an unknown format or no --since exits 2."""
        assert 2 == main(["evidence", "export", "--config", str(write_config(tmp_path)), *argv])

    def test_missing_store_exits_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Exporting from a store that does not exist exits 1 and creates nothing."""
        config = write_config(tmp_path)

        code = main(["evidence", "export", "--config", str(config), "--since", "2026-11-22", "--format", "csv"])

        assert 1 == code
        assert "there is no store at" in capsys.readouterr().err
        assert not db_of(tmp_path).exists()


class TestAuditVerify:
    def test_intact_log(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The log the break-glass service wrote verifies: exit 0 with the number of entries."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)

        code = main(["audit", "verify", "--config", str(config)])

        assert 0 == code
        assert capsys.readouterr().out.startswith("audit log ok: 4 entries checked, head at entry 4")

    @pytest.mark.parametrize(("sql", "entry"), [
        ("UPDATE audit_entries SET body = replace(body, 'INC-4711', 'INC-0000') WHERE seq = 1", "entry 1: modified:"),
        ("DELETE FROM audit_entries WHERE seq = 2", "entry 2: deleted:"),
    ])
    def test_tampering_exits_1_naming_the_entry(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, entry: str) -> None:
        """An entry changed or removed in the database exits 1, names the entry and ends with the command to re-run."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)
        tamper(tmp_path, sql)

        code = main(["audit", "verify", "--config", str(config)])

        err = capsys.readouterr().err
        assert 1 == code
        assert entry in err
        assert err.rstrip().endswith(f"run `gatehouse audit verify --config {config}` again")

    def test_missing_store_and_bad_usage(self, tmp_path: Path) -> None:
        """No store exits 1 (nothing is created); no --config exits 2."""
        config = write_config(tmp_path)

        assert 1 == main(["audit", "verify", "--config", str(config)])
        assert not db_of(tmp_path).exists()
        assert 2 == main(["audit", "verify"])


class TestAuditExport:
    def test_jsonl_since_a_date(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Entries at or after the date are written one per line; the summary goes to stderr."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)

        code = main(["audit", "export", "--config", str(config), "--since", "2026-11-22", "--format", "jsonl"])

        captured = capsys.readouterr()
        assert 0 == code
        assert ["bob", "bob"] == [orjson.loads(line)["event"]["user"] for line in captured.out.splitlines()]
        assert captured.err.startswith("exported 2 of 4 entries since 2026-11-22T00:00:00+00:00 as jsonl")

    def test_csv_to_a_file(self, tmp_path: Path) -> None:
        """-o writes the CSV, header first."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)
        out_file = tmp_path / "audit.csv"

        code = main(["audit", "export", "--config", str(config), "--since", "2026-01-01T00:00:00Z", "--format", "csv", "-o", str(out_file)])

        rows = list(csv.reader(io.StringIO(out_file.read_text())))
        assert (0, 5) == (code, len(rows))
        assert "seq" == rows[0][0]

    @pytest.mark.parametrize("argv", [["--since", "soon", "--format", "jsonl"], ["--since", "2026-11-22", "--format", "xml"],
                                      ["--format", "jsonl"]])
    def test_bad_usage_exits_2(self, tmp_path: Path, argv: list[str]) -> None:
        """A bad date, an unknown format or no --since exits 2."""
        assert 2 == main(["audit", "export", "--config", str(write_config(tmp_path)), *argv])

    def test_missing_store_exits_1(self, tmp_path: Path) -> None:
        """Exporting the log of a store that does not exist exits 1."""
        assert 1 == main(["audit", "export", "--config", str(write_config(tmp_path)), "--since", "2026-11-22", "--format", "jsonl"])


class TestBreakGlassList:
    def test_table_of_every_grant(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Both grants are listed, newest first, with their status at the command's clock."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)

        code = main(["break-glass", "list", "--config", str(config)], clock=clock)

        lines = capsys.readouterr().out.splitlines()
        assert 0 == code
        assert lines[0].startswith("ID")
        rows = [re.split(r"\s{2,}", line) for line in lines]
        status = rows[0].index("STATUS")
        assert [("bob@example.com", "active"), ("alice@example.com", "expired")] == [(row[1], row[status]) for row in rows[1:]]

    def test_filters_and_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--status and --user filter; --format json gives one object per grant."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)

        active = main(["break-glass", "list", "--config", str(config), "--status", "active", "--format", "json"], clock=clock)
        grants = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        pending = main(["break-glass", "list", "--config", str(config), "--user", "alice", "--status", "pending"], clock=clock)

        assert 0 == active == pending
        assert [("bob", "active", False)] == [(g["user"], g["status"], g["reviewed"]) for g in grants]
        assert "no grant matches\n" == capsys.readouterr().out

    def test_tampered_log_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Grants from a log that fails verification are not shown; exit 1 pointing at `audit verify`."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)
        tamper(tmp_path, "DELETE FROM audit_entries WHERE seq = 3")

        code = main(["break-glass", "list", "--config", str(config)], clock=clock)

        captured = capsys.readouterr()
        assert 1 == code
        assert "" == captured.out
        assert captured.err.rstrip().endswith(f"`gatehouse audit verify --config {config}`")

    @pytest.mark.parametrize("argv", [["--status", "bogus"], ["--since", "whenever"], ["--format", "xml"]])
    def test_bad_usage_exits_2(self, tmp_path: Path, argv: list[str]) -> None:
        """An unknown status, a bad date or an unknown format exits 2."""
        config = write_config(tmp_path)
        write_audit_log(tmp_path)

        assert 2 == main(["break-glass", "list", "--config", str(config), *argv], clock=clock)


class TestDemo:
    def test_token_carries_user_device_and_groups(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The printed token is signed by the demo key and carries the user, the device serial and the groups."""
        key = ensure_demo_key(tmp_path)

        code = main(["demo", "token", "--user", "alice@example.com", "--device", "C02DEMOMAC1", "--groups", "sre, security",
                     "--var", str(tmp_path)], clock=clock)

        token = capsys.readouterr().out.strip()
        public = jwt.algorithms.ECAlgorithm.from_jwk(orjson.loads((tmp_path / "demo-user-jwks.json").read_bytes())["keys"][0])
        claims = jwt.decode(token, public, algorithms=["ES256"], audience="gatehouse-demo",  # type: ignore[arg-type]
                            options={"verify_exp": False})
        assert 0 == code
        assert key.name == DEMO_KEY_FILE
        assert ("alice@example.com", "C02DEMOMAC1", ["sre", "security"], int(NOW.timestamp())) == (
            claims["sub"], claims["device_serial"], claims["groups"], claims["iat"])

    def test_token_without_the_demo_key_says_make_run(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Before the demo ever ran there is no key: exit 1 saying to start it with `make run`."""
        code = main(["demo", "token", "--user", "alice@example.com", "--device", "C02DEMOMAC1", "--var", str(tmp_path)], clock=clock)

        assert 1 == code
        assert "start the demo once with `make run`" in capsys.readouterr().err

    @pytest.mark.parametrize("argv", [["--user", "alice", "--device", "C02DEMOMAC1"], ["--user", "alice@example.com"],
                                      ["--user", "alice@example.com", "--device", " "]])
    def test_token_bad_usage(self, tmp_path: Path, argv: list[str]) -> None:
        """A user that is not an email, or no or an empty device, exits 2."""
        ensure_demo_key(tmp_path)

        assert 2 == main(["demo", "token", *argv, "--var", str(tmp_path)], clock=clock)

    def test_run_bad_usage(self) -> None:
        """`gatehouse demo run` with an unknown option exits 2 before starting anything."""
        assert 2 == main(["demo", "run", "--port", "1"])


class TestProgress:
    def test_silent_off_a_terminal(self) -> None:
        """Progress writes nothing to a pipe, even when updated and finished."""
        stream = io.StringIO()
        progress = Progress(stream)

        progress.update("working")
        progress.done()

        assert (False, "") == (progress.live, stream.getvalue())

    def test_overwrites_itself_on_a_terminal(self) -> None:
        """On a terminal each update replaces the line and done clears it."""
        stream = Tty()
        progress = Progress(stream)

        progress.update("1/2")
        progress.update("2/2")
        progress.done()

        assert "\r\x1b[K1/2\r\x1b[K2/2\r\x1b[K" == stream.getvalue()



@pytest.mark.postgres
class TestOnPostgres:
    def test_store_and_audit_commands_on_postgresql(self, tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
        """With `store: postgresql://...` import, explain, audit verify and break-glass list use the PostgreSQL store and its audit sink."""
        import asyncpg

        from gateway.store.postgres import PostgresStore

        config = write_config(tmp_path, store=postgres_dsn)
        array = tmp_path / "export.json"
        array.write_bytes(orjson.dumps([api_item("DEB1")]))
        allowed = TierRule(TierMode.ALLOWED, max_duration=timedelta(hours=4))

        async def grant() -> None:
            store = await PostgresStore.open(postgres_dsn, max_connections=2)
            try:
                service = await BreakglassService.open(await store.audit_sink(), config=BreakglassSettings().to_config())
                await service.request(GrantRequest(user="bob", user_email="bob@example.com", device_serial="DEB1",
                                                   scope=Scope.for_tier("low"), reason=REASON, duration=timedelta(minutes=30)),
                                      rule=allowed, now=NOW - timedelta(minutes=10))
            finally:
                await store.close()

        async def tamper_pg(sql: str) -> None:
            conn = await asyncpg.connect(postgres_dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        imported = main(["import", str(array), "--config", str(config)], clock=clock)
        explained = main(["policy", "explain", "DEB1", "--config", str(config)], clock=clock)
        asyncio.run(grant())
        verified = main(["audit", "verify", "--config", str(config)])
        listed = main(["break-glass", "list", "--config", str(config), "--format", "json"], clock=clock)
        out = capsys.readouterr().out
        asyncio.run(tamper_pg("UPDATE audit_entries SET body = replace(body, 'INC-4711', 'INC-0000') WHERE seq = 1"))
        tampered = main(["audit", "verify", "--config", str(config)])

        assert (0, 0, 0, 0, 1) == (imported, explained, verified, listed, tampered)
        assert "audit log ok: 2 entries checked" in out
        assert '"user":"bob"' in out
        assert "entry 1: modified:" in capsys.readouterr().err
