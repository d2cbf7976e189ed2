"""Built-in dataset adapters; importing this package registers them all."""

import importlib

for _module in ("textile", "elpv", "synthetic", "folder", "mvtec_ad", "visa", "sdd", "btad", "mpdd"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as err:  # adapters land one by one; a missing one is reported when used
        if err.name != f"{__name__}.{_module}":
            raise
