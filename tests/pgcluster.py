"""Throwaway PostgreSQL clusters for tests: initdb in a temporary directory, pg_ctl on a free port.

The session cluster (tests/conftest.py) and the outage tests' own clusters, which they stop and
start, are all made here.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Iterator


def postgres_bindir() -> str | None:
    """Where Debian's PostgreSQL server programs are, or None when it is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 that a test may stop and start."""

    def __init__(self, bindir: str, datadir: str, as_user: list[str], options: str = "") -> None:
        self.bindir, self.datadir, self.as_user, self.options = bindir, datadir, as_user, options
        self.port = _free_port()
        self.base_dsn = f"postgresql://postgres@127.0.0.1:{self.port}"
        self.dsn = f"{self.base_dsn}/postgres"

    def start(self) -> None:
        subprocess.run(
            [*self.as_user, f"{self.bindir}/pg_ctl", "-D", self.datadir, "-w", "-l", f"{self.datadir}/server.log",
             "-o", f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 {self.options}", "start"],
            check=True, capture_output=True,
        )

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(
            [*self.as_user, f"{self.bindir}/pg_ctl", "-D", self.datadir, "-w", "-m", mode, "stop"],
            check=True, capture_output=True,
        )


@contextmanager
def throwaway_cluster(bindir: str, *, options: str = "") -> Iterator[Cluster]:
    """A new, started cluster (initdb as user postgres when run as root); removed on exit."""
    datadir = tempfile.mkdtemp(prefix="gatehouse-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run(
            [*as_user, f"{bindir}/initdb", "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )
        cluster = Cluster(bindir, datadir, as_user, options)
        cluster.start()
        try:
            yield cluster
        finally:
            subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", datadir, "-m", "immediate", "stop"], capture_output=True)
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
