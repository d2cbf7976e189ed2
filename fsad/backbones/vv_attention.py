"""V-V attention, AnomalyCLIP's DPAM, on open_clip's own blocks (pure torch, the model is not modified).

Source: zqhang/AnomalyCLIP ``AnomalyCLIP_lib/AnomalyCLIP.py`` (``Attention``, ``ResidualAttentionBlock``,
``VisionTransformer.DAPM_replace``) with ``DPAM_layer=20`` as ``train.py``/``test.py`` call it, and
``ffn=False``, the default of ``encode_image``. What that code does, and this module reproduces:

* Where the V-V path starts: ``DAPM_replace`` swaps the attention of ``resblocks[-1] ... resblocks[-19]``,
  so the last 19 blocks (6 to 24 of ViT-L-14) carry a second, V-V path beside the original one. A model
  with 19 blocks or fewer carries it in every block (AnomalyCLIP's code would fail there).
* The V-V attention of a block reads ``ln_1`` of the *original* path's input to that block, projects it
  with the block's value projection only (``in_proj`` rows ``2W:3W`` and their bias) and uses that as
  query, key and value, with the block's heads and scale ``head_dim ** -0.5``, then the block's
  ``out_proj`` (weight and bias).
* The V-V path's residual stream starts as the original path's input to its first block and adds each
  block's V-V attention output; it has no MLP.
* The original path is the unchanged block, so ordinary layer taps and the image embedding are the
  same with or without the V-V path (AnomalyCLIP's image feature comes from it too).

One choice of ours: the V-V attention output goes through the block's ``ls_1`` (the LayerScale open_clip
puts on the block's own attention output); it is the identity in every CLIP config, AnomalyCLIP's included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# AnomalyCLIP's DPAM_layer=20: DAPM_replace loops over range(1, 20), i.e. the last 19 blocks.
VV_BLOCKS = 19


def vv_start_block(depth: int) -> int:
    """1-based index of the first block of a ``depth``-block transformer that carries the V-V path (6 of 24)."""
    return max(1, depth - VV_BLOCKS + 1)


def _attention_module(block: nn.Module) -> nn.MultiheadAttention:
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None or not attn.batch_first:
        raise RuntimeError(
            "V-V attention needs open_clip's ResidualAttentionBlock (a batch-first nn.MultiheadAttention with a packed in_proj)"
        )
    return attn


def vv_attention(block: nn.Module, normed: torch.Tensor) -> torch.Tensor:
    """V-V self-attention of one open_clip block.

    Args:
        block: an open_clip ``ResidualAttentionBlock``; its weights are read, never changed.
        normed: ``(B, L, W)`` the block's ``ln_1`` applied to the original path's input.

    Returns:
        ``(B, L, W)`` the attention output after ``out_proj`` (before any residual).
    """
    attn = _attention_module(block)
    width, heads = attn.embed_dim, attn.num_heads
    bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    values = F.linear(normed, attn.in_proj_weight[2 * width :], bias)
    batch, length, _ = values.shape
    values = values.reshape(batch, length, heads, width // heads).transpose(1, 2)  # (B, H, L, W / H)
    mixed = F.scaled_dot_product_attention(values, values, values)  # scale defaults to head_dim ** -0.5
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, width))
