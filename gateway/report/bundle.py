"""A signed evidence bundle for auditors: one directory with the period's evidence files and a signed manifest.

Owns: BundleSources, BundlePart, PARTS, PartUnavailable, write_bundle, verify_bundle, VerifyOutcome,
MANIFEST_NAME, SIGNATURE_NAME.
Must not import: aiohttp, argparse, gateway.app (``gatehouse evidence bundle|verify`` in
gateway/cli/commands/evidence.py opens the store, the audit log and the keys, and prints what comes back).

Layout of a bundle directory::

    compliance-report.html   the compliance report of the period (gateway.report), charts and tables
    compliance-report.json   the same report's numbers, for tools
    posture-history.csv      device × check × time, pass/fail (gateway.report.evidence's CSV)
    access-ledger.csv        the access ledger's hourly rollups in the period
    breakglass-audit.jsonl   the break-glass audit entries in the period, hash-chained as stored
    manifest.json            period, generated_at, Gatehouse version, policy fingerprint, and each file's
                             name, size, SHA-256 and record count; parts that could not be written are
                             listed under ``omitted`` with why
    manifest.json.jws        an ES256 JWS over manifest.json's exact bytes, detached payload (RFC 7515
                             appendix F: ``header..signature``), ``kid`` = the RFC 7638 thumbprint of
                             the key, so it verifies with the keys at /.well-known/gatehouse/jwks.json

To verify by hand: put ``base64url(manifest.json)`` between the two dots and check the compact JWS
with any JOSE library; then compare each file's SHA-256 with the manifest.

Each part is one ``BundlePart`` in ``PARTS``: a new evidence file is one more entry there.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import jwt
import orjson

from breakglass import AuditSink, export_entries
from gateway.report.evidence import _cell, export_evidence
from gateway.identity.assertion import SigningKeys
from gateway.identity.jwks import KeySet
from gateway.store.base import HistoryStore, LedgerStore

FORMAT = "gatehouse-evidence-bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.jws"
LEDGER_COLUMNS = ("hour", "route", "tier", "user", "device", "verdict", "reason", "count", "first_seen", "last_seen")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class BundleSources:
    """What a bundle is written from: the period [since, until) and the stores that hold its evidence.

    ``ledger`` is None when the store keeps no access ledger; the ledger part is then omitted and
    the manifest says so. ``report`` renders the period's compliance report in a format (``html``,
    ``json``); None when it could not be built (the reason in ``report_missing``).
    """

    since: datetime
    until: datetime
    history: HistoryStore
    audit: AuditSink
    ledger: LedgerStore | None = None
    report: Callable[[str], bytes] | None = None
    report_missing: str = "no compliance report was built for this bundle"


class PartUnavailable(Exception):
    """A part cannot be written from these sources; the message says why (it goes into the manifest)."""


PartWriter = Callable[[BundleSources, TextIO], Awaitable[int]]
"""Writes one part to a text stream and returns how many records it wrote; raises PartUnavailable."""


@dataclass(frozen=True, slots=True)
class BundlePart:
    """One file of the bundle: its name, what it holds (for the manifest), and the writer that fills it."""

    name: str
    holds: str
    write: PartWriter


async def _posture_history(sources: BundleSources, out: TextIO) -> int:
    return await export_evidence(sources.history, sources.since, "csv", out, until=sources.until)


async def _access_ledger(sources: BundleSources, out: TextIO) -> int:
    if sources.ledger is None:
        raise PartUnavailable("the store keeps no access ledger")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LEDGER_COLUMNS)
    written = 0
    async for row in sources.ledger.iter_access(since=sources.since, until=sources.until):
        writer.writerow([
            _stamp(row.hour), _cell(row.route), _cell(row.tier), _cell(row.user), _cell(row.device), row.verdict.value,
            _cell(row.reason), row.count, _stamp(row.first_seen), _stamp(row.last_seen),
        ])
        written += 1
    return written


def _report_in(fmt: str) -> PartWriter:
    async def write(sources: BundleSources, out: TextIO) -> int:
        if sources.report is None:
            raise PartUnavailable(sources.report_missing)
        out.write(sources.report(fmt).decode("utf-8"))
        return 1

    return write


async def _breakglass_audit(sources: BundleSources, out: TextIO) -> int:
    entries = [e for e in await sources.audit.entries() if sources.since <= e.event.at < sources.until]
    for record in export_entries(entries, fmt="jsonl"):
        out.write(record)
    return len(entries)


PARTS: tuple[BundlePart, ...] = (
    BundlePart("compliance-report.html", "the compliance report of the period: charts, tables, results by control",
               _report_in("html")),
    BundlePart("compliance-report.json", "the compliance report's numbers, for tools", _report_in("json")),
    BundlePart("posture-history.csv", "device x check x time, pass/fail, recorded in the period", _posture_history),
    BundlePart("access-ledger.csv", "hourly access rollups: route, tier, user, device, verdict, reason, count",
               _access_ledger),
    BundlePart("breakglass-audit.jsonl", "break-glass audit entries in the period, with their chain hashes",
               _breakglass_audit),
)


@dataclass(frozen=True, slots=True)
class BundleResult:
    """What ``write_bundle`` wrote: the manifest, its file entries, and the parts it had to leave out with why."""

    manifest: dict[str, object]
    files: tuple[dict[str, object], ...]
    omitted: tuple[tuple[str, str], ...]


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def sign_manifest(manifest: bytes, keys: SigningKeys) -> str:
    """A compact ES256 JWS over ``manifest`` with the payload detached (``header..signature``) and ``kid`` set."""
    compact = jwt.api_jws.PyJWS().encode(manifest, keys.signing, algorithm="ES256",
                                         headers={"kid": keys.signing_kid, "typ": "gatehouse-evidence-manifest+jws"})
    header, _, signature = compact.split(".")
    return f"{header}..{signature}"


async def write_bundle(
    directory: Path,
    sources: BundleSources,
    keys: SigningKeys,
    *,
    now: datetime,
    version: str,
    policy_fingerprint: str | None,
    parts: Sequence[BundlePart] = PARTS,
) -> BundleResult:
    """Write every part, the manifest and its signature into ``directory``, which must not exist or be empty.

    The files are written into a sibling temporary directory first and moved into place at the end,
    so a failure leaves no half bundle behind.

    Raises:
        FileExistsError: ``directory`` holds something.
        StoreError: a store could not be read.
        OSError: the files could not be written.
    """
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"`{directory}` is not an empty directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        files: list[dict[str, object]] = []
        omitted: list[tuple[str, str]] = []
        for part in parts:
            path = staging / part.name
            try:
                with path.open("w", encoding="utf-8", newline="") as handle:
                    records = await part.write(sources, handle)
            except PartUnavailable as exc:
                path.unlink()
                omitted.append((part.name, str(exc)))
                continue
            size, digest = _sha256(path)
            files.append({"name": part.name, "holds": part.holds, "size": size, "sha256": digest, "records": records})
        manifest: dict[str, object] = {
            "format": FORMAT,
            "period": {"since": _stamp(sources.since), "until": _stamp(sources.until)},
            "generated_at": _stamp(now),
            "gatehouse_version": version,
            "policy_fingerprint": policy_fingerprint,
            "files": files,
            "omitted": [{"name": name, "why": why} for name, why in omitted],
        }
        body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
        (staging / MANIFEST_NAME).write_bytes(body)
        (staging / SIGNATURE_NAME).write_text(sign_manifest(body, keys) + "\n", encoding="ascii")
        os.replace(staging, directory)  # an empty directory is replaced; anything else was refused above
    finally:
        if staging.exists():
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    return BundleResult(manifest, tuple(files), tuple(omitted))


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """What ``verify_bundle`` found: every problem (one line each), and a summary when there are none."""

    problems: tuple[str, ...] = ()
    checked: int = 0
    kid: str = ""
    period: tuple[str, str] = ("", "")
    omitted: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _check_signature(body: bytes, signature: str, keys: KeySet) -> tuple[str, str | None]:
    """(kid, problem or None) for the detached JWS ``signature`` over ``body``."""
    parts = signature.strip().split(".")
    if len(parts) != 3 or parts[1] != "":
        return "", f"`{SIGNATURE_NAME}` is not a detached compact JWS (`header..signature`)"
    try:
        header = jwt.get_unverified_header(f"{parts[0]}.{_b64url(b'{}')}.{parts[2]}")
    except jwt.PyJWTError:
        return "", f"`{SIGNATURE_NAME}` has an unreadable header"
    kid, alg = header.get("kid"), header.get("alg")
    if alg != "ES256" or not isinstance(kid, str):
        return "", f"`{SIGNATURE_NAME}` names alg `{alg}` and kid `{kid}`; a bundle is signed with ES256 and a kid"
    candidates = keys.find(kid, "ES256")
    if not candidates:
        return kid, f"no key with kid `{kid}` among the keys given; the manifest was signed by a key you do not trust"
    compact = f"{parts[0]}.{_b64url(body)}.{parts[2]}"
    for key in candidates:
        try:
            jwt.api_jws.PyJWS().decode_complete(compact, key, algorithms=["ES256"])
            return kid, None
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            return kid, f"`{SIGNATURE_NAME}` cannot be checked: {exc}"
    return kid, f"the signature in `{SIGNATURE_NAME}` does not match `{MANIFEST_NAME}` (kid `{kid}`): the manifest was changed"


def _listed_files(manifest: object) -> tuple[list[tuple[str, int, str]], list[str]]:
    """(name, size, sha256) of each listed file, and the problems of the manifest's shape."""
    problems: list[str] = []
    listed: list[tuple[str, int, str]] = []
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        return [], [f"`{MANIFEST_NAME}` has no `files` list"]
    for index, entry in enumerate(files):
        name = entry.get("name") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if (not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..")
                or not isinstance(size, int) or not isinstance(digest, str)):
            problems.append(f"`{MANIFEST_NAME}` files[{index}] is not a plain file name with `size` and `sha256`")
            continue
        listed.append((name, size, digest))
    return listed, problems


def verify_bundle(directory: Path, keys: KeySet) -> VerifyOutcome:
    """Check the manifest's signature with ``keys`` and every file against the manifest; name every problem.

    Problems: the manifest or signature missing or unreadable, a signature by an unknown key or not
    matching, and each file changed (size or SHA-256), missing, or added (present but not listed).
    """
    if not directory.is_dir():
        return VerifyOutcome((f"`{directory}` is not a directory",))
    problems: list[str] = []
    manifest_path, signature_path = directory / MANIFEST_NAME, directory / SIGNATURE_NAME
    try:
        body = manifest_path.read_bytes()
    except OSError:
        return VerifyOutcome((f"missing: `{MANIFEST_NAME}`; without it nothing in `{directory}` can be checked",))
    kid = ""
    try:
        signature = signature_path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        problems.append(f"missing: `{SIGNATURE_NAME}`; the manifest is unsigned")
    else:
        kid, problem = _check_signature(body, signature, keys)
        if problem:
            problems.append(problem)
    try:
        manifest = orjson.loads(body)
    except orjson.JSONDecodeError:
        return VerifyOutcome((*problems, f"`{MANIFEST_NAME}` is not JSON"))
    listed, shape = _listed_files(manifest)
    problems.extend(shape)
    names = {name for name, _, _ in listed}
    for name, size, digest in listed:
        path = directory / name
        if not path.is_file():
            problems.append(f"missing: `{name}`")
            continue
        actual_size, actual = _sha256(path)
        if actual != digest:
            problems.append(f"changed: `{name}` ({actual_size} bytes, SHA-256 {actual[:16]}…; the manifest says {size} bytes, {digest[:16]}…)")
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and relative not in names and relative not in (MANIFEST_NAME, SIGNATURE_NAME):
            problems.append(f"added: `{relative}` is not in the manifest")
    period = manifest.get("period") if isinstance(manifest, dict) else None
    since, until = (period.get("since", ""), period.get("until", "")) if isinstance(period, dict) else ("", "")
    omitted = manifest.get("omitted") if isinstance(manifest, dict) else None
    left_out = tuple(str(o.get("name")) for o in omitted if isinstance(o, dict)) if isinstance(omitted, list) else ()
    return VerifyOutcome(tuple(problems), len(listed), kid, (str(since), str(until)), left_out)
