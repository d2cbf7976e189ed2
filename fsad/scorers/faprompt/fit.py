"""The fit step of ``faprompt``: learn the prompts on a training dataset from its cached tokens.

The image encoder is frozen, so its tokens come from the feature store once (projected with ``visual.proj``,
normalised, kept in host memory) and every epoch runs the text side only. Training images are the training
dataset's test split in the feature store (AnomalyCLIP and FAPrompt train on the auxiliary dataset's test
split, with its anomalies and masks), or every image of its pool with ``train_split: all``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from fsad.data.images import load_masks
from fsad.scorers.base import IMAGES_PER_STEP, FitContext, FitResult, TrainingCategory
from fsad.scorers.faprompt.losses import training_loss
from fsad.scorers.faprompt.params import build_learner, loss_config, score_config, token_levels
from fsad.scorers.faprompt.torch_model import forward_batch, normalise

log = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    """Training images in host memory.

    Attributes:
        tokens: per level ``(N, P, D)`` projected, normalised patch tokens.
        images: ``(N, D)`` normalised image embeddings.
        labels: ``(N,)`` 0 normal, 1 anomalous.
        masks: ``(N, S, S)`` bool ground truth at the loss resolution.
        image_paths: the images' files (for the encoding-time probe).
    """

    tokens: list[torch.Tensor]
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    image_paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _training_ids(category: TrainingCategory, train_split: str) -> list[str]:
    manifest = category.manifest
    return [i for i in category.image_ids if train_split == "all" or manifest.loc[i, "split"] == "test"]


def training_set(ctx: FitContext, levels: list[int], projection: torch.Tensor, size: int) -> TrainingSet:
    """Tokens, embeddings, labels and masks of every training image of ``ctx.categories``."""
    tokens, images, labels, masks, paths = [], [], [], [], []
    for category in ctx.categories:
        ids = _training_ids(category, ctx.params["train_split"])
        rows = category.manifest.loc[ids]
        category_masks = load_masks(rows["mask_path"].tolist(), rows["label"].tolist(), size)
        if category_masks is None:
            raise ValueError(
                f"dataset {category.dataset!r} ({category.category}) has anomalous images without masks; "
                f"faprompt trains its maps on masks: set train_dataset to a dataset with masks"
            )
        for start in range(0, len(ids), IMAGES_PER_STEP):
            features = category.features(ids[start : start + IMAGES_PER_STEP])
            tokens.append([level.cpu() for level in token_levels(features, levels, projection)])
            images.append(normalise(features.image_embeddings).cpu())
        labels.append(torch.tensor(rows["label"].tolist(), dtype=torch.long))
        masks.append(torch.from_numpy(category_masks))
        paths += rows["image_path"].tolist()
    if not paths:
        raise ValueError(f"no training images in {[c.dataset + '/' + c.category for c in ctx.categories]} (train_split {ctx.params['train_split']!r})")
    all_labels = torch.cat(labels)
    if not bool((all_labels == 1).any()):
        raise ValueError("the training images hold no anomalous image; faprompt learns abnormality from annotated anomalies")
    return TrainingSet([torch.cat(level) for level in zip(*tokens)], torch.cat(images), all_labels, torch.cat(masks), paths)


def _encoding_seconds_per_image(ctx: FitContext, data: TrainingSet, levels: list[int]) -> float:
    """Seconds per image of encoding training images as the feature stage does (for the time saved by the cache)."""
    from fsad.backbones.window_embeddings import encode_images
    from fsad.data.images import read_image

    backbone = ctx.backbone()
    paths = data.image_paths[: ctx.params["batch_size"]]
    pixels = torch.stack([backbone.preprocess(read_image(path)) for path in paths])
    with torch.inference_mode():
        encode_images(backbone, pixels[:1], [], vv_layers=levels)  # warm-up
        started = time.perf_counter()
        encode_images(backbone, pixels, [], vv_layers=levels)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - started) / len(paths)


def fit(ctx: FitContext) -> FitResult:
    """Train the prompt learner; its parameters are the fit's tensors, the mean loss per epoch its losses."""
    params = ctx.params
    backbone = ctx.backbone()
    levels = list(params["vv_layers"])
    size = params["loss_size"] or backbone.grid * backbone.model.visual.patch_size[0]
    data = training_set(ctx, levels, backbone.model.visual.proj.detach(), size)
    learner = build_learner(params, backbone, seed=ctx.seed)
    losses_config, scores_config = loss_config(params), score_config(params)
    optimizer = torch.optim.Adam(learner.parameters(), lr=params["lr"], betas=tuple(params["betas"]))
    order = torch.Generator().manual_seed(ctx.seed)
    device = backbone.device

    losses, seconds, parts_per_epoch = [], [], []
    for epoch in range(params["epochs"]):
        started = time.perf_counter()
        batch_losses, batch_parts = [], []
        for batch in torch.randperm(len(data), generator=order).split(params["batch_size"]):
            tokens = [level[batch].to(device) for level in data.tokens]
            outputs = forward_batch(learner, tokens, data.images[batch].to(device), scores_config)
            labels = data.labels[batch].to(device)
            loss, parts = training_loss(outputs, data.masks[batch].to(device, torch.float32), labels, losses_config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item())
            batch_parts.append(parts)
        losses.append(float(np.mean(batch_losses)))
        seconds.append(time.perf_counter() - started)
        parts_per_epoch.append({name: round(float(np.mean([p.get(name, 0.0) for p in batch_parts])), 6) for name in batch_parts[0]})
        log.info("epoch %d/%d: loss %.4f (%s) in %.2f s", epoch + 1, params["epochs"], losses[-1], parts_per_epoch[-1], seconds[-1])

    details = {
        "images": len(data),
        "anomalous_images": int(data.labels.sum()),
        "steps_per_epoch": -(-len(data) // params["batch_size"]),
        "loss_size": size,
        "seconds_per_epoch": [round(s, 3) for s in seconds],
        "mean_seconds_per_epoch": round(float(np.mean(seconds)), 3) if seconds else None,
        "loss_parts_per_epoch": parts_per_epoch,
        "trainable_parameters": sum(p.numel() for p in learner.parameters()),
    }
    if params["measure_encoding"]:
        per_image = _encoding_seconds_per_image(ctx, data, levels)
        details["encoding_seconds_per_image"] = round(per_image, 4)
        details["encoding_seconds_per_epoch_avoided"] = round(per_image * len(data), 3)
    tensors = {name: value.detach() for name, value in learner.state_dict().items()}
    return FitResult(tensors, losses, details)
