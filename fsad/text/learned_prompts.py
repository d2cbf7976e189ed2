"""Learned prompts through a frozen open_clip text tower: placeholder words, learned token tensors, and the text
forward from token embeddings with optional deep prompts (FAPrompt / AnomalyCLIP and DevPrompt / PromptAD).

A prompt is written with placeholder words where learned tokens go, so the tokenizer reserves their positions; the
learner swaps its tensors in after the (frozen) token embedding and runs the rest of the tower on the result.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# A word that is one BPE token of CLIP's tokenizer: it holds the place of a learned token.
PLACEHOLDER = "X"
# PromptAD, AnomalyCLIP and FAPrompt all initialise every learned token from N(0, 0.02^2).
INIT_STD = 0.02
TEXT_TOWER_PARTS = ("token_embedding", "positional_embedding", "transformer", "attn_mask", "ln_final", "text_projection")


def learned_tensor(*shape: int, generator: torch.Generator | None = None) -> nn.Parameter:
    """A learned tensor of ``shape`` drawn from N(0, INIT_STD^2) (torch's global RNG when ``generator`` is None)."""
    return nn.Parameter(torch.empty(*shape).normal_(0.0, INIT_STD, generator=generator))


def tokenize_with_placeholders(
    tokenizer: Callable[[list[str]], torch.Tensor], prompts: list[str], places: list[tuple[str, int, int]]
) -> torch.Tensor:
    """``(len(prompts), L)`` token ids, checked to hold, for each ``(placeholder, start, count)`` of ``places``,
    ``count`` copies of the placeholder's token from position ``start`` (where the learner puts its tensors)."""
    tokens = tokenizer(prompts)
    for placeholder, start, count in places:
        expected = tokenizer([placeholder])[0, 1]
        if not bool((tokens[:, start : start + count] == expected).all()):
            where = f"positions {start}..{start + count - 1} of {prompts[0]!r}"
            raise ValueError(f"the tokenizer does not give {placeholder!r} one token per word at {where}")
    return tokens


def frozen_token_embeddings(token_embedding: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """``(..., L, W)`` float32 embeddings of token ids, on the embedding's device, outside the autograd graph."""
    with torch.no_grad():
        return token_embedding(tokens.to(token_embedding.weight.device)).float()


def check_text_tower(model: nn.Module) -> None:
    """Refuse a model whose text tower is not an open_clip ``CLIP`` text transformer (the parts the forward reads)."""
    for name in TEXT_TOWER_PARTS:
        if not hasattr(model, name):
            raise RuntimeError(f"the backbone's text tower has no {name!r}; learned prompts need an open_clip CLIP text transformer")


def pooled_positions(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``(N,)`` the position whose output open_clip's text pooling (``text_pool_type``) reads in ``(N, L)`` token ids."""
    pool_type = getattr(model, "text_pool_type", "argmax")
    if pool_type == "argmax":
        return tokens.argmax(dim=-1)
    if pool_type == "eos":
        return (tokens == model.text_eos_id).int().argmax(dim=-1)
    if pool_type in ("first", "last"):
        return torch.full((len(tokens),), 0 if pool_type == "first" else tokens.shape[1] - 1, device=tokens.device)
    raise RuntimeError(f"learned prompts need a text tower that pools one token; this one pools {pool_type!r}")


def encode_token_embeddings(
    model: nn.Module, embeddings: torch.Tensor, pooled: torch.Tensor, deep_prompts: torch.Tensor | None = None
) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` from token embeddings instead of token ids, with optional deep prompts.

    The model stays frozen; gradients reach ``embeddings`` and ``deep_prompts``. With a causal mask the pooled
    position sees only the tokens before it, so the sequences are cut after the last pooled position (the same
    result for a fraction of the work).

    Args:
        model: an open_clip ``CLIP`` (:func:`check_text_tower`); its text transformer batch-first or not.
        embeddings: ``(N, L, W)`` token embeddings (learned tokens already in place).
        pooled: ``(N,)`` the position each prompt's embedding is read at (:func:`pooled_positions`).
        deep_prompts: ``(n, t, W)``: text block ``i`` (``1 <= i <= n``, 0-based) first replaces positions
            ``1 .. t`` of its input with ``deep_prompts[i - 1]`` (AnomalyCLIP's ``compound_prompts_text``).

    Returns:
        ``(N, D)`` projected, not normalised.
    """
    check_text_tower(model)
    transformer, mask = model.transformer, model.attn_mask
    length = int(pooled.max()) + 1 if mask is not None else embeddings.shape[1]
    if mask is not None:
        mask = mask[:length, :length]
    cast = transformer.get_cast_dtype()
    x = embeddings[:, :length].to(cast) + model.positional_embedding[:length].to(cast)
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    n_deep = 0 if deep_prompts is None else len(deep_prompts)
    for index, block in enumerate(transformer.resblocks):
        if 1 <= index <= n_deep:
            x = _with_deep_prompt(x, deep_prompts[index - 1], seq_dim=1 if batch_first else 0)
        x = block(x, attn_mask=mask)
    if not batch_first:
        x = x.transpose(0, 1)
    x = model.ln_final(x)
    x = x[torch.arange(len(x), device=x.device), pooled]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def encode_shared_prefix(model: nn.Module, embeddings: torch.Tensor, pooled: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """:func:`encode_token_embeddings` for prompts that start alike, with each distinct prefix computed once.

    Under the causal mask the states of a prompt's first ``prefix_length`` positions depend only on those positions,
    so prompts whose first ``prefix_length`` token embeddings are equal (PromptAD's: the start token and one set of
    learned context vectors) share them. The prompts are packed into one sequence: each distinct prefix once, then
    every prompt's own tokens up to its pooled position (no padding); an attention mask lets a token see the earlier
    tokens of its prefix and of its own prompt only. The result equals the padded forward up to float rounding (the
    same sums in another order), gradients included, for a fraction of the token rows: PromptAD's 16 segmentation
    prompts of up to 12 tokens are 74 rows instead of 192.

    Args:
        embeddings: ``(N, L, W)`` token embeddings (learned tokens in place; prompts equal in their first
            ``prefix_length`` rows share them, equality compared exactly).
        pooled: ``(N,)`` the position each prompt's embedding is read at, each at or after ``prefix_length``.
        prefix_length: how many leading positions prompts may share.

    Returns:
        ``(N, D)`` projected, not normalised.
    """
    check_text_tower(model)
    if model.attn_mask is None:  # no causal mask: every position sees the whole prompt, nothing can be shared
        return encode_token_embeddings(model, embeddings, pooled)
    if int(pooled.min()) < prefix_length:
        raise ValueError(f"every pooled position must lie after the shared prefix of {prefix_length} tokens; got {pooled.tolist()}")
    pooled = pooled.tolist()
    prefixes: list[int] = []  # for each distinct prefix, the first prompt that has it
    group_of = []
    for index in range(len(embeddings)):
        head = embeddings[index, :prefix_length].detach()
        group = next((g for g, first in enumerate(prefixes) if torch.equal(embeddings[first, :prefix_length].detach(), head)), None)
        if group is None:
            group = len(prefixes)
            prefixes.append(index)
        group_of.append(group)
    rows, positions, groups, owners, read_at = [], [], [], [], []
    for group, first in enumerate(prefixes):
        rows.append(embeddings[first, :prefix_length])
        positions += range(prefix_length)
        groups += [group] * prefix_length
        owners += [-1] * prefix_length
    start = prefix_length * len(prefixes)
    for index, (group, last) in enumerate(zip(group_of, pooled)):
        rows.append(embeddings[index, prefix_length : last + 1])
        positions += range(prefix_length, last + 1)
        groups += [group] * (last + 1 - prefix_length)
        owners += [index] * (last + 1 - prefix_length)
        start += last + 1 - prefix_length
        read_at.append(start - 1)
    device = embeddings.device
    positions_t, groups_t, owners_t = (torch.tensor(v, device=device) for v in (positions, groups, owners))
    visible = (
        (groups_t[:, None] == groups_t[None])
        & (positions_t[None] <= positions_t[:, None])
        & ((owners_t[None] == -1) | (owners_t[None] == owners_t[:, None]))
    )
    transformer = model.transformer
    cast = transformer.get_cast_dtype()
    mask = torch.zeros(visible.shape, dtype=cast, device=device).masked_fill(~visible, float("-inf"))
    x = (torch.cat(rows).to(cast) + model.positional_embedding[positions_t].to(cast))[None]
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in transformer.resblocks:
        x = block(x, attn_mask=mask)
    if not batch_first:
        x = x.transpose(0, 1)
    x = model.ln_final(x[0, read_at])
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def _with_deep_prompt(x: torch.Tensor, context: torch.Tensor, seq_dim: int) -> torch.Tensor:
    """``x`` with the ``t`` positions after the start token replaced by ``context`` ``(t, W)``, in every sequence."""
    batch, count = x.shape[1 - seq_dim], len(context)
    spread = context.expand(batch, -1, -1) if seq_dim == 1 else context[:, None].expand(-1, batch, -1)
    rest = x.shape[seq_dim] - 1 - count
    return torch.cat([x.narrow(seq_dim, 0, 1), spread, x.narrow(seq_dim, 1 + count, rest)], dim=seq_dim)
