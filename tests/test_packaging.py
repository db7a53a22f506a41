"""The declared dependency floors are the versions `make test-oldest` pins, and CI's constraints satisfy them."""

import configparser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
UNTESTED_EXTRAS = {"bench", "screenshots"}  # for the benchmarks and the screenshot script; the suite uses neither


def declared() -> list[Requirement]:
    """install_requires and every tested extra of setup.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra, requirements in config["options.extras_require"].items():
        if extra not in UNTESTED_EXTRAS:
            lines += requirements.splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def pins(name: str) -> dict[str, Version]:
    """{canonical name: version} of a requirements/ file of `name==version` lines."""
    found = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            found[canonicalize_name(requirement.name)] = Version(specifier.version)
    return found


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_floor_is_pinned_by_test_oldest(requirement):
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{requirement}: one >= floor expected"
    assert pins("oldest.txt").get(canonicalize_name(requirement.name)) == floors[0]


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_ci_constraints_pin_a_version_the_range_admits(requirement):
    version = pins("ci.txt").get(canonicalize_name(requirement.name))
    assert version is not None, f"requirements/ci.txt does not pin {requirement.name}"
    assert requirement.specifier.contains(version), f"{requirement.name}=={version} is outside {requirement.specifier}"


def test_test_oldest_pins_nothing_undeclared():
    names = {canonicalize_name(r.name) for r in declared()}
    assert set(pins("oldest.txt")) <= names
