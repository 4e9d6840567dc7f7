"""The throwaway PostgreSQL the storage tests rely on really starts and answers."""

from __future__ import annotations

import subprocess

import pytest


@pytest.mark.postgres
def test_postgres_database_accepts_queries(postgres_dsn: str) -> None:
    """A per-test database on the throwaway cluster answers a query."""
    result = subprocess.run(["psql", postgres_dsn, "-tAc", "SELECT 40 + 2"], capture_output=True, text=True, check=True)

    assert "42" == result.stdout.strip()
