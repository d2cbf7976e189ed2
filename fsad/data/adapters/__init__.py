"""Built-in dataset adapters; importing this package registers them all."""

from fsad.data.adapters import btad, elpv, folder, mpdd, mvtec_ad, sdd, semantic, synthetic, textile, visa  # noqa: F401
