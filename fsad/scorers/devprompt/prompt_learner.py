"""Learnable context prompts (PromptAD's ``PromptLearner``); their text forward is :mod:`fsad.text.learned_prompts`.

Shapes: ``n_prompts`` sets of ``n_ctx`` normal context vectors of width ``W`` (the text transformer's width),
``n_learned_abnormal`` sets of ``n_abnormal_ctx`` abnormal context vectors, prompts of ``L`` tokens, ``D`` the
joint embedding width. Normal, handcrafted-abnormal and learned-abnormal prompts all start with the same
normal context (shared context, DevPrompt Eq. 2); learned-abnormal prompts append their own abnormal context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fsad.text.learned_prompts import frozen_token_embeddings, learned_tensor


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
        self.normal_ctx = learned_tensor(n_prompts, n_ctx, width, generator=generator)
        self.abnormal_ctx = learned_tensor(n_learned_abnormal, n_abnormal_ctx, width, generator=generator)
        for name, tokens in (("normal", normal_tokens), ("handcrafted", handcrafted_tokens), ("learned", learned_tokens)):
            self.register_buffer(f"{name}_tokens", tokens.clone(), persistent=False)
            self.register_buffer(f"{name}_embedding", frozen_token_embeddings(token_embedding, tokens), persistent=False)

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
