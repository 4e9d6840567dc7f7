"""`gatehouse policy check|simulate|explain|import-stethoscope`: the operator's policy tools.

Owns: check_policy, simulate_policy, explain_device, import_stethoscope.
Must not import: argparse, cli. The work is policy_engine's (simulate, explain,
convert_stethoscope_policy); these read files and the store and print what comes back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO

import orjson
import yaml

from gateway.cli.commands.common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Progress, Refused, command, load_config, opened_store, output_to, streams
from gateway.errors import ConfigError
from gateway.config.policy_file import load_policy
from policy_engine import (
    CompiledPolicySet,
    DeviceSnapshot,
    PolicyError,
    compile_policy_set,
    convert_stethoscope_policy,
    explain,
    parse_policy_document,
    simulate,
)

_PROGRESS_EVERY = 5_000
FORMATS = ("text", "json")


def _check_format(fmt: str, usage: str) -> None:
    if fmt not in FORMATS:
        raise Refused(f"--format: `{fmt}` is unknown; use `text` or `json`\n  {usage} --format json", EXIT_USAGE)


def _policy_or_refuse(path: Path, fix: str) -> CompiledPolicySet:
    try:
        return load_policy(path)
    except ConfigError as exc:
        raise Refused(f"{exc}\n{fix}") from None


def _dump_json(data: object) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()


@command
def check_policy(path: Path, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Lint a policy file: every problem with its location (exit 1), or a one-line summary (exit 0)."""
    out = out or sys.stdout
    policies = _policy_or_refuse(path, f"fix the problems above, then run `gatehouse policy check {path}` again")
    tiers = ", ".join(policies.tier_names)
    print(f"{path}: ok (version {policies.version}; {len(policies.checks)} checks; tiers {tiers})", file=out)
    return EXIT_OK


def _counting(snapshots: Iterable[DeviceSnapshot], total: int, progress: Progress) -> Iterator[DeviceSnapshot]:
    for index, snapshot in enumerate(snapshots, start=1):
        if index % _PROGRESS_EVERY == 0:
            progress.update(f"simulating: {index}/{total} devices")
        yield snapshot


@command
async def simulate_policy(
    candidate: Path,
    config: Path,
    *,
    now: datetime,
    fmt: str = "text",
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Evaluate a candidate policy over every device in the configuration's store, against the policy in force."""
    out, err = streams(out, err)
    _check_format(fmt, f"gatehouse policy simulate {candidate} --config {config}")
    policies = _policy_or_refuse(candidate, f"fix the problems above, then run `gatehouse policy check {candidate}`")
    settings = load_config(config, environ)
    current: CompiledPolicySet | None = None
    if settings.policy is not None:
        try:
            current = load_policy(settings.policy)
        except ConfigError as exc:
            print(f"the policy in force does not load, so there is no diff against it:\n{exc}", file=err)
    progress = Progress(err)
    async with opened_store(settings, config) as store:
        progress.update("loading snapshots")
        snapshots = (await store.load_latest()).snapshots
        failing_since = await store.load_failing_since()
    report = simulate(policies, current, _counting(snapshots, len(snapshots), progress), now=now,
                      failing_since_by_serial=failing_since)
    progress.done()
    print(_dump_json(report.to_dict()) if fmt == "json" else report.to_text(), file=out)
    return EXIT_OK


@command
async def explain_device(
    serial: str,
    config: Path,
    *,
    now: datetime,
    fmt: str = "text",
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """One device's full decision at every tier of the policy in force; exit 1 when the store has no snapshot of it."""
    out, err = streams(out, err)
    _check_format(fmt, f"gatehouse policy explain {serial} --config {config}")
    settings = load_config(config, environ)
    if settings.policy is None:
        raise Refused(f"{config} names no policy, so there is nothing to explain\n"
                      f"add `policy: policy.yaml` to {config}, then run `gatehouse check-config {config}`")
    policies = _policy_or_refuse(settings.policy, f"fix the problems above, then run `gatehouse policy check {settings.policy}`")
    async with opened_store(settings, config) as store:
        snapshot = await store.latest(serial)
        failing_since = await store.failing_since(serial) if snapshot is not None else {}
    explanation = explain(snapshot, policies, now=now, failing_since=failing_since, serial=serial)
    print(_dump_json(explanation.to_dict()) if fmt == "json" else explanation.to_text(), file=out)
    if snapshot is None:
        print(f"no snapshot of device `{serial}` in the store, so every tier denies it\n"
              f"check the serial, or import the device's results with `gatehouse import FILE --config {config}`", file=err)
        return EXIT_REFUSED
    return EXIT_OK


@command
def import_stethoscope(
    path: Path,
    *,
    output: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Convert a Stethoscope policy (YAML or JSON) into a Gatehouse policy file, written as YAML."""
    out, err = streams(out, err)
    retry = f"fix the problems above, then run `gatehouse policy import-stethoscope {path}` again"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Refused(f"{path}: cannot read the file: {exc.strerror or exc}\ncheck the path, then run "
                      f"`gatehouse policy import-stethoscope {path}` again") from None
    except yaml.YAMLError as exc:
        raise Refused(f"{path}: not valid YAML or JSON: {getattr(exc, 'problem', exc)}\n{retry}") from None
    try:
        document = convert_stethoscope_policy(raw)
        compile_policy_set(parse_policy_document(document, source=str(path)))
    except PolicyError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        raise Refused(f"{path}: {len(exc.problems)} problem(s)\n{lines}\n{retry}") from None
    header = (f"# Converted from the Stethoscope policy {path.name} by `gatehouse policy import-stethoscope`.\n"
              "# Review the tier's name, max_snapshot_age and break_glass before using it.\n")
    text = header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    with output_to(output, out) as handle:
        handle.write(text)
    if output is not None:
        tiers = document["tiers"]
        names = ", ".join(f"`{t}`" for t in tiers) if isinstance(tiers, Mapping) else ""
        print(f"wrote {output}: {len(document['checks'])} checks in tier {names}; "  # type: ignore[arg-type]
              f"check it with `gatehouse policy check {output}`", file=err)
    return EXIT_OK
