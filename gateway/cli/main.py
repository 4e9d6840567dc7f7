"""The `gatehouse` command: thin subcommands over the plain functions in gateway.cli.commands.

Owns: argument parsing, the clock of a command run, and exit codes (0 success, 1 refused or
problems found, 2 bad usage). ``python -m gateway`` runs the same ``main``.
Must not import: nothing is off limits here, but keep each subcommand a few lines over a function
of ``gateway.cli.commands``, which the tests call directly.

    gatehouse serve --config FILE [--workers N]
    gatehouse check-config FILE
    gatehouse policy check FILE
    gatehouse policy simulate FILE --config CONFIG [--format text|json]
    gatehouse policy explain SERIAL --config CONFIG [--format text|json]
    gatehouse policy import-stethoscope FILE [-o OUT]
    gatehouse import FILE... --config CONFIG
    gatehouse devices assign SERIAL EMAIL... | unassign SERIAL [EMAIL...] | owners [SERIAL] | import FILE  --config CONFIG
    gatehouse devices certs SERIAL | revoke-cert SERIAL|FINGERPRINT  --config CONFIG
    gatehouse device-ca create --out DIR
    gatehouse evidence export --config CONFIG --since DATE [--until DATE] --format csv|jsonl [-o OUT]
    gatehouse evidence bundle --config CONFIG --since DATE [--until DATE] -o DIR
    gatehouse evidence verify DIR (--jwks FILE | --config CONFIG)
    gatehouse report --config CONFIG --since DATE [--until DATE] [--format html|json|csv] [-o OUT]
    gatehouse audit verify --config CONFIG
    gatehouse audit export --config CONFIG --since DATE --format jsonl|csv [-o OUT]
    gatehouse break-glass list --config CONFIG [--user U] [--status S] [--tier T] [--since DATE] [--until DATE]
                               [--unreviewed] [--flagged] [--format text|json]
    gatehouse connectors test NAME --config CONFIG
    gatehouse demo run [--var DIR]
    gatehouse demo token --user EMAIL --device SERIAL [--groups g1,g2] [--var DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from breakglass import GrantStatus
from gateway import __version__
from gateway.cli import commands
from gateway.cli.commands import EXIT_REFUSED, EXIT_USAGE, Refused, check_config, cross_check, parse_moment

Clock = Callable[[], datetime]

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "build_parser", "check_config", "cross_check", "main"]

EXIT_OK = commands.EXIT_OK


def utc_now() -> datetime:
    """The wall clock, in UTC: the only clock a command run reads."""
    return datetime.now(UTC)


def _moment(value: str | None, option: str, example: str) -> datetime | None:
    return None if value is None else parse_moment(value, option=option, example=example)


def _cmd_serve(args: argparse.Namespace, clock: Clock) -> int:
    return commands.serve(Path(args.config), workers=args.workers)


def _cmd_check_config(args: argparse.Namespace, clock: Clock) -> int:
    return check_config(Path(args.file), out=sys.stdout)


def _cmd_policy_check(args: argparse.Namespace, clock: Clock) -> int:
    return commands.check_policy(Path(args.file))


def _cmd_policy_simulate(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.simulate_policy(Path(args.file), Path(args.config), now=clock(), fmt=args.format))


def _cmd_policy_explain(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.explain_device(args.serial, Path(args.config), now=clock(), fmt=args.format))


def _cmd_policy_import_stethoscope(args: argparse.Namespace, clock: Clock) -> int:
    return commands.import_stethoscope(Path(args.file), output=Path(args.output) if args.output else None)


def _cmd_import(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.import_snapshots([Path(f) for f in args.files], Path(args.config), clock=clock))


def _cmd_devices_assign(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.assign_owners(args.serial, args.emails, Path(args.config), clock=clock, by=args.by))


def _cmd_devices_unassign(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.unassign_owners(args.serial, args.emails, Path(args.config), clock=clock, by=args.by))


def _cmd_devices_owners(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.list_owners(Path(args.config), args.serial, fmt=args.format))


def _cmd_devices_import(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.import_owners(Path(args.file), Path(args.config), clock=clock, dry_run=args.dry_run, by=args.by))


def _cmd_devices_certs(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.list_device_certificates(args.serial, Path(args.config)))


def _cmd_devices_revoke_cert(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.revoke_device_certificates(args.target, Path(args.config), clock=clock, by=args.by))


def _cmd_device_ca_create(args: argparse.Namespace, clock: Clock) -> int:
    return commands.create_ca(Path(args.out), clock=clock)


def _cmd_evidence_export(args: argparse.Namespace, clock: Clock) -> int:
    example = f"gatehouse evidence export --config {args.config} --since 2026-11-01 --format {args.format}"
    since = parse_moment(args.since, option="--since", example=example)
    until = _moment(args.until, "--until", example + " --until 2026-12-01")
    return asyncio.run(commands.export_evidence_to(Path(args.config), since=since, until=until, fmt=args.format,
                                                   output=Path(args.output) if args.output else None))


def _cmd_report(args: argparse.Namespace, clock: Clock) -> int:
    example = f"gatehouse report --config {args.config} --since 2026-11-01 --until 2026-12-01 --format {args.format}"
    now = clock()
    since = parse_moment(args.since, option="--since", example=example)
    until = _moment(args.until, "--until", example) or now
    return asyncio.run(commands.compliance_report(Path(args.config), since=since, until=until, now=now, fmt=args.format,
                                                  output=Path(args.output) if args.output else None))


def _cmd_evidence_bundle(args: argparse.Namespace, clock: Clock) -> int:
    example = f"gatehouse evidence bundle --config {args.config} --since 2026-11-01 --until 2026-12-01 -o {args.output}"
    since = parse_moment(args.since, option="--since", example=example)
    now = clock()
    until = _moment(args.until, "--until", example) or now
    return asyncio.run(commands.bundle_evidence(Path(args.config), Path(args.output), since=since, until=until, now=now))


def _cmd_evidence_verify(args: argparse.Namespace, clock: Clock) -> int:
    return commands.verify_evidence(Path(args.dir), config=Path(args.config) if args.config else None,
                                    jwks=Path(args.jwks) if args.jwks else None)


def _cmd_audit_verify(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.audit_verify(Path(args.config)))


def _cmd_audit_export(args: argparse.Namespace, clock: Clock) -> int:
    example = f"gatehouse audit export --config {args.config} --since 2026-11-01 --format {args.format}"
    since = parse_moment(args.since, option="--since", example=example)
    return asyncio.run(commands.audit_export(Path(args.config), since=since, fmt=args.format,
                                             output=Path(args.output) if args.output else None))


def _cmd_break_glass_list(args: argparse.Namespace, clock: Clock) -> int:
    example = f"gatehouse break-glass list --config {args.config} --since 2026-11-01"
    since = _moment(args.since, "--since", example)
    until = _moment(args.until, "--until", example + " --until 2026-12-01")
    return asyncio.run(commands.break_glass_list(
        Path(args.config), now=clock(), user=args.user, status=args.status, tier=args.tier, since=since, until=until,
        unreviewed=args.unreviewed, flagged=args.flagged, fmt=args.format,
    ))


def _cmd_connectors_test(args: argparse.Namespace, clock: Clock) -> int:
    return asyncio.run(commands.try_connector(args.name, Path(args.config), clock=clock))


def _cmd_demo_run(args: argparse.Namespace, clock: Clock) -> int:
    return commands.demo_run(Path(args.var))


def _cmd_demo_token(args: argparse.Namespace, clock: Clock) -> int:
    groups = tuple(g.strip() for g in (args.groups or "").split(",") if g.strip())
    return commands.demo_token(Path(args.var), user=args.user, device=args.device, now=clock(), groups=groups)


def _format(parser: argparse.ArgumentParser, choices: tuple[str, ...], *, default: str | None = None) -> None:
    parser.add_argument("--format", choices=choices, default=default, required=default is None,
                        help=f"output format ({'|'.join(choices)})" + (f"; default {default}" if default else ""))


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="CONFIG", help="the gateway's configuration file (names the store)")


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="OUT", help="write to this file instead of standard output")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="gatehouse", description="Zero-trust access-gating reverse proxy.")
    parser.add_argument("--version", action="version", version=f"gatehouse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway until SIGTERM")
    serve.add_argument("--config", required=True, metavar="FILE", help="the YAML or JSON configuration file")
    serve.add_argument("--workers", type=int, metavar="N", help="processes sharing the listeners (default: the number of CPUs)")
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file without starting anything")
    check.add_argument("file", help="the YAML or JSON configuration file")
    check.set_defaults(func=_cmd_check_config)

    policy = sub.add_parser("policy", help="check, simulate, explain and import policies").add_subparsers(
        dest="policy_command", required=True, metavar="ACTION")
    p = policy.add_parser("check", help="list every problem in a policy file")
    p.add_argument("file", help="the YAML or JSON policy file")
    p.set_defaults(func=_cmd_policy_check)
    p = policy.add_parser("simulate", help="what a candidate policy would do to every device in the store")
    p.add_argument("file", help="the candidate policy file")
    _config(p)
    _format(p, ("text", "json"), default="text")
    p.set_defaults(func=_cmd_policy_simulate)
    p = policy.add_parser("explain", help="one device's decision at every tier of the policy in force")
    p.add_argument("serial", help="the device's hardware serial")
    _config(p)
    _format(p, ("text", "json"), default="text")
    p.set_defaults(func=_cmd_policy_explain)
    p = policy.add_parser("import-stethoscope", help="convert a Netflix Stethoscope policy into a Gatehouse policy")
    p.add_argument("file", help="the Stethoscope policy (YAML or JSON)")
    _output(p)
    p.set_defaults(func=_cmd_policy_import_stethoscope)

    imp = sub.add_parser("import", help="store snapshots from osquery result files and JSON arrays")
    imp.add_argument("files", nargs="+", metavar="FILE", help="osquery filesystem-logger results (JSON lines) or JSON arrays")
    _config(imp)
    imp.set_defaults(func=_cmd_import)

    devices = sub.add_parser("devices", help="the owner inventory: who owns each device").add_subparsers(
        dest="devices_command", required=True, metavar="ACTION")
    p = devices.add_parser("assign", help="add owners to a device's serial")
    p.add_argument("serial", help="the device's hardware serial")
    p.add_argument("emails", nargs="+", metavar="EMAIL", help="owner email addresses")
    _config(p)
    p.add_argument("--by", metavar="WHO", help="who made the change (default: cli:<your login>)")
    p.set_defaults(func=_cmd_devices_assign)
    p = devices.add_parser("unassign", help="remove owners (all when none is named) from a device's serial")
    p.add_argument("serial", help="the device's hardware serial")
    p.add_argument("emails", nargs="*", metavar="EMAIL", help="owners to remove (default: every owner)")
    _config(p)
    p.add_argument("--by", metavar="WHO", help="who made the change (default: cli:<your login>)")
    p.set_defaults(func=_cmd_devices_unassign)
    p = devices.add_parser("owners", help="list the inventory, or one serial's entry")
    p.add_argument("serial", nargs="?", help="only this serial")
    _config(p)
    _format(p, ("text", "json"), default="text")
    p.set_defaults(func=_cmd_devices_owners)
    p = devices.add_parser("import", help="set owners from an MDM or HR export (CSV `serial,owner` or JSON)")
    p.add_argument("file", help="CSV with `serial` and `owner` columns, or JSON {\"devices\": [{\"serial\", \"owners\"}]}")
    _config(p)
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument("--by", metavar="WHO", help="who made the change (default: import:<file name>)")
    p.set_defaults(func=_cmd_devices_import)
    p = devices.add_parser("certs", help="the device certificates Gatehouse's CA issued for a serial")
    p.add_argument("serial", help="the device's hardware serial")
    _config(p)
    p.set_defaults(func=_cmd_devices_certs)
    p = devices.add_parser("revoke-cert", help="revoke a device certificate (by fingerprint) or every one of a serial")
    p.add_argument("target", metavar="SERIAL|FINGERPRINT", help="a hardware serial, or a certificate's SHA-256 fingerprint (hex)")
    _config(p)
    p.add_argument("--by", metavar="WHO", help="who revoked it (default: cli:<your login>)")
    p.set_defaults(func=_cmd_devices_revoke_cert)

    device_ca = sub.add_parser("device-ca", help="Gatehouse's device certificate authority (laptop enrollment)").add_subparsers(
        dest="device_ca_command", required=True, metavar="ACTION")
    p = device_ca.add_parser("create", help="write a new device CA certificate and key (ECDSA P-256, 10 years)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for device-ca.pem and device-ca.key (never overwritten)")
    p.set_defaults(func=_cmd_device_ca_create)

    evidence = sub.add_parser("evidence", help="compliance evidence for auditors").add_subparsers(
        dest="evidence_command", required=True, metavar="ACTION")
    p = evidence.add_parser("export", help="write the compliance history of a period")
    _config(p)
    p.add_argument("--since", required=True, metavar="DATE", help="start, inclusive: 2026-11-01 or 2026-11-01T08:00Z")
    p.add_argument("--until", metavar="DATE", help="end, exclusive (default: now)")
    _format(p, ("csv", "jsonl"))
    _output(p)
    p.set_defaults(func=_cmd_evidence_export)
    p = evidence.add_parser("bundle", help="write a period's evidence files and a signed manifest into a new directory")
    _config(p)
    p.add_argument("--since", required=True, metavar="DATE", help="start, inclusive: 2026-11-01 or 2026-11-01T08:00Z")
    p.add_argument("--until", metavar="DATE", help="end, exclusive (default: now)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="a directory that does not exist or is empty")
    p.set_defaults(func=_cmd_evidence_bundle)
    p = evidence.add_parser("verify", help="check a bundle's signature; name every changed, missing or added file")
    p.add_argument("dir", metavar="DIR", help="the bundle directory")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks", metavar="FILE", help="the JWKS published at /.well-known/gatehouse/jwks.json")
    keys.add_argument("--config", metavar="CONFIG", help="the gateway's configuration (its assertion keys)")
    p.set_defaults(func=_cmd_evidence_verify)

    p = sub.add_parser("report", help="the compliance report of a period, for auditors (charts in HTML, or JSON, CSV)")
    _config(p)
    p.add_argument("--since", required=True, metavar="DATE", help="start, inclusive: 2026-11-01 or 2026-11-01T08:00Z")
    p.add_argument("--until", metavar="DATE", help="end, exclusive (default: now)")
    _format(p, ("html", "json", "csv"), default="html")
    _output(p)
    p.set_defaults(func=_cmd_report)

    audit = sub.add_parser("audit", help="the break-glass audit log").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION")
    p = audit.add_parser("verify", help="check the hash chain; list every tampered entry")
    _config(p)
    p.set_defaults(func=_cmd_audit_verify)
    p = audit.add_parser("export", help="write the audit entries since a date")
    _config(p)
    p.add_argument("--since", required=True, metavar="DATE", help="2026-11-01 or 2026-11-01T08:00Z")
    _format(p, ("jsonl", "csv"))
    _output(p)
    p.set_defaults(func=_cmd_audit_export)

    bg = sub.add_parser("break-glass", help="break-glass grants").add_subparsers(
        dest="break_glass_command", required=True, metavar="ACTION")
    p = bg.add_parser("list", help="grants, newest first")
    _config(p)
    p.add_argument("--user", metavar="U", help="only this user")
    p.add_argument("--status", choices=[s.value for s in GrantStatus], metavar="S",
                   help="only grants in this status (" + ", ".join(s.value for s in GrantStatus) + ")")
    p.add_argument("--tier", metavar="T", help="only grants for this tier")
    p.add_argument("--since", metavar="DATE", help="requested at or after")
    p.add_argument("--until", metavar="DATE", help="requested before")
    p.add_argument("--unreviewed", action="store_true", help="only grants not yet reviewed")
    p.add_argument("--flagged", action="store_true", help="only grants of flagged repeat users")
    _format(p, ("text", "json"), default="text")
    p.set_defaults(func=_cmd_break_glass_list)

    connectors = sub.add_parser("connectors", help="pull connectors (Fleet, Jamf Pro)").add_subparsers(
        dest="connectors_command", required=True, metavar="ACTION")
    p = connectors.add_parser("test", help="fetch one page from a connector and print what would be stored (stores nothing)")
    p.add_argument("name", metavar="NAME")
    _config(p)
    p.set_defaults(func=_cmd_connectors_test)

    demo = sub.add_parser("demo", help="the local demo").add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    p = demo.add_parser("run", help="run Gatehouse with a demo upstream and demo devices (what `make run` does)")
    p.add_argument("--var", default="var", metavar="DIR", help="where the demo keeps its keys and store (default: var)")
    p.set_defaults(func=_cmd_demo_run)
    p = demo.add_parser("token", help="print a demo user token for curl")
    p.add_argument("--user", required=True, metavar="EMAIL")
    p.add_argument("--device", required=True, metavar="SERIAL")
    p.add_argument("--groups", metavar="g1,g2", help="groups claim, comma-separated")
    p.add_argument("--var", default="var", metavar="DIR", help="the demo's directory (default: var)")
    p.set_defaults(func=_cmd_demo_token)
    return parser


def main(argv: Sequence[str] | None = None, *, clock: Clock = utc_now) -> int:
    """Entry point of the `gatehouse` console script; returns the exit code (``--help`` is 0, bad usage 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage or the help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace, Clock], int] = args.func
    try:
        return func(args, clock)
    except Refused as exc:
        print(exc.text.rstrip("\n"), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_REFUSED
    except BrokenPipeError:  # the reader went away (`... | head`): the output is cut short, so not 0
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return EXIT_REFUSED
