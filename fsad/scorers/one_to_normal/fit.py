"""The fit of S_text's linear maps (eq. 6) on an auxiliary dataset, InCTRL-style: the paper trains on MVTec AD (VisA
when testing on MVTec AD) and tests on the other datasets without further training.

Training follows mala-lab/InCTRL (``engine_IC.py``): image-level labels only, binary focal loss (alpha 1, gamma 2)
on the image score, AdamW with lr 1e-3 and betas (0.9, 0.999). The image score trained is S_text itself (mean over
levels of the max over positions of the anomalous probability), so training and scoring read the same quantity.
Every image of the training dataset's feature stores (each category's test subset and reference pools) is used, with
the category's own prompts; each epoch visits the categories in a random order, each in shuffled mini-batches.
"""

from __future__ import annotations

import logging

import torch

from fsad.scorers.base import FitContext, FitResult
from fsad.scorers.one_to_normal.torch_model import TextMaps, text_margins, text_score_focal_loss
from fsad.text.prompt_params import class_text_embeddings, prompt_temperature

log = logging.getLogger(__name__)


def fit(ctx: FitContext) -> FitResult:
    params = ctx.params
    levels = list(params["layers"])
    temperature = prompt_temperature(params)
    generator = torch.Generator().manual_seed(ctx.seed)
    texts = [class_text_embeddings(params, ctx.text_encoder, c.class_name, ctx.device).clone() for c in ctx.categories]
    labels = [torch.tensor(c.manifest.loc[c.image_ids, "label"].to_numpy(), dtype=torch.float32) for c in ctx.categories]
    if not torch.cat(labels).unique().numel() == 2:
        raise ValueError(f"the text maps need normal and anomalous training images; {[c.dataset + '/' + c.category for c in ctx.categories]} hold one class")

    width = ctx.categories[0].features(ctx.categories[0].image_ids[:1]).layers[levels[0]].shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        maps = TextMaps(levels, width, texts[0].shape[-1]).to(ctx.device)
    optimizer = torch.optim.AdamW(maps.parameters(), lr=params["text_map_lr"], betas=(0.9, 0.999))
    batch = params["text_map_batch_size"]
    losses = []
    for epoch in range(params["text_map_epochs"]):
        total, count = 0.0, 0
        for c in torch.randperm(len(ctx.categories), generator=generator).tolist():
            category = ctx.categories[c]
            features = category.features(category.image_ids)
            features.require(layers=levels)
            for rows in torch.randperm(len(category.image_ids), generator=generator).split(batch):
                margins = torch.stack([text_margins(maps(features.layers[l][rows.to(ctx.device)], l), texts[c], temperature) for l in levels], dim=1)
                loss = text_score_focal_loss(margins, labels[c][rows].to(ctx.device), params["text_map_focal_gamma"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(rows), count + len(rows)
        losses.append(total / count)
        log.info("text maps epoch %d/%d: loss %.5f", epoch + 1, params["text_map_epochs"], losses[-1])
    images = sum(len(c.image_ids) for c in ctx.categories)
    return FitResult(maps.tensors(), losses, {"levels": levels, "images": images, "anomalous": int(torch.cat(labels).sum())})
