"""The lock file pins every dependency of pyproject.toml exactly, and the environment and the installs use it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_every_dependency_of_the_run_and_the_test_extras_is_pinned_to_a_version_it_allows():
    pins = locked()
    assert len(pins) > len(declared())  # the transitive dependencies too
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {LOCK.name}; recompile it (README: the lock file)"
        assert Version(pins[name]) in requirement.specifier, f"{name}=={pins[name]} violates pyproject's {requirement}"


def test_every_line_of_the_lock_is_an_exact_pin_or_a_comment():
    for line in LOCK.read_text().splitlines():
        assert not line.strip() or line.lstrip().startswith("#") or PIN.match(line), line


def test_the_installed_dependencies_are_the_locked_versions():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        installed = Version(metadata.version(requirement.name))
        assert installed == Version(pins[name]), f"{name} {installed} installed, {pins[name]} locked: pip install -e '.[test]' -c requirements/lock.txt"


def test_the_conda_environment_holds_the_locks_pins_so_a_bump_changes_it():
    env = yaml.safe_load((ROOT / "envs" / "fsad.yaml").read_text())
    pip_lines = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    expected = [f"{name}=={version}" for name, version in locked().items()]
    assert [canonicalize_name(line.split("==")[0]) + "==" + line.split("==")[1] for line in pip_lines[:-1]] == expected
    assert pip_lines[-1] == "-e .." and "python=3.11" in env["dependencies"]


def test_the_readme_and_ci_install_from_the_lock():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e . -c requirements/lock.txt && snakemake --cores 2" in readme
    assert "pip install -e '.[test]' -c requirements/lock.txt && python -m pytest" in readme
    (test_command,) = {line.strip() for line in readme.splitlines() if line.startswith("pip install -e '.[test]'")}
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines(), "CI runs the README's test command exactly"
