"""Config checks beyond the JSON schema, and canonical forms for Snakemake params."""

from __future__ import annotations

from typing import Any

# Scorers that learn from anomalous images need their masks.
SCORERS_NEEDING_MASKS = {"anomalous_memory"}


class ConfigError(ValueError):
    """A config that passes the schema but cannot run; the message names the key and the fix."""


def canonical(value: Any) -> Any:
    """Recursively key-sorted copy of ``value``.

    Snakemake compares params by ``repr``; sorting keys makes a reordered YAML mapping rerun nothing.
    """
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def _unique(names: list[str], what: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"config: duplicate {what} names {dup}; each {what} needs its own name")


def check_config(config: dict[str, Any]) -> None:
    """Check cross references the schema cannot express (scorer -> backbone, settings, datasets)."""
    from fsad.data.registry import get_adapter

    _unique([d["name"] for d in config["datasets"]], "dataset")
    _unique([s["name"] for s in config["settings"]], "setting")
    datasets = {d["name"]: d for d in config["datasets"]}
    settings = {s["name"]: s for s in config["settings"]}
    for dataset in datasets.values():
        get_adapter(dataset["kind"])
    for name, scorer in config["scorers"].items():
        if not scorer.get("enabled", True):
            continue
        where = f"config: scorers.{name}"
        if scorer.get("backbone") not in config["backbones"]:
            raise ConfigError(
                f"{where}.backbone is {scorer.get('backbone')!r}; set it to one of backbones: {sorted(config['backbones'])}"
            )
        for setting in scorer.get("settings") or []:
            if setting not in settings:
                raise ConfigError(f"{where}.settings names {setting!r}, which is not in settings: {sorted(settings)}")
        for dataset in scorer.get("datasets") or []:
            if dataset not in datasets:
                raise ConfigError(f"{where}.datasets names {dataset!r}, which is not in datasets: {sorted(datasets)}")
        if name in SCORERS_NEEDING_MASKS:
            for dataset in scorer.get("datasets") or list(datasets):
                if not get_adapter(datasets[dataset]["kind"]).has_masks:
                    raise ConfigError(
                        f"{where}: dataset {dataset!r} ({datasets[dataset]['kind']}) has no anomaly masks, which {name} "
                        f"needs to build its anomalous memory; remove it from scorers.{name}.datasets"
                    )
    pool = config.get("reference_pool", {})
    for setting in settings.values():
        runs = setting.get("runs", config.get("runs", 1))
        need = setting.get("anomalous_shots", 0) * runs
        if need > pool.get("anomalous", 0):
            raise ConfigError(
                f"config: setting {setting['name']!r} needs {need} distinct anomalous images over {runs} "
                f"run(s) but reference_pool.anomalous is {pool.get('anomalous', 0)}; raise it to at least {need}"
            )
        need = setting.get("normal_shots", 0) + setting.get("validation_normals", 0)
        if need > pool.get("normal", 0):
            raise ConfigError(
                f"config: setting {setting['name']!r} needs {need} normal images but reference_pool.normal is "
                f"{pool.get('normal', 0)}; raise it to at least {need}"
            )
