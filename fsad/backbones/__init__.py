"""CLIP backbones: open_clip loading, preprocessing, window masks, batched window embeddings, layer taps,
V-V attention, and the lazily built backbone of a score or fit job (:mod:`~fsad.backbones.session`).

The project's own open_clip model configs (for tests and CPU smoke runs: ``fsad-tiny``, a 2-block ViT at
112 px with a 7x7 patch grid, and ``fsad-tiny-l14``, a 4-block ViT with ViT-L-14-336's patch size and native
size) are registered by :mod:`fsad.backbones.loading`. This package itself imports nothing, so jobs that only
read cached features never pay for importing open_clip (seconds).
"""
