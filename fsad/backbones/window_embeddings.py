"""WinCLIP image, patch and window embeddings, plus layer and V-V taps, batched over images and windows (pure torch).

A window embedding is the CLIP embedding of the class token plus the patch tokens of one window,
run through the vision transformer on their own (attention only within the window). As in
anomalib's ``WinClipModel``, the tokens are taken after the positional embedding, so every window
sees the same token values the full image does.

Two exact shortcuts make it cheaper than the textbook computation:

* the tokens of all windows of all images are gathered with one index op and sent through the
  transformer in large chunks (no Python loop per window, patch or image);
* in the last transformer block only the class token is computed: the pooled output reads the class
  token alone, and LayerNorm, the MLP and attention queries act per token, so the other rows of the
  last block can be skipped without changing the result.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from fsad.backbones.loading import Backbone
from fsad.backbones.taps import check_block_indices, run_blocks
from fsad.backbones.windows import window_patch_indices
from fsad.features.types import FeatureBatch

# Window sequences per transformer call: large batches feed a GPU; on CPU smaller ones stay in cache
# (256 measured ~7% faster than 4096 for ViT-B-16-plus-240 on 2 cores).
WINDOWS_PER_CHUNK = {"cpu": 256, "cuda": 4096}


def _visual(backbone: Backbone) -> nn.Module:
    visual = backbone.model.visual
    for name in ("_embeds", "transformer", "ln_post", "_global_pool"):
        if not hasattr(visual, name):
            raise RuntimeError(f"open_clip's VisionTransformer has no {name!r}; fsad needs open_clip_torch >= 2.26")
    if visual.training:
        raise RuntimeError("window embeddings need the backbone in eval mode (patch dropout must be off)")
    if not visual.transformer.batch_first:
        raise RuntimeError("fsad expects open_clip's batch-first vision transformer (open_clip_torch >= 2.26)")
    return visual


def _class_token_only(visual: nn.Module) -> bool:
    """Whether the pooled embedding reads the class token alone (so the last block may compute only it)."""
    last = visual.transformer.resblocks[-1]
    plain_block = all(hasattr(last, name) for name in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"))
    return plain_block and visual.attn_pool is None and visual.pool_type == "tok" and not visual.final_ln_after_pool


def token_embeddings(backbone: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + P, W)`` class + patch tokens after positional embedding and ``ln_pre`` (the transformer's input)."""
    return _visual(backbone)._embeds(pixels)


def _last_block_class_token(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The class-token row of ``block(x)``: ``(B, 1, W)`` from ``(B, L, W)``."""
    normed = block.ln_1(x)
    attended = block.attn(normed[:, :1], normed, normed, need_weights=False)[0]
    cls = x[:, :1] + block.ls_1(attended)
    return cls + block.ls_2(block.mlp(block.ln_2(cls)))


def pooled_embeddings(backbone: Backbone, tokens: torch.Tensor) -> torch.Tensor:
    """Projected pooled embeddings ``(B, D)`` of token sequences ``(B, L, W)`` that already went through ``ln_pre``."""
    visual = _visual(backbone)
    blocks = visual.transformer.resblocks
    if _class_token_only(visual):
        for block in blocks[:-1]:
            tokens = block(tokens)
        tokens = _last_block_class_token(blocks[-1], tokens)
    else:
        tokens = visual.transformer(tokens)
    pooled, _ = visual._global_pool(visual.ln_post(tokens))
    return pooled @ visual.proj if visual.proj is not None else pooled


def window_embeddings(backbone: Backbone, tokens: torch.Tensor, window_sizes: list[int]) -> dict[int, torch.Tensor]:
    """Window embeddings of every window of every image.

    Args:
        tokens: ``(B, 1 + P, W)`` from :func:`token_embeddings`.
        window_sizes: window sides in patches.

    Returns:
        window side ``k`` -> ``(B, n_k, D)`` projected (not normalised) embeddings, windows in
        :func:`fsad.backbones.windows.window_patch_indices` order.
    """
    batch = tokens.shape[0]
    grid = backbone.grid
    out: dict[int, torch.Tensor] = {}
    for k in window_sizes:
        patches = window_patch_indices(grid, k).to(tokens.device) + 1  # +1 skips the class token
        index = torch.cat([torch.zeros(len(patches), 1, dtype=torch.long, device=tokens.device), patches], dim=1)
        sequences = tokens[:, index].flatten(0, 1)  # (B * n_k, 1 + k*k, W)
        chunk = WINDOWS_PER_CHUNK.get(tokens.device.type, 4096)
        pooled = [pooled_embeddings(backbone, part) for part in sequences.split(chunk)]
        out[k] = torch.cat(pooled).reshape(batch, len(patches), -1)
    return out


# A backbone's ``image_embedding`` (absent: ln_post): whether the image embedding goes through ``ln_post`` before ``proj``.
IMAGE_EMBEDDINGS = ("ln_post", "no_ln_post")


def image_embeddings(backbone: Backbone, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image outputs from the last block's output ``(B, 1 + P, W)``.

    The backbone's ``image_embedding`` decides the first: ``ln_post`` (open_clip's ``encode_image``) pools
    ``ln_post(last)``; ``no_ln_post`` pools ``last`` itself (AnomalyCLIP's and FAPrompt's global feature,
    ``x_ori[0] @ proj``). The patch tokens are the same either way.

    Returns:
        ``(B, D)`` projected class embeddings and ``(B, P, W)`` final patch tokens after ``ln_post``
        (not projected), what open_clip returns with ``output_tokens=True``.
    """
    visual = _visual(backbone)
    how = backbone.spec.get("image_embedding") or "ln_post"
    if how not in IMAGE_EMBEDDINGS:
        raise ValueError(f"image_embedding {how!r} is not one of {list(IMAGE_EMBEDDINGS)}; fix `image_embedding:` of the backbone in the config")
    pooled, patch_tokens = visual._global_pool(visual.ln_post(last))
    if how == "no_ln_post":
        pooled, _ = visual._global_pool(last)
    return (pooled @ visual.proj if visual.proj is not None else pooled), patch_tokens


def layer_patch_tokens(backbone: Backbone, states: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Block index -> ``(B, P, W)`` patch tokens after ``ln_post``, not projected, from ``(B, 1 + P, W)`` block states.

    ``ln_post`` is applied because every reader of intermediate tokens does so (AnomalyCLIP and FAPrompt
    take ``ln_post(tokens) @ proj``, open_clip's ``forward_intermediates`` has ``normalize_intermediates``),
    so the cache holds the same kind of token as ``patch_tokens``; the projection is left to the reader
    (``@ backbone.model.visual.proj``), which keeps the width ``W`` that visual-memory scorers compare in.
    """
    visual = _visual(backbone)
    return {n: visual.ln_post(state[:, 1:]) for n, state in states.items()}


@torch.inference_mode()
def encode_images(
    backbone: Backbone,
    pixels: torch.Tensor,
    window_sizes: list[int],
    with_image: bool = True,
    layers: Collection[int] = (),
    vv_layers: Collection[int] = (),
    mid_layers: Collection[int] = (),
) -> FeatureBatch:
    """Features of a batch of preprocessed images ``(B, 3, S, S)``, from one pass through the transformer.

    Args:
        with_image: also compute the image embedding and the final patch tokens; False computes only what
            is asked besides (adding window sizes or layers to cached images), and stops after the last
            block asked for.
        layers: 1-based blocks whose patch tokens to keep (:func:`layer_patch_tokens`).
        vv_layers: 1-based blocks whose V-V path patch tokens to keep (:mod:`fsad.backbones.vv_attention`),
            after ``ln_post`` like ``layers``.
        mid_layers: 1-based blocks whose patch tokens inside the block (after attention, before the MLP) to
            keep raw: no ``ln_post``, as PromptAD's visual memory compares them.

    Returns:
        a :class:`FeatureBatch` (``image_ids`` empty; empty image tensors when ``with_image`` is False), float32.
    """
    check_block_indices(backbone.depth, layers, vv_layers, mid_layers)
    pixels = pixels.to(backbone.device)
    dtype = backbone.autocast_dtype
    with torch.autocast(backbone.device.type, dtype=dtype, enabled=dtype is not None):
        tokens = token_embeddings(backbone, pixels)
        windows = window_embeddings(backbone, tokens, window_sizes)
        image = patches = tokens.new_zeros((0,))
        taps, vv_taps, mid_taps = {}, {}, {}
        if with_image or layers or vv_layers or mid_layers:
            blocks = backbone.model.visual.transformer.resblocks
            states = run_blocks(blocks, tokens, layers, vv_layers, stop_early=not with_image, mid_layers=mid_layers)
            taps, vv_taps = layer_patch_tokens(backbone, states.layers), layer_patch_tokens(backbone, states.vv_layers)
            mid_taps = {n: state[:, 1:] for n, state in states.mid_layers.items()}
            if with_image:
                image, patches = image_embeddings(backbone, states.last)
    return FeatureBatch(
        image_ids=[],
        image_embeddings=image.float(),
        patch_tokens=patches.float(),
        windows={k: v.float() for k, v in windows.items()},
        grid=backbone.grid,
        layers={n: v.float() for n, v in taps.items()},
        vv_layers={n: v.float() for n, v in vv_taps.items()},
        mid_layers={n: v.float() for n, v in mid_taps.items()},
    )
