"""Enrollment rules as plain functions: where the proof nonce may be written."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.identity.enrollment import nonce_path_problem
from gateway.config.identity import DeviceCaSettings
from gateway.config.secret import Secret


class TestNoncePath:
    @pytest.mark.parametrize("path", [
        "/Users/alice/.gatehouse/enroll-nonce", "/home/alice/.gatehouse/enroll-nonce", "C:\\Users\\alice\\.gatehouse\\enroll-nonce",
    ])
    def test_the_usual_homes_are_accepted(self, path: str) -> None:
        """macOS, Linux and Windows home directories hold the nonce without any configuration."""
        assert None is nonce_path_problem(path)

    @pytest.mark.parametrize("path", ["/etc/shadow", "/var/home/alice/.gatehouse/enroll-nonce", "/home/.gatehouse", "/tmp/x/enroll-nonce"])
    def test_anything_else_is_refused_naming_the_homes(self, path: str) -> None:
        """A path outside a home is refused, and the answer names the homes it expected."""
        problem = nonce_path_problem(path)

        assert problem is not None and problem.startswith("is not under a home directory; expected `/Users/<name>/…`")

    def test_a_configured_home_root_holds_homes_too(self) -> None:
        """With `home_roots: [/var/home]` a Fedora Atomic home is accepted, the root itself or a file right in it is not."""
        roots = ("/var/home",)

        problems = [nonce_path_problem(p, home_roots=roots) for p in
                    ("/var/home/alice/.gatehouse/enroll-nonce", "/var/home/enroll-nonce", "/var/homestead/alice/x")]

        assert None is problems[0]
        assert problems[1] is not None and "`/var/home/<name>/…`" in problems[1]
        assert problems[2] is not None

    @pytest.mark.parametrize("root", ["/", "var/home", "/var/../etc", "/var/'home"])
    def test_a_home_root_must_be_a_plain_absolute_directory(self, root: str, tmp_path: Path) -> None:
        """`home_roots` entries that are relative, `/`, contain `..` or quotes are refused at load."""
        with pytest.raises(ValidationError, match="is not an absolute directory such as `/var/home`"):
            DeviceCaSettings(cert=tmp_path / "ca.pem", key=Secret("k"), home_roots=(root,))
