"""The signed evidence bundle: what it holds, and that verify names every changed, missing or added file."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from breakglass import BreakglassService, GrantRequest, InMemoryAuditSink, Scope, TierMode, TierRule, decode_entry
from gateway.config.breakglass import BreakglassSettings
from gateway.cli.main import main
from gateway.report.bundle import (
    MANIFEST_NAME, PARTS, SIGNATURE_NAME, BundleSources, sign_manifest, verify_bundle, write_bundle,
)
from gateway.identity.assertion import SigningKeys, jwks_document, load_signing_keys
from gateway.identity.jwks import KeySet
from gateway.store.base import AccessRollup, AccessVerdict, HistoryEntry
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_audit import SqliteAuditSink

ROOT = Path(__file__).resolve().parents[3]
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
REASON = "paged at 3am: billing database is down, INC-4711"
ALLOWED = TierRule(TierMode.ALLOWED, max_duration=timedelta(hours=4))


def key_file(path: Path) -> Path:
    """A new EC P-256 private key in PKCS#8 PEM at ``path``."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def rollup(hour: datetime, user: str, verdict: AccessVerdict, count: int, reason: str = "") -> AccessRollup:
    return AccessRollup(hour=hour, route="billing", tier="high", user=user, device="C02XK0AAJGH6", verdict=verdict,
                        reason=reason, count=count, first_seen=hour + timedelta(minutes=3), last_seen=hour + timedelta(minutes=41))


ROLLUPS = [
    rollup(SINCE - timedelta(hours=1), "old@example.com", AccessVerdict.ALLOWED, 9),
    rollup(SINCE + timedelta(days=3), "alice@example.com", AccessVerdict.ALLOWED, 120),
    rollup(SINCE + timedelta(days=4), "=cmd|x", AccessVerdict.BREAK_GLASS, 7, "checks-failed"),
    rollup(UNTIL, "late@example.com", AccessVerdict.DENIED, 1, "snapshot-stale"),
]


def report(fmt: str) -> bytes:
    """A rendered compliance report as the bundle receives it (gateway.report's own tests check its content)."""
    return {"html": b"<!doctype html><title>Compliance report</title>", "json": b'{"devices": 2}'}[fmt]


async def grants(sink: InMemoryAuditSink | SqliteAuditSink) -> None:
    """One break-glass grant before the period and one inside it (two audit entries each)."""
    service = await BreakglassService.open(sink, config=BreakglassSettings().to_config())
    for user, at in (("early", SINCE - timedelta(days=2)), ("bob", SINCE + timedelta(days=4))):
        await service.request(GrantRequest(user=user, user_email=f"{user}@example.com", device_serial="C02XK0AAJGH6",
                                           scope=Scope.for_tier("high"), reason=REASON, duration=timedelta(minutes=30)),
                              rule=ALLOWED, now=at)


@pytest.fixture
def keys(tmp_path: Path) -> SigningKeys:
    return load_signing_keys((key_file(tmp_path / "assertion.pem"),))


@pytest.fixture
def trusted(keys: SigningKeys) -> KeySet:
    """The keys an auditor trusts: the JWKS Gatehouse publishes at /.well-known/gatehouse/jwks.json."""
    return KeySet.from_jwks(jwks_document(keys))


@pytest.fixture
async def sources(tmp_path: Path) -> AsyncIterator[BundleSources]:
    store = await SqliteStore.open(tmp_path / "g.db")
    await store.record_compliance(HistoryEntry("OLD1", ("old@example.com",), SINCE - timedelta(days=3), {"disk": True}))
    await store.record_compliance(HistoryEntry("C02XK0AAJGH6", ("bob@example.com",), SINCE + timedelta(days=4),
                                               {"firewall": True, "disk": False}))
    sink = InMemoryAuditSink()
    await grants(sink)
    await store.add_access_rollups(ROLLUPS)
    yield BundleSources(SINCE, UNTIL, store, sink, store, report=report)
    await store.close()


@pytest.fixture
async def bundle(tmp_path: Path, sources: BundleSources, keys: SigningKeys) -> Path:
    out = tmp_path / "bundle"
    await write_bundle(out, sources, keys, now=NOW, version="0.1.0", policy_fingerprint="3f2a9c")
    return out


def problems_of(directory: Path, trusted: KeySet) -> tuple[str, ...]:
    return verify_bundle(directory, trusted).problems


class TestWriteBundle:
    async def test_manifest_lists_every_part_with_size_digest_and_records(self, bundle: Path) -> None:
        """The manifest names the period, generation time, version and policy, and each file's size, SHA-256 and records."""
        manifest = orjson.loads((bundle / MANIFEST_NAME).read_bytes())

        assert {"since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"} == manifest["period"]
        assert ("2026-12-01T06:00:00Z", "0.1.0", "3f2a9c") == (
            manifest["generated_at"], manifest["gatehouse_version"], manifest["policy_fingerprint"])
        assert [(p.name, 1 if p.name.startswith(("posture-history", "compliance-report")) else 2) for p in PARTS] == [
            (f["name"], f["records"]) for f in manifest["files"]]
        assert [(f["name"], (bundle / f["name"]).stat().st_size) for f in manifest["files"]] == [
            (f["name"], f["size"]) for f in manifest["files"]]
        assert [] == manifest["omitted"]
        assert {MANIFEST_NAME, SIGNATURE_NAME, *(p.name for p in PARTS)} == {p.name for p in bundle.iterdir()}

    async def test_ledger_holds_the_period_rows_with_formulas_neutralised(self, bundle: Path) -> None:
        """The access ledger has the rollups whose hour is in [since, until), a spreadsheet formula prefixed with `'`."""
        rows = list(csv.reader(io.StringIO((bundle / "access-ledger.csv").read_text())))

        assert [
            ["hour", "route", "tier", "user", "device", "verdict", "reason", "count", "first_seen", "last_seen"],
            ["2026-11-04T00:00:00Z", "billing", "high", "alice@example.com", "C02XK0AAJGH6", "allowed", "", "120",
             "2026-11-04T00:03:00Z", "2026-11-04T00:41:00Z"],
            ["2026-11-05T00:00:00Z", "billing", "high", "'=cmd|x", "C02XK0AAJGH6", "break-glass", "checks-failed", "7",
             "2026-11-05T00:03:00Z", "2026-11-05T00:41:00Z"],
        ] == rows

    async def test_audit_part_holds_the_period_entries_as_stored(self, bundle: Path) -> None:
        """The break-glass entries of the period keep their seq and chain hashes, each linked to the one before."""
        entries = [decode_entry(line) for line in (bundle / "breakglass-audit.jsonl").read_text().splitlines()]

        assert [3, 4] == [e.seq for e in entries]
        assert {"bob"} == {e.event.user for e in entries}
        assert entries[0].hash == entries[1].prev_hash

    async def test_a_store_without_ledger_is_named_in_the_manifest(self, tmp_path: Path, sources: BundleSources,
                                                                   keys: SigningKeys, trusted: KeySet) -> None:
        """Without an access ledger the part is omitted, the manifest says why, and the bundle still verifies."""
        out = tmp_path / "no-ledger"
        bare = BundleSources(sources.since, sources.until, sources.history, sources.audit, report=report)

        result = await write_bundle(out, bare, keys, now=NOW, version="0.1.0", policy_fingerprint=None)

        assert (("access-ledger.csv", "the store keeps no access ledger"),) == result.omitted
        assert not (out / "access-ledger.csv").exists()
        assert ("access-ledger.csv",) == verify_bundle(out, trusted).omitted

    async def test_a_non_empty_directory_is_refused(self, tmp_path: Path, sources: BundleSources, keys: SigningKeys) -> None:
        """A bundle is never written over other files; the directory is left as it was."""
        out = tmp_path / "taken"
        out.mkdir()
        (out / "notes.txt").write_text("mine")

        with pytest.raises(FileExistsError, match="is not an empty directory"):
            await write_bundle(out, sources, keys, now=NOW, version="0.1.0", policy_fingerprint=None)

        assert ["notes.txt"] == [p.name for p in out.iterdir()]
        assert [] == [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]

    async def test_an_empty_directory_is_filled(self, tmp_path: Path, sources: BundleSources, keys: SigningKeys,
                                                trusted: KeySet) -> None:
        """An existing empty directory (made for the auditor) receives the bundle."""
        out = tmp_path / "empty"
        out.mkdir()

        await write_bundle(out, sources, keys, now=NOW, version="0.1.0", policy_fingerprint=None)

        assert () == problems_of(out, trusted)


class TestVerifyBundle:
    def test_an_intact_bundle_verifies(self, bundle: Path, trusted: KeySet, keys: SigningKeys) -> None:
        """Signature and every file match: no problems, and the summary names the key and period."""
        outcome = verify_bundle(bundle, trusted)

        assert () == outcome.problems
        assert (len(PARTS), keys.signing_kid) == (outcome.checked, outcome.kid)
        assert ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z") == outcome.period

    @pytest.mark.parametrize("name", [p.name for p in PARTS])
    def test_a_changed_byte_in_each_file_is_named(self, bundle: Path, trusted: KeySet, name: str) -> None:
        """Flipping one byte of any evidence file is reported as that file changed."""
        data = bytearray((bundle / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (bundle / name).write_bytes(bytes(data))

        problems = problems_of(bundle, trusted)

        assert 1 == len(problems)
        assert problems[0].startswith(f"changed: `{name}`")

    @pytest.mark.parametrize("name", [p.name for p in PARTS])
    def test_each_deleted_file_is_named(self, bundle: Path, trusted: KeySet, name: str) -> None:
        """A deleted evidence file is reported as missing."""
        (bundle / name).unlink()

        assert (f"missing: `{name}`",) == problems_of(bundle, trusted)

    def test_an_added_file_is_named(self, bundle: Path, trusted: KeySet) -> None:
        """A file not in the manifest, also in a subdirectory, is reported as added."""
        (bundle / "extra.csv").write_text("device\n")
        (bundle / "more").mkdir()
        (bundle / "more" / "notes.txt").write_text("x")

        assert ("added: `extra.csv` is not in the manifest", "added: `more/notes.txt` is not in the manifest") == problems_of(
            bundle, trusted)

    def test_a_deleted_manifest_or_signature_is_named(self, bundle: Path, trusted: KeySet) -> None:
        """Without the signature the manifest is unsigned; without the manifest nothing can be checked."""
        (bundle / SIGNATURE_NAME).unlink()
        unsigned = problems_of(bundle, trusted)
        (bundle / MANIFEST_NAME).unlink()

        assert (f"missing: `{SIGNATURE_NAME}`; the manifest is unsigned",) == unsigned
        assert 1 == len(problems_of(bundle, trusted))
        assert problems_of(bundle, trusted)[0].startswith(f"missing: `{MANIFEST_NAME}`")

    def test_a_manifest_edited_to_hide_a_change_fails_its_signature(self, bundle: Path, trusted: KeySet) -> None:
        """Changing a file and writing its new digest into the manifest breaks the manifest's signature."""
        import hashlib

        (bundle / "access-ledger.csv").write_text("hour,route\n")
        manifest = orjson.loads((bundle / MANIFEST_NAME).read_bytes())
        for entry in manifest["files"]:
            if entry["name"] == "access-ledger.csv":
                entry["sha256"] = hashlib.sha256(b"hour,route\n").hexdigest()
                entry["size"] = 11
        (bundle / MANIFEST_NAME).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")

        problems = problems_of(bundle, trusted)

        assert 1 == len(problems)
        assert "does not match `manifest.json`" in problems[0]

    def test_a_manifest_re_signed_with_another_key_is_refused(self, bundle: Path, trusted: KeySet, tmp_path: Path) -> None:
        """A manifest signed again with a key the auditor does not trust fails, whatever kid it names."""
        other = load_signing_keys((key_file(tmp_path / "other.pem"),))
        body = (bundle / MANIFEST_NAME).read_bytes()
        (bundle / SIGNATURE_NAME).write_text(sign_manifest(body, other))
        unknown = problems_of(bundle, trusted)
        impostor = SigningKeys(next(iter(trusted.keys)).kid or "", other.signing, other.published)
        (bundle / SIGNATURE_NAME).write_text(sign_manifest(body, impostor))

        mismatched = problems_of(bundle, trusted)

        assert (f"no key with kid `{other.signing_kid}` among the keys given; the manifest was signed by a key you do "
                "not trust",) == unknown
        assert 1 == len(mismatched)
        assert "does not match" in mismatched[0]

    def test_every_problem_is_named_not_only_the_first(self, bundle: Path, trusted: KeySet) -> None:
        """A changed, a missing and an added file are all listed together."""
        (bundle / "posture-history.csv").write_text("x")
        (bundle / "breakglass-audit.jsonl").unlink()
        (bundle / "extra.txt").write_text("x")

        problems = problems_of(bundle, trusted)

        assert ["added", "changed", "missing"] == sorted(p.split(":")[0] for p in problems)


def write_config(tmp_path: Path, **extra: object) -> Path:
    """A configuration with a SQLite store, the deploy policy and an assertion signing key in ``tmp_path``."""
    raw: dict[str, object] = {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "store": f"sqlite:///{tmp_path / 'gatehouse.db'}",
        "policy": str(ROOT / "deploy" / "policy.yaml"),
        "identity": {"jwt": {"issuers": ["https://idp.test"], "audiences": ["gatehouse"], "hmac_secret": {"value": "x" * 32},
                             "algorithms": ["HS256"]},
                     "assertion": {"key_files": [str(key_file(tmp_path / "assertion.pem"))]}},
    }
    raw.update(extra)
    path = tmp_path / "gatehouse.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A configuration whose store holds one evaluation and whose audit log holds two grants."""
    config = write_config(tmp_path)

    async def seed() -> None:
        store = await SqliteStore.open(tmp_path / "gatehouse.db")
        await store.record_compliance(HistoryEntry("DEB1", ("deb1@example.com",), SINCE + timedelta(days=1), {"disk": True}))
        await store.close()
        sink = await SqliteAuditSink.open(tmp_path / "gatehouse.db")
        await grants(sink)
        await sink.close()

    asyncio.run(seed())
    yield config


class TestCommands:
    def test_bundle_then_verify_with_the_published_jwks(self, site: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
        """`evidence bundle` writes a signed bundle that `evidence verify --jwks` accepts with exit 0."""
        out = tmp_path / "audit-2026-11"
        jwks = tmp_path / "jwks.json"
        jwks.write_bytes(orjson.dumps(jwks_document(load_signing_keys((tmp_path / "assertion.pem",)))))

        bundled = main(["evidence", "bundle", "--config", str(site), "--since", "2026-11-01", "--until", "2026-12-01",
                        "-o", str(out)], clock=lambda: NOW)
        written = capsys.readouterr()
        verified = main(["evidence", "verify", str(out), "--jwks", str(jwks)])
        checked = capsys.readouterr()

        assert (0, 0) == (bundled, verified)
        assert "  posture-history.csv: 1 records" in written.out
        assert "  compliance-report.html: 1 records" in written.out
        assert "" == written.err
        assert checked.out.startswith(f"evidence bundle `{out}` ok: {len(PARTS)} files match the manifest signed with key `")
        assert checked.out.endswith("period 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z\n")

    def test_verify_with_the_config_names_each_problem_and_exits_1(self, site: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
        """A tampered bundle exits 1 with one line per problem and a closing line saying what to do."""
        out = tmp_path / "b"
        assert 0 == main(["evidence", "bundle", "--config", str(site), "--since", "2026-11-01", "-o", str(out)],
                         clock=lambda: NOW)
        (out / "posture-history.csv").unlink()
        capsys.readouterr()

        code = main(["evidence", "verify", str(out), "--config", str(site)])

        err = capsys.readouterr().err.splitlines()
        assert 1 == code
        assert "missing: `posture-history.csv`" == err[0]
        assert err[1].startswith(f"evidence bundle `{out}` FAILED verification: 1 problem(s)")

    def test_bundle_refuses_a_non_empty_directory(self, site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A directory holding files is refused with exit 1 and a command using a new one."""
        out = tmp_path / "taken"
        out.mkdir()
        (out / "x").write_text("x")

        code = main(["evidence", "bundle", "--config", str(site), "--since", "2026-11-01", "-o", str(out)], clock=lambda: NOW)

        err = capsys.readouterr().err
        assert 1 == code
        assert f"`{out}` is not an empty directory" in err
        assert err.rstrip().endswith(f"-o {out}-2")

    def test_bundle_without_a_signing_key_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No `identity.assertion` key means no unsigned bundle: exit 1 saying which key to add."""
        config = write_config(tmp_path, identity={"jwt": {"issuers": ["https://idp.test"], "audiences": ["gatehouse"],
                                                          "hmac_secret": {"value": "x" * 32}, "algorithms": ["HS256"]}})

        code = main(["evidence", "bundle", "--config", str(config), "--since", "2026-11-01", "-o", str(tmp_path / "b")],
                    clock=lambda: NOW)

        assert 1 == code
        assert "names no signing key" in capsys.readouterr().err
        assert not (tmp_path / "b").exists()
