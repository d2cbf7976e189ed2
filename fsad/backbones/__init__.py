"""Backbones: open_clip loading, preprocessing, window masks, batched window embeddings, layer taps, mid-block states
and V-V attention for CLIP; timm networks (CNN feature maps, ViT patch tokens: :mod:`fsad.backbones.timm_models`) for
the methods that need no text, their weights resolved the same way (:mod:`fsad.backbones.loading`); and the lazily
built backbone of a score or fit job (:mod:`~fsad.backbones.session`).

The project's own open_clip model configs (for tests and CPU smoke runs: ``fsad-tiny``, a 2-block ViT at
112 px with a 7x7 patch grid, and ``fsad-tiny-l14``, a 4-block ViT with ViT-L-14-336's patch size and native
size) are registered by :mod:`fsad.backbones.loading`. This package itself imports nothing, so jobs that only
read cached features never pay for importing open_clip or timm (seconds).
"""
