"""Configuration of the evidence Gatehouse keeps for auditors: the ``evidence:`` section of the settings file.

Owns: EvidenceSettings.
Must not import: aiohttp, gateway.app (settings sections are leaves).

Example::

    evidence:
      ledger_flush_s: 5               # the most a crash can lose: one flush period of counts
      ledger_max_pending_rows: 100000 # kept in memory while the store is down; beyond: dropped and counted
      ledger_retention_days: 400      # an annual audit period plus a month
      # ledger_enabled: false         # for benchmarking only (`make bench`): nothing is counted

These take effect when Gatehouse starts (a reload keeps the running values).
"""

from __future__ import annotations

from pydantic import Field

from gateway.config.section import Section


class EvidenceSettings(Section):
    """How the access ledger is written and how long it is kept."""

    ledger_flush_s: float = Field(default=5.0, gt=0, le=300)
    """Seconds between writes of the access ledger's counts to the store; a crash loses at most this much."""
    ledger_max_pending_rows: int = Field(default=100_000, ge=100)
    """Ledger rows kept in memory while the store cannot take them (about 400 bytes each); requests that
    would need a new row beyond this are not counted, and ``gatehouse_ledger_dropped_requests_total`` says how many."""
    ledger_retention_days: int = Field(default=400, ge=1)
    """Hours of the access ledger older than this are deleted (checked hourly)."""
    ledger_enabled: bool = True
    """False counts nothing in the access ledger, so the evidence has a gap for as long as it runs: meant only
    for measuring the ledger's cost (``make bench``'s many-users row with the ledger off); logged as a warning at start."""
