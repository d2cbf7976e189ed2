"""Checks of the config's ``inspect:`` entries, before any job starts: each names one score job of the config."""

from __future__ import annotations

from typing import Any

from fsad.config import ConfigError
from fsad.scorers.method import Method


def check_inspections(
    config: dict[str, Any], methods: dict[str, Method], params: dict[str, dict[str, Any]], score_jobs: tuple[tuple, ...]
) -> None:
    """Each inspection's (schema-validated, defaults filled in) setup is one of ``score_jobs`` (scorer, dataset, category, setting, run), its method can score
    images that are not the run's (no per-test-image generated inputs), and its deciding option exists for its setting."""
    settings = {s["name"]: s for s in config["settings"]}
    for name, entry in config.get("inspect", {}).items():
        where = f"inspect.{name}"
        setup = (entry["scorer"], entry["dataset"], entry["category"], entry["setting"], entry["run"])
        if setup not in score_jobs:
            raise ConfigError(
                f"{where}: {'/'.join(map(str, setup))} is no score job of this config (scorer, dataset, category, setting, run); "
                f"choose a scorer instance and one of the datasets, categories, settings and runs it runs on"
            )
        scorer = entry["scorer"]
        if methods[scorer].generated(params[scorer]).personalized:
            raise ConfigError(
                f"{where}: scorer {scorer!r} reads a personalized image made for each test image, which new images do not have; "
                f"inspect with another instance"
            )
        if methods[scorer].members(params[scorer]).scorers:
            raise ConfigError(
                f"{where}: scorer {scorer!r} fuses the score files of other instances, which have none for new images; "
                f"inspect one of its members ({', '.join(methods[scorer].members(params[scorer]).scorers)})"
            )
        decision = entry["decision"]
        setting = settings[entry["setting"]]
        needed = {"validation_normals": "validation_normals", "reference_normals": "normal_shots"}.get(decision)
        if needed and not setting.get(needed, 0):
            raise ConfigError(
                f"{where}.decision {decision!r}: setting {entry['setting']!r} has {needed} 0; use a setting with some, or "
                f"decision test_normals or test_f1_max"
            )
