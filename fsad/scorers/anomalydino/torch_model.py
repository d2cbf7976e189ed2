"""AnomalyDINO (Damm et al., WACV 2025) as pure tensor maths: DINOv2 patch tokens against a memory of references' tokens.

Shapes: ``N`` test images, ``P = G * G`` patch tokens of width ``C`` each, ``M`` memory tokens.

- Patch score: cosine distance ``1 - cos`` to the nearest memory token (the code's faiss search on L2-normalised
  tokens, squared distance / 2).
- Image score: the mean of the ``max(int(P * fraction), 1)`` highest patch scores (``fraction`` 1 %: the paper's tail
  value at risk, the code's ``mean_top1p``).
- Background masking (optional, per category): the first principal component of the test image's own tokens
  above ``threshold`` (10) is foreground; when 35 % or less of the centre crop (20 % border off each side) is, the
  sign flips; the mask is then dilated and closed with a 3x3 square (OpenCV's borders: the outside neither grows nor
  erodes it). Masked-out patches score 0 and count in the image score's ``P``, as in the code.
- Map: patch scores upsampled bilinearly, then a Gaussian (the code's ``scipy.ndimage.gaussian_filter``, sigma 4).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from fsad.maps import gaussian_blur, upsample
from fsad.scorers.nearest import nearest

# The code's reference rotations (src/utils.py augment_image): 0, 45, ..., 315 degrees; 0 is the reference itself.
ROTATIONS = (45, 90, 135, 180, 225, 270, 315)
MASK_BORDER = 0.2
MASK_CENTRE_SHARE = 0.35


def memory_bank(tokens: torch.Tensor) -> torch.Tensor:
    """``(K, P, C)`` (or ``(M, C)``) reference tokens -> ``(K * P, C)`` L2-normalised memory."""
    return F.normalize(tokens.reshape(-1, tokens.shape[-1]).float(), dim=-1)


def patch_distances(tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """``(N, P, C)`` test tokens, ``(M, C)`` normalised memory -> ``(N, P)`` cosine distance to the nearest memory token."""
    n, p, c = tokens.shape
    distance, _ = nearest(F.normalize(tokens.reshape(n * p, c).float(), dim=-1), memory, k=1, metric="cosine")
    return distance.reshape(n, p)


def top_fraction_mean(scores: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """``(N, P)`` -> ``(N,)``: the mean of each row's ``max(int(P * fraction), 1)`` largest values."""
    count = max(int(scores.shape[1] * fraction), 1)
    return scores.topk(count, dim=1).values.mean(dim=1)


def first_component(tokens: torch.Tensor) -> torch.Tensor:
    """``(P, C)`` -> ``(P,)`` scores on the first principal component of the tokens (centred), with scikit-learn's sign
    convention (the component's largest loading is positive), computed exactly (the code: randomized PCA)."""
    centred = tokens.double() - tokens.double().mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    component = vh[0]
    component = component * torch.sign(component[component.abs().argmax()])
    return (centred @ component).float()


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of ``(N, G, G)`` bool masks; the outside counts as background."""
    return F.max_pool2d(mask.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1) > 0


def _erode(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary erosion of ``(N, G, G)`` bool masks; the outside counts as foreground (it erodes nothing)."""
    return ~_dilate(~mask)


def foreground_masks(tokens: torch.Tensor, grid: int, threshold: float = 10.0) -> torch.Tensor:
    """``(N, P, C)`` tokens of ``N`` images -> ``(N, P)`` bool foreground masks (see the module docstring)."""
    low, high = int(grid * MASK_BORDER), int(grid * (1 - MASK_BORDER))
    masks = []
    for image_tokens in tokens:
        component = first_component(image_tokens).reshape(grid, grid)
        mask = component > threshold
        centre = mask[low:high, low:high]
        if centre.sum() <= centre.numel() * MASK_CENTRE_SHARE:
            mask = -component > threshold
        masks.append(mask)
    dilated = _dilate(torch.stack(masks))
    return _erode(_dilate(dilated)).reshape(len(tokens), -1)


def anomaly_maps(scores: torch.Tensor, grid: int, size: int, sigma: float = 4.0) -> torch.Tensor:
    """``(N, P)`` patch scores -> ``(N, size, size)``: bilinear upsampling, then the Gaussian (scipy's borders)."""
    return gaussian_blur(upsample(scores.reshape(-1, grid, grid), size, mode="bilinear"), sigma, border="symmetric")
