"""Learnable context prompts (PromptAD's ``PromptLearner``) and a text-tower forward that takes token embeddings.

Shapes: ``n_prompts`` sets of ``n_ctx`` normal context vectors of width ``W`` (the text transformer's width),
``n_learned_abnormal`` sets of ``n_abnormal_ctx`` abnormal context vectors, prompts of ``L`` tokens, ``D`` the
joint embedding width. Normal, handcrafted-abnormal and learned-abnormal prompts all start with the same
normal context (shared context, DevPrompt Eq. 2); learned-abnormal prompts append their own abnormal context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# PromptAD initialises every context vector from N(0, 0.02^2) (``nn.init.normal_(..., std=0.02)``).
CTX_INIT_STD = 0.02


@dataclass
class PromptEmbeddings:
    """Token embeddings with the context spliced in, and the token ids the text tower pools by.

    Attributes:
        normal, handcrafted, learned: ``(n, L, W)`` embeddings of each group.
        normal_tokens, handcrafted_tokens, learned_tokens: ``(n, L)`` token ids of each group.
    """

    normal: torch.Tensor
    handcrafted: torch.Tensor
    learned: torch.Tensor
    normal_tokens: torch.Tensor
    handcrafted_tokens: torch.Tensor
    learned_tokens: torch.Tensor


class PromptLearner(nn.Module):
    """PromptAD's prompt learner: the only trained text parameters are the context vectors.

    Args:
        token_embedding: the frozen token embedding of the text tower.
        normal_tokens: ``(S_n * n_prompts, L)`` normal prompts, state-major (``prompts.prompt_texts``).
        handcrafted_tokens: ``(S_a * n_prompts, L)`` handcrafted abnormal prompts, state-major.
        learned_tokens: ``(n_learned_abnormal * n_prompts, L)`` learned abnormal prompts, abnormal-context-major.
        n_ctx, n_prompts, n_abnormal_ctx, n_learned_abnormal: context sizes (PromptAD: 4, 1, 1, 4 for segmentation).
        generator: seeds the initial context vectors.
    """

    def __init__(
        self,
        token_embedding: nn.Embedding,
        normal_tokens: torch.Tensor,
        handcrafted_tokens: torch.Tensor,
        learned_tokens: torch.Tensor,
        n_ctx: int,
        n_prompts: int,
        n_abnormal_ctx: int,
        n_learned_abnormal: int,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        width = token_embedding.weight.shape[1]
        self.n_ctx, self.n_prompts, self.n_abnormal_ctx, self.n_learned_abnormal = n_ctx, n_prompts, n_abnormal_ctx, n_learned_abnormal
        self.normal_ctx = nn.Parameter(torch.randn(n_prompts, n_ctx, width, generator=generator) * CTX_INIT_STD)
        self.abnormal_ctx = nn.Parameter(torch.randn(n_learned_abnormal, n_abnormal_ctx, width, generator=generator) * CTX_INIT_STD)
        with torch.no_grad():
            for name, tokens in (("normal", normal_tokens), ("handcrafted", handcrafted_tokens), ("learned", learned_tokens)):
                self.register_buffer(f"{name}_tokens", tokens.clone(), persistent=False)
                self.register_buffer(f"{name}_embedding", token_embedding(tokens.to(token_embedding.weight.device)).float(), persistent=False)

    def _with_normal_ctx(self, embedding: torch.Tensor, middle: list[torch.Tensor] = ()) -> torch.Tensor:
        """``embedding`` ``(S * n_prompts, L, W)`` with positions ``1..n_ctx`` (and after them ``middle``) replaced."""
        repeats = embedding.shape[0] // self.n_prompts
        ctx = self.normal_ctx.repeat(repeats, 1, 1).to(embedding.dtype)
        start = 1 + self.n_ctx + sum(m.shape[1] for m in middle)
        return torch.cat([embedding[:, :1], ctx, *middle, embedding[:, start:]], dim=1)

    def forward(self) -> PromptEmbeddings:
        # learned prompt i = a * n_prompts + p pairs abnormal context a with normal context p
        abnormal = self.abnormal_ctx.repeat_interleave(self.n_prompts, dim=0).to(self.learned_embedding.dtype)
        return PromptEmbeddings(
            normal=self._with_normal_ctx(self.normal_embedding),
            handcrafted=self._with_normal_ctx(self.handcrafted_embedding),
            learned=self._with_normal_ctx(self.learned_embedding, [abnormal]),
            normal_tokens=self.normal_tokens,
            handcrafted_tokens=self.handcrafted_tokens,
            learned_tokens=self.learned_tokens,
        )


def encode_token_embeddings(model: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` from token embeddings instead of token ids (gradients flow to ``embeddings``).

    With the causal mask of CLIP's text tower, the pooled (end-of-text) position sees only the tokens before
    it, so the sequence is cut after the last pooled position: the same result for a fraction of the work.

    Args:
        model: an open_clip ``CLIP`` (its text tower: ``token_embedding``, ``positional_embedding``,
            ``transformer``, ``attn_mask``, ``ln_final``, ``text_projection``).
        embeddings: ``(N, L, W)`` token embeddings.
        tokens: ``(N, L)`` the token ids the embeddings stand for (they locate the pooled position).

    Returns:
        ``(N, D)`` un-normalised text embeddings.
    """
    from open_clip.transformer import text_global_pool

    for name in ("token_embedding", "positional_embedding", "transformer", "ln_final"):
        if not hasattr(model, name):
            raise RuntimeError(f"the backbone's text tower has no {name!r}; learned prompts need an open_clip CLIP text transformer")
    if not getattr(model.transformer, "batch_first", True):
        raise RuntimeError("learned prompts expect open_clip's batch-first text transformer (open_clip_torch >= 2.26)")
    pool_type = getattr(model, "text_pool_type", "argmax")
    eos_id = getattr(model, "text_eos_id", None)
    mask = model.attn_mask
    length = tokens.shape[1]
    if mask is not None and pool_type in ("argmax", "eos"):
        pooled = tokens.argmax(dim=-1) if pool_type == "argmax" else (tokens == eos_id).int().argmax(dim=-1)
        length = int(pooled.max()) + 1
        mask = mask[:length, :length]
    tokens = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = embeddings[:, :length].to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, pool_type, eos_token_id=eos_id)
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection
