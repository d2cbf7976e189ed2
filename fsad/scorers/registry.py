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
        raise MethodError(f"method module {module!r} cannot be imported ({err}); check the config's plugins list and PYTHONPATH") from err
    except AttributeError:
        raise MethodError(f"module {module!r} declares no METHOD = fsad.scorers.method.Method(...)") from None
    if not isinstance(declared, Method):
        raise MethodError(f"{module}.METHOD is a {type(declared).__name__}, not a fsad.scorers.method.Method")
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


@cache
def _schema(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def method_params(method: Method, params: Params, where: str = "scorer") -> Params:
    """``params`` (without the instance's selection keys) checked against the method's schema, defaults filled in.

    Raises:
        MethodError: naming ``where`` (e.g. ``scorers.winclip_paper``), the offending key and the schema's rule.
    """
    own = {k: _copy(v) for k, v in params.items() if k not in SELECTION_KEYS}
    schema = _schema(method.schema)
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    errors = sorted(validator.iter_errors(own), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        key = ".".join(map(str, err.absolute_path)) or "(parameters)"
        raise MethodError(f"config: {where}.{key}: {err.message} (method {method.name!r}, schema {method.schema})")
    return own
