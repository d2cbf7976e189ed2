"""The ``requires`` marker: a missing setup skips its tests, unless the run requires the setup (CI)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import requirement_failure


def test_an_available_setup_neither_skips_nor_fails(monkeypatch):
    monkeypatch.setenv("FSAD_REQUIRE_SLURM", "1")
    assert requirement_failure(None, "FSAD_REQUIRE_SLURM") is None


def test_a_missing_setup_skips_unless_the_variable_is_one(monkeypatch):
    monkeypatch.delenv("FSAD_REQUIRE_SLURM", raising=False)
    assert requirement_failure("slurmd not installed", "FSAD_REQUIRE_SLURM") is None
    monkeypatch.setenv("FSAD_REQUIRE_SLURM", "0")
    assert requirement_failure("slurmd not installed", "FSAD_REQUIRE_SLURM") is None
    monkeypatch.setenv("FSAD_REQUIRE_SLURM", "1")
    message = requirement_failure("slurmd not installed", "FSAD_REQUIRE_SLURM")
    assert message.startswith("slurmd not installed") and "FSAD_REQUIRE_SLURM=1" in message


def test_ci_requires_the_slurm_and_chromium_setups():
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    exports = [line for line in ci.splitlines() if line.startswith("export ")]
    assert any("FSAD_REQUIRE_SLURM=1" in line and "FSAD_REQUIRE_CHROMIUM=1" in line for line in exports)
    assert ci.index("FSAD_REQUIRE_SLURM=1") < ci.index("python -m pytest")
