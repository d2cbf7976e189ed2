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

from fsad.config import ConfigError, Params, plain_copy, validated
from fsad.scorers.method import SELECTION_KEYS, Method

BUILTIN_PACKAGE = "fsad.scorers"


class MethodError(ConfigError):
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


def method_params(method: Method, params: Params, where: str = "scorer") -> Params:
    """``params`` (without the instance's selection keys) checked against the method's schema, defaults filled in.

    Raises:
        MethodError: naming ``where`` (e.g. ``scorers.winclip_paper``), the offending key and the schema's rule.
    """
    own = {k: plain_copy(v) for k, v in params.items() if k not in SELECTION_KEYS}
    try:
        return validated(method.schema, own, where, f"method {method.name!r}")
    except ConfigError as err:
        raise MethodError(str(err)) from None
