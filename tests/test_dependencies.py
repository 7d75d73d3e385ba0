"""The declared dependency ranges and the oldest versions CI installs (.ci/oldest.txt) stay in step."""

from __future__ import annotations

import configparser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CORE = {"torch", "transformers", "datasets", "accelerate", "huggingface-hub", "safetensors"}
#: Floors CI cannot install here, and where they are checked instead.
FLOOR_CHECKED_ELSEWHERE = {"torch": "2.13.0 is the oldest CPU wheel; 2.11 runs in the GPU check"}


def install_requires() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in lines}


def oldest_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / ".ci" / "oldest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_dependency_has_a_range_with_an_upper_bound():
    requires = install_requires()
    assert set(requires) >= CORE
    for name, requirement in requires.items():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators and "<" in operators, f"{name}: {requirement} needs a floor and a ceiling"


def test_oldest_versions_are_the_floors_of_the_ranges():
    requires, pins = install_requires(), oldest_pins()
    for name, requirement in requires.items():
        assert name in pins, f".ci/oldest.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
        floor = next(spec.version for spec in requirement.specifier if spec.operator == ">=")
        if name not in FLOOR_CHECKED_ELSEWHERE:
            assert pins[name].startswith(floor), f"{name}: CI's oldest is {pins[name]}, the floor is {floor}"
