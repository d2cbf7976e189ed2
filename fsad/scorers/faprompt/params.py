"""From an instance's parameters (``schema.yaml``, defaults filled in) to the torch-side configs, and what the
fit and score steps share: the text tower of the backbone and the projected token levels of cached features."""

from __future__ import annotations

from typing import Any

import torch

from fsad.features.projection import project_tokens
from fsad.features.types import FeatureBatch
from fsad.scorers.faprompt.losses import LossConfig
from fsad.scorers.faprompt.prompt_learner import PromptConfig, PromptLearner, TextTower
from fsad.scorers.faprompt.torch_model import ScoreConfig

Params = dict[str, Any]


def prompt_config(params: Params) -> PromptConfig:
    return PromptConfig(
        compound=params["cap"],
        normal_tokens=params["normal_tokens"],
        abnormal_tokens=params["abnormal_tokens"],
        abnormal_prompts=params["abnormal_prompts"],
        normal_words=params["normal_words"],
        abnormal_words=params["abnormal_words"],
        deep_depth=params["deep_prompt_depth"],
        deep_tokens=params["deep_prompt_tokens"],
        prior=params["dap"],
        prior_patches=params["dap_patches"],
        prior_reduction=params["dap_reduction"],
    )


def score_config(params: Params) -> ScoreConfig:
    return ScoreConfig(temperature=params["temperature"], prior_selection=params["dap_selection"], image_score=params["image_score"])


def loss_config(params: Params) -> LossConfig:
    return LossConfig(
        static_map=params["static_map_weight"],
        prior_map=params["prior_map_weight"],
        image_ce=params["image_ce_weight"],
        image_focal=params["image_focal_weight"],
        image_focal_input=params["image_focal_input"],
        orthogonal=params["orthogonal_weight"],
        prior=params["prior_weight"],
        prior_reduction=params["prior_reduction"],
        gamma=params["focal_gamma"],
    )


def build_learner(params: Params, backbone: Any, seed: int | None = None) -> PromptLearner:
    """The prompt learner of ``params`` on ``backbone`` (frozen), on its device; initial values seeded by ``seed``."""
    backbone.model.requires_grad_(False)
    tower = TextTower(backbone.model, backbone.tokenizer)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        learner = PromptLearner(prompt_config(params), tower)
    return learner.to(backbone.device)


def token_levels(features: FeatureBatch, levels: list[int], projection: torch.Tensor) -> list[torch.Tensor]:
    """Per V-V level ``(N, P, D)``: the cached tokens projected into the joint space (:func:`project_tokens`)."""
    features.require(vv_layers=levels)
    return [project_tokens(features.vv_layers[level], projection) for level in levels]
