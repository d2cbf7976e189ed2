"""The fit step of ``devprompt``: learn prompts (and scoring parameters) on one run's normal shots.

Params (``schema.yaml``, defaults filled in): the prompt sizes and lists, ``vv_block``, ``logit_scale``, the loss
weights, the synthetic anomalies and the SGD schedule. Saved tensors (``ctx.model`` of the score step):
``text_prototypes`` ``(2, D)``, ``logit_scale``, ``visual_proj`` ``(W, D)`` (a copy of the frozen projection, so
score jobs never build the backbone), the context vectors, and with the deviation loss ``log_scale``, ``bias``,
``reference_mean``, ``reference_std``; with ``memory_blocks`` the galleries ``memory_{n}`` ``(k * P, W)`` per block;
with ``cls_prompts`` PromptAD's image-level model, ``cls_text_prototypes`` ``(2, D)`` and its context vectors
``cls_normal_ctx``, ``cls_abnormal_ctx`` (``train_cls.py``: its own prompts, trained on the shots' CLS embeddings).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from fsad.data.images import read_image
from fsad.features.projection import project_tokens
from fsad.scorers.base import FitContext, FitResult, TrainingCategory
from fsad.scorers.devprompt.anomalies import synthetic_anomalies
from fsad.scorers.devprompt.deviation import reference_statistics
from fsad.scorers.devprompt.prompt_learner import PromptLearner
from fsad.scorers.devprompt.prompt_texts import ABNORMAL_PLACEHOLDER, NORMAL_PLACEHOLDER, abnormal_states, prompt_texts
from fsad.scorers.devprompt.torch_model import memory_gallery, patch_tokens
from fsad.scorers.devprompt.training import TrainingConfig, train_prompts
from fsad.text.learned_prompts import tokenize_with_placeholders

log = logging.getLogger(__name__)


def build_learner(
    backbone, category: TrainingCategory, params: dict, generator: torch.Generator, n_prompts: int | None = None
) -> PromptLearner:
    """The prompt learner of ``category``'s class name with the instance's prompt lists and context sizes
    (``n_prompts`` normal context sets; default the instance's ``n_prompts``)."""
    n_ctx, n_abnormal_ctx = params["n_ctx"], params["n_abnormal_ctx"]
    n_prompts = params["n_prompts"] if n_prompts is None else n_prompts
    texts = prompt_texts(
        category.class_name,
        params["normal_states"],
        abnormal_states(params["abnormal_states"], category.category, params["class_states"]),
        n_ctx, n_prompts, n_abnormal_ctx, params["n_learned_abnormal"],
    )
    normal_places = [(NORMAL_PLACEHOLDER, 1, n_ctx)]
    return PromptLearner(
        backbone.model.token_embedding,
        tokenize_with_placeholders(backbone.tokenizer, texts.normal, normal_places),
        tokenize_with_placeholders(backbone.tokenizer, texts.handcrafted, normal_places),
        tokenize_with_placeholders(backbone.tokenizer, texts.learned, [*normal_places, (ABNORMAL_PLACEHOLDER, 1 + n_ctx, n_abnormal_ctx)]),
        n_ctx, n_prompts, n_abnormal_ctx, params["n_learned_abnormal"],
        generator=generator,
    )


def _anomalous_patches(ctx: FitContext, category: TrainingCategory, grid: int, visual_proj: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``(S, P, D)`` projected patch embeddings of synthetic defects pasted onto the run's normal shots."""
    if ctx.encode_images is None:
        raise RuntimeError("devprompt's deviation loss needs FitContext.encode_images to encode its synthetic anomalies")
    params = ctx.params
    shots = [np.asarray(read_image(category.manifest.loc[image_id, "image_path"])) for image_id in ctx.split.normal_refs]
    defects = synthetic_anomalies(shots, params["synthetic_anomalies"], params["defect_types"], rng, grid, params["min_defect_patches"])
    features = ctx.encode_images([Image.fromarray(defect.image) for defect in defects])
    return project_tokens(patch_tokens(features, params["vv_block"]).clone().to(ctx.device), visual_proj)


def fit(ctx: FitContext) -> FitResult:
    """Train the prompts of one (dataset, category, setting, run) on its normal shots."""
    params = ctx.params
    (category,) = ctx.categories
    if ctx.split is None or not ctx.split.normal_refs:
        raise ValueError("devprompt fits on a run's normal shots; give it a setting with normal_shots >= 1")
    backbone = ctx.backbone()
    model = backbone.model.requires_grad_(False)
    generator = torch.Generator().manual_seed(ctx.seed)
    visual_proj = model.visual.proj.detach().float().to(ctx.device)
    normal = category.features(ctx.split.normal_refs)
    normal.require(vv_layers=[] if params["vv_block"] is None else [params["vv_block"]])
    normal_patches = project_tokens(patch_tokens(normal, params["vv_block"]).clone().to(ctx.device), visual_proj)
    learner = build_learner(backbone, category, params, generator).to(ctx.device)
    logit_scale = float(params["logit_scale"] if params["logit_scale"] is not None else model.logit_scale.detach())

    anomalous_patches = reference = None
    details: dict = {"normal_shots": len(ctx.split.normal_refs), "logit_scale": logit_scale}
    if params["deviation_loss"]:
        started = time.perf_counter()
        anomalous_patches = _anomalous_patches(ctx, category, normal.grid, visual_proj, np.random.default_rng(ctx.seed))
        reference = reference_statistics(params["reference_draws"], generator)
        details |= {"synthetic_anomalies": len(anomalous_patches), "anomaly_seconds": round(time.perf_counter() - started, 3),
                    "reference_mean": float(reference[0]), "reference_std": float(reference[1])}
    config = TrainingConfig(
        epochs=params["epochs"], lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"],
        lr_min=params["lr_min"], alignment_weight=params["alignment_weight"], triplet_margin=params["triplet_margin"],
        promptad_weight=params["promptad_weight"],
        deviation=params["deviation_loss"], lambda_dev=params["lambda_dev"], margin=params["margin"],
        topk_ratio=params["topk_ratio"], deviation_score=params["deviation_score"], deviation_average=params["deviation_average"],
    )
    started = time.perf_counter()
    trained = train_prompts(model, learner, normal_patches, anomalous_patches, logit_scale, config, reference, backbone.autocast_dtype)
    details |= {"training_seconds": round(time.perf_counter() - started, 3), "final_terms": trained.terms,
                "training_deviations": trained.training_deviations}
    log.info("devprompt fit: %d epochs, final loss %.4f, terms %s", config.epochs, trained.losses[-1], trained.terms)

    tensors = {
        "text_prototypes": trained.prototypes,
        "logit_scale": torch.tensor(logit_scale),
        "visual_proj": visual_proj,
        "normal_ctx": learner.normal_ctx.detach(),
        "abnormal_ctx": learner.abnormal_ctx.detach(),
    }
    if params["deviation_loss"]:
        tensors |= {
            "log_scale": trained.log_scale.detach(), "bias": trained.bias.detach(),
            "reference_mean": reference[0], "reference_std": reference[1],
        }
    if params["memory_blocks"]:
        normal.require(mid_layers=params["memory_blocks"])
        tensors |= {f"memory_{n}": memory_gallery(normal.mid_layers[n]).to(ctx.device) for n in params["memory_blocks"]}
    if params["cls_prompts"] is not None:
        # PromptAD's train_cls.py: a second prompt learner (its own n_pro), the same losses on the normalised CLS
        # embeddings, one "patch" per shot; built after the segmentation learner, so that one's numbers do not move
        cls_learner = build_learner(backbone, category, params, generator, params["cls_prompts"]).to(ctx.device)
        cls_embeddings = F.normalize(normal.image_embeddings.float().to(ctx.device), dim=-1).unsqueeze(1)
        started = time.perf_counter()
        cls_trained = train_prompts(model, cls_learner, cls_embeddings, None, logit_scale, config, None, backbone.autocast_dtype)
        details |= {"cls_training_seconds": round(time.perf_counter() - started, 3), "cls_final_terms": cls_trained.terms,
                    "cls_losses": cls_trained.losses}
        tensors |= {
            "cls_text_prototypes": cls_trained.prototypes,
            "cls_normal_ctx": cls_learner.normal_ctx.detach(),
            "cls_abnormal_ctx": cls_learner.abnormal_ctx.detach(),
        }
    return FitResult(tensors, trained.losses, details)
