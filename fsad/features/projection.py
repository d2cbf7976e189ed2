"""Cached patch tokens into CLIP's joint image-text space, for methods that compare them with text embeddings."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def project_tokens(tokens: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """``(..., W)`` tokens after ``ln_post`` times ``visual.proj`` ``(W, D)``: ``(..., D)`` L2-normalised joint-space
    embeddings, float32, on the projection's device."""
    return F.normalize(tokens.to(projection.device).float() @ projection.float(), dim=-1)
