"""anomalib's ``PatchcoreModel`` on the weights of a given timm backbone, for cross-checks and benchmarks.

anomalib (an optional test dependency) builds its own timm feature extractor (``features_only`` up to the last stage
asked for); here it is built without pretrained weights and given this project's network's, so both sides see the
same numbers. The memory bank is filled from the references without anomalib's coreset (its ``KCenterGreedy`` draws
a random start and a random projection even at ratio 1), which is what this project's ``coreset_ratio: 1`` does.
"""

from __future__ import annotations

import torch


def anomalib_patchcore(backbone, reference_pixels: torch.Tensor, layers: tuple[int, ...] = (2, 3), neighbours: int = 9) -> torch.nn.Module:
    """anomalib's ``PatchcoreModel`` of ``backbone``'s architecture and weights, its bank filled from ``reference_pixels``.

    Args:
        backbone: a :class:`fsad.backbones.timm_models.TimmBackbone` of a CNN.
        reference_pixels: ``(K, 3, S, S)`` preprocessed normal references.
        layers: the stages (timm ``feature_info`` indices), as this project's ``layers``.

    Returns:
        the model in eval mode; ``model(pixels)`` gives ``InferenceBatch(pred_score (N,), anomaly_map (N, 1, S, S))``.
    """
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    names = [backbone.model.feature_info[n]["module"] for n in layers]
    model = PatchcoreModel(layers=names, backbone=backbone.spec["arch"], pre_trained=False, num_neighbors=neighbours)
    extractor = model.feature_extractor.feature_extractor
    missing, _ = extractor.load_state_dict(backbone.model.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"anomalib's feature extractor has weights the backbone lacks: {missing[:5]}")
    model = model.to(backbone.device).train()
    with torch.no_grad():
        model(reference_pixels.to(backbone.device))
    model.memory_bank = torch.vstack(model.embedding_store)
    model.embedding_store.clear()
    return model.eval()
