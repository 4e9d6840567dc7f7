"""What the wheel ships beyond code: the PEP 561 markers that let users type-check against Gatehouse."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("package", ["gateway", "policy_engine", "breakglass"])
def test_each_package_ships_py_typed(package: str) -> None:
    """Each package has a py.typed file and lists it in package-data, so an installed copy is typed."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]

    assert (ROOT / package / "py.typed").is_file()
    assert "py.typed" in package_data.get(package, [])
