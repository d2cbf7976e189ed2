"""Built-in dataset adapters; importing this package registers them all."""

from fsad.data.adapters import (  # noqa: F401
    aitex,
    bmad,
    btad,
    dagm,
    dtd_synthetic,
    elpv,
    folder,
    medical,
    mpdd,
    mvtec_ad,
    sdd,
    semantic,
    synthetic,
    textile,
    visa,
)
