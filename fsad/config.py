"""The config: parameters checked against their schemas (defaults filled in), checks beyond the schemas, and
canonical forms for Snakemake params."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from fsad.schemas import load_schema

if TYPE_CHECKING:
    from fsad.scorers.method import Method

# A scorer instance's, a generator's or a dataset's parameters.
Params = dict[str, Any]


class ConfigError(ValueError):
    """A config that passes the schema but cannot run; the message names the key and the fix."""


# Keys every config holds: a config file on the command line replaces the embedded demo, it does not extend it.
REQUIRED_KEYS = ("datasets", "settings", "backbones", "scorers")


def check_complete(config: dict[str, Any]) -> None:
    """A clear error for a partial config (an overlay written for the old merge-on-the-demo behaviour) or ``enabled``."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ConfigError(
            f"the config lacks {missing}: a --configfile is the whole config, not an overlay on config/config.yaml; "
            "start from a copy of config/config.yaml or of a benchmark in config/benchmarks/"
        )
    disabled = [name for name, spec in config["scorers"].items() if isinstance(spec, dict) and "enabled" in spec]
    if disabled:
        raise ConfigError(
            f"scorers.{disabled[0]}.enabled: a config runs every scorer instance it lists, so there is no switch; "
            "delete the instances it should not run"
        )


def check_datasets(config: dict[str, Any]) -> None:
    """Each dataset's options against its kind's schema (``fsad/data/adapters/<kind>.schema.yaml``).

    Raises:
        ConfigError: ``config: datasets.<name>.<key>: ...`` for an option the kind does not have or a bad value.
    """
    from fsad.data.registry import get_adapter

    for spec in config["datasets"]:
        get_adapter(spec["kind"]).options(spec)


def validated(schema_path: Path, params: Params, where: str, owner: str) -> Params:
    """``params`` checked against the YAML JSON schema at ``schema_path`` (its fragments included), defaults filled in and numbers in the
    declared type (:func:`_as_declared`), in place.

    Raises:
        ConfigError: naming ``where``, the offending key, ``owner`` (what the schema belongs to) and the schema's rule.
    """
    schema = load_schema(schema_path)
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        key = ".".join(map(str, err.absolute_path)) or "(parameters)"
        raise ConfigError(f"config: {where}.{key}: {err.message}{_yaml_number_hint(err)} ({owner}, schema {schema_path})")
    params.update(_as_declared(params, schema))
    return params


def _as_declared(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with every number in the type its schema declares: an int where the schema says ``number``
    becomes a float, an integral float where it says only ``integer`` an int.

    Snakemake compares params by ``repr``: without this, ``temperature: 1`` and ``temperature: 1.0`` (the same
    value) would rerun every job of the instance when a config changes one spelling for the other.
    """
    types = schema.get("type", ())
    types = {types} if isinstance(types, str) else set(types)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and "number" in types:
        return float(value)
    if isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types:
        return int(value)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: _as_declared(v, properties.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_as_declared(v, schema["items"]) for v in value]
    return value


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in each property's ``default`` (as Snakemake's ``validate`` does)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, plain_copy(sub["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _yaml_number_hint(err: jsonschema.ValidationError) -> str:
    """For a number written as ``1e-1``, which YAML 1.1 (PyYAML, Snakemake) reads as a string: how to write it."""
    if err.validator != "type" or not isinstance(err.instance, str):
        return ""
    try:
        value = float(err.instance)
    except ValueError:
        return ""
    return f"; YAML reads {err.instance} as text, write it with a dot and a signed exponent (1.0e-1) or as {value!r}"


def plain_copy(value: Any) -> Any:
    """A deep copy of ``value`` in plain YAML types (tuples become lists), as a config file would give it."""
    return yaml.safe_load(yaml.safe_dump(value))


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


def _check_references(name: str, instance: dict[str, Any], config: dict[str, Any], datasets: dict, settings: dict) -> None:
    where = f"config: scorers.{name}"
    if instance.get("backbone") not in config["backbones"]:
        raise ConfigError(f"{where}.backbone is {instance.get('backbone')!r}; set it to one of backbones: {sorted(config['backbones'])}")
    for setting in instance.get("settings") or []:
        if setting not in settings:
            raise ConfigError(f"{where}.settings names {setting!r}, which is not in settings: {sorted(settings)}")
    for dataset in instance.get("datasets") or []:
        if dataset not in datasets:
            raise ConfigError(f"{where}.datasets names {dataset!r}, which is not in datasets: {sorted(datasets)}")


def _check_needs(name: str, instance: dict[str, Any], method: Method, params: Params, datasets: dict, settings: dict) -> None:
    """What the method declares it needs, against the datasets and settings the instance runs on."""
    from fsad.data.registry import get_adapter

    where = f"config: scorers.{name}"
    needs = method.needs
    if needs.masks:
        for dataset in instance.get("datasets") or list(datasets):
            if not get_adapter(datasets[dataset]["kind"]).has_masks:
                raise ConfigError(
                    f"{where}: dataset {dataset!r} ({datasets[dataset]['kind']}) has no anomaly masks, which method "
                    f"{method.name!r} needs; remove it from scorers.{name}.datasets"
                )
    for setting_name in instance.get("settings") or list(settings):
        setting = settings[setting_name]
        fix = f"set scorers.{name}.settings to settings that meet it"
        if needs.anomalous_shots is not None and setting.get("anomalous_shots", 0) != needs.anomalous_shots:
            raise ConfigError(f"{where}: method {method.name!r} needs anomalous_shots: {needs.anomalous_shots}, setting {setting_name!r} has {setting.get('anomalous_shots', 0)}; {fix}")
        if setting.get("normal_shots", 0) < needs.min_normal_shots:
            raise ConfigError(f"{where}: method {method.name!r} needs normal_shots >= {needs.min_normal_shots}, setting {setting_name!r} has {setting.get('normal_shots', 0)}; {fix}")
        least = needs.min_validation_normals(params)
        if setting.get("validation_normals", 0) < least:
            raise ConfigError(f"{where}: method {method.name!r} needs validation_normals >= {least} with these parameters, setting {setting_name!r} has {setting.get('validation_normals', 0)}; {fix}")
    if method.fit is not None and method.fit.scope == "dataset":
        choice = params.get("train_dataset")
        names = [choice] if isinstance(choice, str) else list((choice or {}).values())
        if not names or any(n not in datasets for n in names):
            raise ConfigError(f"{where}.train_dataset is {choice!r}; name a dataset of the config's datasets: {sorted(datasets)}")


def check_config(config: dict[str, Any], methods: dict[str, Method], params: dict[str, Params]) -> None:
    """Check what the schemas cannot express: names, cross references, method needs, pool sizes.

    Args:
        methods: scorer instance -> its method's declaration.
        params: scorer instance -> its parameters, defaults filled in.
    """
    from fsad.data.registry import get_adapter

    _unique([d["name"] for d in config["datasets"]], "dataset")
    _unique([s["name"] for s in config["settings"]], "setting")
    datasets = {d["name"]: d for d in config["datasets"]}
    settings = {s["name"]: s for s in config["settings"]}
    for dataset in datasets.values():
        get_adapter(dataset["kind"])
        _check_shots_file(dataset)
    for name, backbone in config["backbones"].items():
        _check_backbone(name, backbone)
    for name, method in methods.items():
        instance = config["scorers"][name]
        _check_references(name, instance, config, datasets, settings)
        _check_needs(name, instance, method, params[name], datasets, settings)
        _check_timm_features(name, instance, method, params[name], config)
        problem = method.check(params[name], config)
        if problem:
            raise ConfigError(f"config: scorers.{name}: {problem}")
        _check_generated(name, instance, method, params[name], config, settings)
    member_validation(config, methods, params)
    _check_pools(config, settings)


def _check_shots_file(dataset: dict[str, Any]) -> None:
    """A dataset's ``shots_file`` (the papers' shots) exists, so the run stops before any job when it does not."""
    path = dataset.get("shots_file")
    if path and not Path(path).is_file():
        raise ConfigError(
            f"config: datasets.{dataset['name']}.shots_file: {path} does not exist (relative paths are from the directory snakemake "
            f"runs in); convert the papers' shots first (python -m fsad.data.fixed_shots promptad SEEDS_DIR MANIFEST {path}; the "
            f"manifest is <results_dir>/data/{dataset['name']}/manifest.csv, written by `snakemake <results_dir>/data/{dataset['name']}/manifest.csv` with the config without shots_file), "
            f"or remove shots_file to draw the shots"
        )


# What only open_clip backbones hold: WinCLIP's window embeddings, AnomalyCLIP's V-V tokens, a declared activation,
# PromptAD's resize, the public codes' position-embedding resize and image embedding (their defaults are every backbone's).
CLIP_ONLY_KEYS = {
    "window_sizes": "window embeddings",
    "vv_layers": "V-V attention tokens",
    "quick_gelu": "a CLIP MLP activation",
    "resize": "PromptAD resize",
    "pos_embed_resize": "CLIP position-embedding resize",
    "image_embedding": "CLIP image embedding choice",
}
# What only open_clip backbones compute for an instance: the keys above, and PromptAD's mid-block states (asked by scorers).
CLIP_ONLY_FEATURES = {**CLIP_ONLY_KEYS, "mid_layers": "mid-block states"}


def _check_backbone(name: str, backbone: dict[str, Any]) -> None:
    """A timm backbone names none of what only CLIP networks have."""
    from fsad.backbones.spec import DEFAULT_LEFT_OUT, OPEN_CLIP, backbone_library

    try:
        library = backbone_library(backbone)
    except ValueError as err:
        raise ConfigError(f"config: backbones.{name}: {err}") from None
    if library == OPEN_CLIP:
        return
    for key, what in CLIP_ONLY_KEYS.items():
        if backbone.get(key) not in (None, [], DEFAULT_LEFT_OUT.get(key)):
            fix = "set window_sizes: [] (its default is [2, 3], for CLIP)" if key == "window_sizes" else f"remove {key}"
            raise ConfigError(f"config: backbones.{name}.{key}: a {library} backbone has no {what}; {fix}")


def _check_timm_features(name: str, instance: dict[str, Any], method: Method, params: Params, config: dict[str, Any]) -> None:
    """An instance on a timm backbone declares no window sizes, V-V or mid-block layers (they are CLIP features)."""
    from fsad.backbones.spec import OPEN_CLIP, backbone_library

    backbone = config["backbones"][instance["backbone"]]
    if backbone_library(backbone) == OPEN_CLIP:
        return
    declared = method.features(params)
    for key in ("window_sizes", "vv_layers", "mid_layers"):
        if getattr(declared, key):
            raise ConfigError(
                f"config: scorers.{name}: method {method.name!r} reads {CLIP_ONLY_FEATURES[key]} ({key} {list(getattr(declared, key))}), which backbone "
                f"{instance['backbone']!r} ({backbone_library(backbone)}) does not have; give the instance an open_clip backbone"
            )


def _check_generated(name: str, instance: dict[str, Any], method: Method, params: Params, config: dict[str, Any], settings: dict) -> None:
    """An instance that reads generated images names a generator of the config and runs where there are references to fine-tune on."""
    declared = method.generated(params)
    if not (declared.pool or declared.personalized):
        return
    where = f"config: scorers.{name}"
    generators = config.get("generators") or {}
    if declared.generator not in generators:
        raise ConfigError(f"{where}.generator is {declared.generator!r}; name one of generators: {sorted(generators)}")
    if declared.generator in config["scorers"]:
        raise ConfigError(f"config: generators.{declared.generator} has the name of a scorer instance (both write under models/); rename one")
    for setting in instance.get("settings") or list(settings):
        if settings[setting].get("normal_shots", 0) < 1:
            raise ConfigError(f"{where}: generator {declared.generator!r} fine-tunes on normal references, setting {setting!r} has none; drop it from scorers.{name}.settings")


def member_validation(config: dict[str, Any], methods: dict[str, Method], params: dict[str, Params]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(member, dataset, setting) -> validation set spec`` of every instance a fusion names (``Method.members``).

    Raises:
        ConfigError: a member that is not an instance, that reads members itself, that does not run the reader's datasets
            and settings, or that two readers ask for different validation sets on one dataset and setting.
    """
    every = {"datasets": [d["name"] for d in config["datasets"]], "settings": [s["name"] for s in config["settings"]]}
    chosen = lambda instance, key: instance.get(key) or every[key]  # noqa: E731
    specs: dict[tuple[str, str, str], dict[str, Any]] = {}
    owners: dict[tuple[str, str, str], str] = {}
    for name, method in methods.items():
        declared = method.members(params[name])
        reader = config["scorers"][name]
        for member in declared.scorers:
            where = f"config: scorers.{name}.members"
            if member not in config["scorers"]:
                raise ConfigError(f"{where} names {member!r}, which is not a scorer instance; name one of {sorted(config['scorers'])}")
            if member == name or methods[member].members(params[member]).scorers:
                raise ConfigError(f"{where} names {member!r}, which fuses other instances itself; name the instances it fuses instead")
            if methods[member].generated(params[member]).personalized:
                raise ConfigError(
                    f"{where} names {member!r}, which reads personalized copies of its test images: the validation set has none, "
                    f"so it cannot be scored there; drop it from the members"
                )
            instance = config["scorers"][member]
            for key in ("datasets", "settings"):
                lacking = sorted(set(chosen(reader, key)) - set(chosen(instance, key)))
                if lacking:
                    raise ConfigError(f"{where}: {member!r} does not run {key} {lacking} that {name!r} runs; add them to scorers.{member}.{key} or drop them from scorers.{name}.{key}")
            for dataset in chosen(reader, "datasets"):
                for setting in chosen(reader, "settings"):
                    key = (member, dataset, setting)
                    if key in specs and specs[key] != declared.validation:
                        raise ConfigError(
                            f"{where}: {member!r} on {dataset}/{setting} is fused by {owners[key]!r} too, with another validation set; "
                            f"give scorers.{name}.validation and scorers.{owners[key]}.validation the same values"
                        )
                    specs[key], owners[key] = declared.validation, name
    return specs


def _check_pools(config: dict[str, Any], settings: dict[str, dict]) -> None:
    """Each run takes its own normal and anomalous references: the pools must hold all runs' references."""
    pool = config.get("reference_pool", {})
    for setting in settings.values():
        runs = setting.get("runs", config.get("runs", 1))
        need = setting.get("anomalous_shots", 0) * runs
        if need > pool.get("anomalous", 0):
            raise ConfigError(
                f"config: setting {setting['name']!r} needs {need} distinct anomalous images over {runs} "
                f"run(s) but reference_pool.anomalous is {pool.get('anomalous', 0)}; raise it to at least {need}"
            )
        need = setting.get("normal_shots", 0) * runs + setting.get("validation_normals", 0)
        if need > pool.get("normal", 0):
            raise ConfigError(
                f"config: setting {setting['name']!r} needs {need} normal images ({setting.get('normal_shots', 0)} distinct "
                f"references in each of {runs} run(s) plus {setting.get('validation_normals', 0)} for validation) but "
                f"reference_pool.normal is {pool.get('normal', 0)}; raise it to at least {need}"
            )
