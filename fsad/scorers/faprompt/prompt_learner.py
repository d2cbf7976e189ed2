"""Learned prompts of FAPrompt (CAP, DAP) and AnomalyCLIP, and their templates on the frozen open_clip text tower.

Pure torch; the open_clip ``CLIP`` model is read, never changed (its forward: :mod:`fsad.text.learned_prompts`).
Sources: the FAPrompt paper (Sec. 3.3-3.4), mala-lab/FAPrompt ``FAPrompt.py`` and zqhang/AnomalyCLIP
``prompt_ensemble.py`` / ``AnomalyCLIP_lib/AnomalyCLIP.py`` (``ResidualAttentionBlock_learnable_token``,
``encode_text_learn``).

Prompts, as token sequences (``[N]`` learnable normal tokens, ``[A]`` learnable abnormal tokens):

* CAP (``compound=True``): normal ``SOS [N]x5 object . EOS``; K = 10 abnormal prompts
  ``SOS [N]x5 [A_k]x2 damaged object . EOS`` whose ``[N]`` are the normal prompt's own (shared) tokens.
* AnomalyCLIP (``compound=False``): ``SOS [N]x12 object . EOS`` and one ``SOS [A]x12 damaged object . EOS``
  with tokens of its own.

Deep text prompts (AnomalyCLIP's ``compound_prompts_text``): blocks 2 .. ``depth`` of the text transformer
replace the 4 tokens after SOS of their input with learned tokens of their own (``depth - 1`` tensors,
``depth`` capped by the number of text blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fsad.text.learned_prompts import (
    PLACEHOLDER,
    check_text_tower,
    encode_token_embeddings,
    frozen_token_embeddings,
    learned_tensor,
    pooled_positions,
    tokenize_with_placeholders,
)


@dataclass(frozen=True)
class PromptConfig:
    """The prompt design: CAP on or off, token counts, deep prompts and DAP."""

    compound: bool = True
    normal_tokens: int = 5
    abnormal_tokens: int = 2
    abnormal_prompts: int = 10
    normal_words: str = "object."
    abnormal_words: str = "damaged object."
    deep_depth: int = 9
    deep_tokens: int = 4
    prior: bool = True
    prior_patches: int = 10
    prior_reduction: int = 16

    @property
    def n_abnormal(self) -> int:
        """K: abnormal prompts (one without CAP)."""
        return self.abnormal_prompts if self.compound else 1

    @property
    def abnormal_own_tokens(self) -> int:
        """Learnable tokens of each abnormal prompt that are its own (the normal count without CAP)."""
        return self.abnormal_tokens if self.compound else self.normal_tokens

    @property
    def shared_tokens(self) -> int:
        """Normal tokens an abnormal prompt starts with (CAP), 0 without CAP."""
        return self.normal_tokens if self.compound else 0


class TextTower:
    """An open_clip CLIP text tower (frozen) with its tokenizer: FAPrompt's templates and their text forward."""

    def __init__(self, model: nn.Module, tokenizer) -> None:
        check_text_tower(model)
        self.model = model
        self.tokenizer = tokenizer

    @property
    def width(self) -> int:
        """W: width of the token embeddings."""
        return self.model.token_embedding.embedding_dim

    @property
    def embed_dim(self) -> int:
        """D: width of the projected text (and image) embeddings."""
        projection = self.model.text_projection
        return projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]

    @property
    def depth(self) -> int:
        """Number of text transformer blocks."""
        return len(self.model.transformer.resblocks)

    def template(self, placeholders: int, words: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(L,)`` and frozen embeddings ``(L, W)`` of ``SOS X x placeholders words EOS``."""
        text = " ".join([PLACEHOLDER] * placeholders + [words])
        tokens = tokenize_with_placeholders(self.tokenizer, [text], [(PLACEHOLDER, 1, placeholders)])[0]
        return tokens.to(self.model.token_embedding.weight.device), frozen_token_embeddings(self.model.token_embedding, tokens)

    def encode(self, embeddings: torch.Tensor, eot: torch.Tensor, deep_prompts: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, D)`` text embeddings of ``(N, L, W)`` token embeddings pooled at ``eot`` ``(N,)``, with deep prompts
        (:func:`~fsad.text.learned_prompts.encode_token_embeddings`)."""
        return encode_token_embeddings(self.model, embeddings, eot, deep_prompts)


class PromptLearner(nn.Module):
    """Learned normal/abnormal tokens, deep text prompts and (DAP) the abnormality prior network.

    Parameters (the fit's tensors): ``normal_context`` ``(n_N, W)``; ``abnormal_context`` ``(K, n_A, W)``;
    ``deep_prompts`` ``(min(depth, blocks) - 1, t, W)`` when there is a block to put them in; with DAP
    ``prior_net`` = Linear(k*D -> k*D // reduction), ReLU, Linear(-> W) (FAPrompt's ``patch_meta_net``,
    7680 -> 480 -> 768 on ViT-L-14). Construct under a seeded RNG for reproducible initial values.
    """

    def __init__(self, config: PromptConfig, tower: TextTower) -> None:
        super().__init__()
        self.config = config
        self.tower = tower
        width = tower.width
        self.normal_context = learned_tensor(config.normal_tokens, width)
        self.abnormal_context = learned_tensor(config.n_abnormal, config.abnormal_own_tokens, width)
        n_deep = min(config.deep_depth, tower.depth) - 1
        self.deep_prompts = learned_tensor(n_deep, config.deep_tokens, width) if n_deep > 0 and config.deep_tokens > 0 else None
        self.prior_net = None
        if config.prior:
            features = config.prior_patches * tower.embed_dim
            hidden = max(1, features // config.prior_reduction)
            self.prior_net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, width))
        normal_ids, normal_embeddings = tower.template(config.normal_tokens, config.normal_words)
        abnormal_ids, abnormal_embeddings = tower.template(config.shared_tokens + config.abnormal_own_tokens, config.abnormal_words)
        # Frozen word embeddings of the templates: rebuilt from the backbone, never saved with the fit.
        self.register_buffer("normal_template", normal_embeddings, persistent=False)
        self.register_buffer("abnormal_template", abnormal_embeddings, persistent=False)
        self.register_buffer("normal_eot", pooled_positions(tower.model, normal_ids[None]), persistent=False)
        self.register_buffer("abnormal_eot", pooled_positions(tower.model, abnormal_ids[None]), persistent=False)

    def normal_prompt(self) -> torch.Tensor:
        """``(1, L_N, W)``: SOS, the normal tokens, the normal words' embeddings."""
        template = self.normal_template
        n = self.config.normal_tokens
        return torch.cat([template[:1], self.normal_context, template[1 + n :]])[None]

    def abnormal_prompts(self, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(K, L_A, W)``, or ``(B, K, L_A, W)`` with a per-image ``bias`` ``(B, W)`` added to every abnormal token."""
        config, template = self.config, self.abnormal_template
        own = self.abnormal_context if bias is None else self.abnormal_context + bias[:, None, None, :]
        lead = own.shape[:-2]
        parts = [template[:1].expand(*lead, 1, -1)]
        if config.shared_tokens:
            parts.append(self.normal_context.expand(*lead, -1, -1))
        parts += [own, template[1 + config.shared_tokens + config.abnormal_own_tokens :].expand(*lead, -1, -1)]
        return torch.cat(parts, dim=-2)

    def encode_normal(self) -> torch.Tensor:
        """``(D,)`` the normal prompt's text embedding."""
        return self.tower.encode(self.normal_prompt(), self.normal_eot, self.deep_prompts)[0]

    def encode_abnormal(self, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(K, D)`` the abnormal prompts' text embeddings, or ``(B, K, D)`` with a per-image ``bias`` ``(B, W)``."""
        prompts = self.abnormal_prompts(bias)
        flat = prompts.reshape(-1, *prompts.shape[-2:])
        encoded = self.tower.encode(flat, self.abnormal_eot.expand(len(flat)), self.deep_prompts)
        return encoded.reshape(*prompts.shape[:-2], -1)

    def prior(self, patches: torch.Tensor) -> torch.Tensor:
        """DAP's sample-wise abnormality prior: ``(B, k, D)`` selected patch tokens -> ``(B, W)`` bias."""
        if self.prior_net is None:
            raise RuntimeError("this prompt learner has no abnormality prior network (DAP is off)")
        return self.prior_net(patches.flatten(1))
