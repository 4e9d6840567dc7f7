"""The plain functions behind each `gatehouse` subcommand; cli.py only parses arguments and calls them.

Owns: one function per subcommand, each returning its exit code (0 success, 1 refused or problems
found, 2 bad usage) and printing to the ``out``/``err`` streams it is given; error text ends with
the command that would fix it. Async functions open and close the store themselves.
Must not import: argparse, cli.
"""

from __future__ import annotations

from gateway.cli.commands.audit import audit_export, audit_verify, break_glass_list
from gateway.cli.commands.common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Progress, Refused, parse_moment
from gateway.cli.commands.config import check_config, cross_check, serve
from gateway.cli.commands.connectors import try_connector
from gateway.cli.commands.data import export_evidence_to, import_snapshots
from gateway.cli.commands.evidence import bundle_evidence, verify_evidence
from gateway.cli.commands.demo import demo_run, demo_token
from gateway.cli.commands.device_ca import create_ca
from gateway.cli.commands.devices import (
    assign_owners, import_owners, list_device_certificates, list_owners, revoke_device_certificates, unassign_owners,
)
from gateway.cli.commands.policy import check_policy, explain_device, import_stethoscope, simulate_policy
from gateway.cli.commands.report import compliance_report

__all__ = [
    "try_connector",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "Progress",
    "Refused",
    "assign_owners",
    "audit_export",
    "audit_verify",
    "break_glass_list",
    "bundle_evidence",
    "check_config",
    "check_policy",
    "create_ca",
    "compliance_report",
    "cross_check",
    "demo_run",
    "demo_token",
    "explain_device",
    "export_evidence_to",
    "import_owners",
    "import_snapshots",
    "import_stethoscope",
    "list_device_certificates",
    "list_owners",
    "parse_moment",
    "serve",
    "simulate_policy",
    "revoke_device_certificates",
    "unassign_owners",
    "verify_evidence",
]
