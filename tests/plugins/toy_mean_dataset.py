"""The toy method of ``toy_mean`` with a dataset-scope fit: the mean image embedding of the training dataset's
normal pool images (every category), learnt once and shared by every target dataset's jobs."""

from pathlib import Path

import torch

from fsad.scorers.base import FitContext, FitResult
from fsad.scorers.method import Fit, Method


def fit(ctx: FitContext) -> FitResult:
    embeddings = []
    for category in ctx.categories:
        normals = [i for i in category.image_ids if category.manifest.loc[i, "label"] == 0]
        embeddings.append(category.features(normals).image_embeddings)
    mean = torch.cat(embeddings).mean(dim=0)
    return FitResult({"mean": mean}, [0.0], {"images": sum(len(e) for e in embeddings)})


METHOD = Method(
    name="toy_mean_dataset",
    score="toy_mean:score",
    schema=Path(__file__).with_name("toy_mean_dataset.schema.yaml"),
    maps=False,
    fit=Fit(run="toy_mean_dataset:fit", scope="dataset"),
)
