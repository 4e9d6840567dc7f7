"""`gatehouse check-config` and `gatehouse serve`: checking a configuration, and running it.

Owns: check_config, cross_check, serve.
Must not import: argparse, cli.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from gateway.config.breakglass import route_set_problems
from gateway.cli.commands.common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Refused, command, load_config
from gateway.errors import ConfigError
from gateway.config.policy_file import load_policy, route_tier_problems
from gateway.config.settings import Settings, load_settings


def check_config(path: Path, *, out: TextIO, environ: Mapping[str, str] | None = None) -> int:
    """Validate a configuration file (and the policy and key files it names) without starting anything."""
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
    """Problems that span files: the policy and route tiers, identity key files, the device CA, break-glass route sets."""
    problems: list[str] = []
    if settings.policy is None:
        if settings.routes:
            problems.append("policy: is required to decide requests; name the policy file, e.g. `policy: policy.yaml`")
    else:
        try:
            policies = load_policy(settings.policy)
        except ConfigError as exc:
            problems.extend(f"{exc.source}: {p}" for p in exc.problems)
        else:
            problems.extend(str(p) for p in route_tier_problems(settings.routes, policies))
    if settings.identity is not None:
        from gateway.identity import check_identity_files

        problems.extend(str(p) for p in check_identity_files(settings.identity))
        if settings.identity.device.ca is not None:
            from datetime import UTC, datetime

            from gateway.identity.device_ca import device_ca_problems

            problems.extend(str(p) for p in device_ca_problems(settings.identity.device.ca, now=datetime.now(UTC)))
    problems.extend(str(p) for p in route_set_problems(settings.breakglass, (r.id for r in settings.routes)))
    return problems


@command
def serve(config: Path, *, workers: int | None = None, environ: Mapping[str, str] | None = None, err: TextIO | None = None) -> int:
    """Configure logging from the file, then serve it until SIGTERM (blocking); the exit code.

    ``workers`` is passed to ``gateway.serve.workers.run`` (None: one per CPU). ``err`` gets the refusals.
    """
    from gateway.logging import configure_logging
    from gateway.serve.workers import run

    settings = load_config(config, environ)
    if workers is not None and workers < 1:
        raise Refused(f"--workers: `{workers}` is not a number of processes; give 1 or more\n"
                      f"  gatehouse serve --config {config} --workers 2", EXIT_USAGE)
    configure_logging(settings.logging.level, settings.logging.format)
    return run(config, environ=environ, workers=workers)
