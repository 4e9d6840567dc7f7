"""`gatehouse evidence bundle` (a signed evidence directory for a period) and `gatehouse evidence verify`.

Owns: bundle_evidence, verify_evidence.
Must not import: argparse, cli. The work is gateway.report.bundle's; these open the store, the
audit log and the keys a configuration names, and print what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO

from gateway import __version__
from gateway.cli.commands.common import (
    EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Refused, check_period, command, load_config, opened_audit_sink, opened_gateway_store, streams,
)
from gateway.errors import ConfigError
from gateway.report.bundle import BundleSources, verify_bundle, write_bundle
from gateway.cli.commands.report import configured_report
from gateway.web.views.report import render_report
from gateway.identity.assertion import SigningKeys, jwks_document, load_signing_keys
from gateway.identity.errors import KeyFileError
from gateway.identity.jwks import KeySet, load_key_file
from gateway.config.settings import Settings
from gateway.store.base import LedgerStore


def _signing_keys(settings: Settings, config: Path) -> SigningKeys:
    assertion = settings.identity.assertion if settings.identity is not None else None
    if assertion is None:
        raise Refused(f"{config} names no signing key: a bundle is signed with the upstream assertion key "
                      "(`identity.assertion.key_files`)\nadd one (`openssl ecparam -name prime256v1 -genkey -noout | "
                      f"openssl pkcs8 -topk8 -nocrypt`), then run `gatehouse check-config {config}`")
    try:
        return load_signing_keys(assertion.key_files)
    except KeyFileError as exc:
        raise Refused(f"{exc}\nfix `identity.assertion.key_files`, then run `gatehouse check-config {config}`") from None


def _policy_fingerprint(settings: Settings, config: Path) -> str | None:
    if settings.policy is None:
        return None
    from gateway.config.policy_file import load_policy

    try:
        return load_policy(settings.policy).version
    except ConfigError as exc:
        raise Refused(f"{exc}\nthe manifest names the policy in force; fix it, then run "
                      f"`gatehouse policy check {settings.policy}`") from None


@command
async def bundle_evidence(
    config: Path,
    output: Path,
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Write the period's evidence files and a signed manifest into ``output`` (absent or empty)."""
    out, err = streams(out, err)
    example = f"gatehouse evidence bundle --config {config} --since {since.date()} --until {now.date()} -o {output}"
    check_period(since, until, example)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise Refused(f"`{output}` is not an empty directory; a bundle is never written over other files\n"
                      f"choose a new directory:\n  {example.replace(str(output), str(output) + '-2')}")
    settings = load_config(config, environ)
    keys = _signing_keys(settings, config)
    fingerprint = _policy_fingerprint(settings, config)
    report = await configured_report(settings, config, since=since, until=until, now=now)
    async with opened_gateway_store(settings, config) as store, \
            opened_audit_sink(settings, config) as audit:
        sources = BundleSources(since, until, store, audit, store if isinstance(store, LedgerStore) else None,
                                report=lambda fmt: render_report(report, fmt))
        try:
            result = await write_bundle(output, sources, keys, now=now, version=__version__, policy_fingerprint=fingerprint)
        except OSError as exc:
            raise Refused(f"cannot write the bundle to `{output}`: {exc.strerror or exc}\nchoose a writable place with `-o DIR`") from None
    for entry in result.files:
        print(f"  {entry['name']}: {entry['records']} records, {entry['size']} bytes", file=out)
    for name, why in result.omitted:
        print(f"omitted {name}: {why}", file=err)
    print(f"wrote {len(result.files)} evidence files and a manifest signed with key `{keys.signing_kid}` to {output}\n"
          f"check it with `gatehouse evidence verify {output} --config {config}`", file=out)
    return EXIT_OK


def _trusted_keys(config: Path | None, jwks: Path | None, environ: Mapping[str, str] | None) -> KeySet:
    if jwks is not None:
        try:
            return load_key_file(jwks)
        except KeyFileError as exc:
            raise Refused(f"{exc}\ngive the JWKS published at /.well-known/gatehouse/jwks.json with `--jwks FILE`") from None
    if config is None:
        raise Refused("give the keys to trust: `--jwks FILE` (the JWKS at /.well-known/gatehouse/jwks.json) "
                      "or `--config CONFIG`\n  gatehouse evidence verify DIR --jwks jwks.json", EXIT_USAGE)
    settings = load_config(config, environ)
    return KeySet.from_jwks(jwks_document(_signing_keys(settings, config)))


@command
def verify_evidence(
    directory: Path,
    *,
    config: Path | None = None,
    jwks: Path | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check a bundle's signature and files; exit 1 naming every changed, missing or added file."""
    out, err = streams(out, err)
    outcome = verify_bundle(directory, _trusted_keys(config, jwks, environ))
    if not outcome.ok:
        for problem in outcome.problems:
            print(problem, file=err)
        print(f"evidence bundle `{directory}` FAILED verification: {len(outcome.problems)} problem(s); "
              "ask for a fresh copy from the site, or regenerate it with `gatehouse evidence bundle`", file=err)
        return EXIT_REFUSED
    since, until = outcome.period
    left_out = f"; omitted by the site: {', '.join(outcome.omitted)}" if outcome.omitted else ""
    print(f"evidence bundle `{directory}` ok: {outcome.checked} files match the manifest signed with key "
          f"`{outcome.kid}`, period {since} to {until}{left_out}", file=out)
    return EXIT_OK
