"""Find method declarations and apply their parameter schemas.

Built-in methods are the packages under ``fsad/scorers/`` with a ``method.py``; further methods come from
the config's ``plugins:`` list (importable modules, each with a ``METHOD``). A scorer instance's
parameters are validated against its method's ``schema.yaml``, which also fills in every default.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fsad.scorers.method import SELECTION_KEYS, Method, Params
from fsad.scorers.method_schema import load_schema

BUILTIN_PACKAGE = "fsad.scorers"


class MethodError(ValueError):
    """An unknown method, a broken declaration or parameters its schema refuses; the message names the fix."""


@cache
def builtin_method_modules() -> dict[str, str]:
    """Method name -> module path of its declaration, for every package under ``fsad/scorers/``."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    modules = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg and (Path(package.__path__[0]) / info.name / "method.py").exists():
            module = f"{BUILTIN_PACKAGE}.{info.name}.method"
            modules[load_method(module).name] = module
    return modules


@cache
def load_method(module: str) -> Method:
    """The ``METHOD`` of a declaration module."""
    try:
        declared = importlib.import_module(module).METHOD
    except ModuleNotFoundError as err:
        # Blame the plugin list only when the module asked for is the one missing; a missing dependency of an
        # importable module (a built-in's or a plugin's) names the package to install.
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            raise MethodError(f"method module {module!r} cannot be imported ({err}); check the config's plugins list and PYTHONPATH") from err
        raise MethodError(f"method module {module!r} needs the package {err.name!r}, which is not installed; install it (pip install {err.name.split('.')[0]})") from err
    except AttributeError:
        raise MethodError(f"module {module!r} declares no METHOD = fsad.scorers.method.Method(...)") from None
    if not isinstance(declared, Method):
        raise MethodError(f"{module}.METHOD is a {type(declared).__name__}, not a fsad.scorers.method.Method")
    if not Path(declared.schema).is_file():
        raise MethodError(f"method {declared.name!r} ({module}): its schema {declared.schema} does not exist; point Method.schema at its schema.yaml")
    try:
        report_only = declared.stage_names("report")
    except ValueError as err:
        raise MethodError(f"method {declared.name!r}: {err}") from None
    if report_only and declared.report is None:
        raise MethodError(f"method {declared.name!r}: {list(report_only)} have x-stages [report] in {declared.schema}, but the method declares no report")
    return declared


def method_modules(plugins: list[str] = ()) -> dict[str, str]:
    """Method name -> declaration module, built-ins first, then ``plugins`` (a plugin may not shadow a built-in)."""
    modules = dict(builtin_method_modules())
    for module in plugins:
        name = load_method(module).name
        if name in modules and modules[name] != module:
            raise MethodError(f"plugin {module!r} declares method {name!r}, which {modules[name]} already declares; rename it")
        modules[name] = module
    return modules


def method_module(name: str, plugins: list[str] = ()) -> str:
    modules = method_modules(plugins)
    if name not in modules:
        raise MethodError(f"unknown method {name!r}; known methods: {sorted(modules)} (add your own with the config's plugins list)")
    return modules[name]


def get_method(name: str, plugins: list[str] = ()) -> Method:
    return load_method(method_module(name, plugins))


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in each property's ``default`` (as Snakemake's ``validate`` does)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, _copy(sub["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def method_params(method: Method, params: Params, where: str = "scorer") -> Params:
    """``params`` (without the instance's selection keys) checked against the method's schema, defaults filled in.

    Raises:
        MethodError: naming ``where`` (e.g. ``scorers.winclip_paper``), the offending key and the schema's rule.
    """
    own = {k: _copy(v) for k, v in params.items() if k not in SELECTION_KEYS}
    return validated(method.schema, own, where, f"method {method.name!r}")


def validated(schema_path: Path, params: Params, where: str, owner: str) -> Params:
    """``params`` checked against the YAML JSON schema at ``schema_path`` (its fragments included), defaults filled in and numbers in the
    declared type (:func:`_as_declared`), in place.

    Raises:
        MethodError: naming ``where``, the offending key, ``owner`` (what the schema belongs to) and the schema's rule.
    """
    schema = load_schema(schema_path)
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        key = ".".join(map(str, err.absolute_path)) or "(parameters)"
        raise MethodError(f"config: {where}.{key}: {err.message}{_yaml_number_hint(err)} ({owner}, schema {schema_path})")
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


def _yaml_number_hint(err: jsonschema.ValidationError) -> str:
    """For a number written as ``1e-1``, which YAML 1.1 (PyYAML, Snakemake) reads as a string: how to write it."""
    if err.validator != "type" or not isinstance(err.instance, str):
        return ""
    try:
        value = float(err.instance)
    except ValueError:
        return ""
    return f"; YAML reads {err.instance} as text, write it with a dot and a signed exponent (1.0e-1) or as {value!r}"
