"""anomalib's ``WinClipModel`` built around a given open_clip model, for cross-checks and benchmarks.

anomalib (an optional test dependency) loads ``ViT-B-16-plus-240`` with ``laion400m_e31`` weights
itself; here it gets a copy of the model this project loaded instead, so both sides see the same
weights.

One adaptation, needed for anomalib's numbers to be WinCLIP's under open_clip >= 3: anomalib's
``_get_window_embeddings`` was written for open_clip < 2.26.1 (its pin), whose vision transformer took
``(L, N, D)`` tokens. It still permutes the window tokens to ``(L, N, D)`` before calling the
transformer, which in open_clip 3 is batch-first, so attention would run across windows at each
token position instead of over the tokens of one window. :func:`anomalib_winclip` restores the layout
the code assumes (the transformer's ``batch_first`` flag is turned off for that call only);
``fix_window_layout=False`` gives anomalib as installed.
"""

from __future__ import annotations

import copy
from unittest import mock

import torch


def anomalib_winclip(
    clip_model: torch.nn.Module,
    class_name: str,
    reference_images: torch.Tensor | None = None,
    fix_window_layout: bool = True,
) -> torch.nn.Module:
    """anomalib's ``WinClipModel`` (scales 2 and 3) on a deep copy of ``clip_model``.

    Args:
        clip_model: an open_clip ``CLIP`` model (e.g. ``Backbone.model``); it is copied because anomalib
            sets ``visual.output_tokens`` on the model it holds.
        class_name: the name anomalib puts into its prompts.
        reference_images: ``(K, 3, H, W)`` preprocessed normal references for WinCLIP+, or None.
        fix_window_layout: see the module docstring.

    Returns:
        the model in eval mode; ``model(pixels)`` gives ``InferenceBatch(pred_score (N,), anomaly_map (N, H, W))``.
    """
    from anomalib.models.image.winclip import torch_model

    class LayoutFixedWinClipModel(torch_model.WinClipModel):
        def _get_window_embeddings(self, feature_map: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
            transformer = self.clip.visual.transformer
            if not getattr(transformer, "batch_first", False):
                return super()._get_window_embeddings(feature_map, masks)
            transformer.batch_first = False
            try:
                return super()._get_window_embeddings(feature_map, masks)
            finally:
                transformer.batch_first = True

    model_class = LayoutFixedWinClipModel if fix_window_layout else torch_model.WinClipModel
    clip_copy = copy.deepcopy(clip_model).eval()
    device = next(clip_copy.parameters()).device
    with mock.patch.object(torch_model.open_clip, "create_model_and_transforms", return_value=(clip_copy, None, None)):
        model = model_class(class_name=class_name)
    model = model.to(device).eval()
    if reference_images is not None:
        model.setup(reference_images=reference_images.to(device))
    return model
