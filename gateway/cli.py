"""The `gatehouse` command: thin subcommands over plain functions the tests call directly.

Owns: argument parsing and exit codes (0 success, 1 refused or problems found, 2 bad usage).
Must not import: nothing is off limits here, but keep each subcommand a few lines over a function.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence, TextIO

from gateway import __version__
from gateway.errors import ConfigError
from gateway.policy_file import load_policy, route_tier_problems
from gateway.settings import Settings, load_settings

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def check_config(path: Path, *, out: TextIO, environ: dict[str, str] | None = None) -> int:
    """Validate a configuration file (and the policy it names) without starting anything."""
    try:
        settings = load_settings(path, os.environ if environ is None else environ)
    except ConfigError as exc:
        print(exc, file=out)
        print(f"fix the problems above, then run `gatehouse check-config {path}` again", file=out)
        return EXIT_REFUSED
    problems = cross_check(settings)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=out)
        for problem in problems:
            print(f"  {problem}", file=out)
        print(f"fix the problems above, then run `gatehouse check-config {path}` again", file=out)
        return EXIT_REFUSED
    print(f"{path}: ok ({len(settings.routes)} routes, {len(settings.listeners)} listeners)", file=out)
    return EXIT_OK


def cross_check(settings: Settings) -> list[str]:
    """Problems that span files: the policy file itself, and route tiers against its tiers."""
    if settings.policy is None:
        return ["policy: is required to decide requests; name the policy file, e.g. `policy: policy.yaml`"] if settings.routes else []
    try:
        policies = load_policy(settings.policy)
    except ConfigError as exc:
        return [f"{exc.source}: {p}" for p in exc.problems]
    return [str(p) for p in route_tier_problems(settings.routes, policies)]


def _cmd_check_config(args: argparse.Namespace) -> int:
    return check_config(Path(args.file), out=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="gatehouse", description="Zero-trust access-gating reverse proxy.")
    parser.add_argument("--version", action="version", version=f"gatehouse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check-config", help="validate a configuration file without starting anything")
    check.add_argument("file", help="the YAML or JSON configuration file")
    check.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gatehouse` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return EXIT_REFUSED
