"""A toy trained method for workflow tests: the fit learns the mean image embedding of the run's normal
references by gradient descent; the score is the distance to that mean, times ``scale``.

``epochs`` and ``lr`` are fit parameters; ``scale`` is read by the score step only.
Used with ``plugins: [toy_mean]`` and this folder on PYTHONPATH.
"""

from pathlib import Path

import pandas as pd
import torch

from fsad.scorers.base import FitContext, FitResult, ScoreResult, ScoringContext
from fsad.scorers.method import Fit, Method, Needs


def fit(ctx: FitContext) -> FitResult:
    (category,) = ctx.categories
    references = category.features(ctx.split.normal_refs).image_embeddings
    mean = torch.zeros(references.shape[1], requires_grad=True)
    losses = []
    for _ in range(ctx.params["epochs"]):
        loss = ((references - mean) ** 2).sum(dim=1).mean()
        loss.backward()
        with torch.no_grad():
            mean -= ctx.params["lr"] * mean.grad
            mean.grad.zero_()
        losses.append(loss.item())
    return FitResult({"mean": mean.detach()}, losses)


def score(ctx: ScoringContext) -> ScoreResult:
    features = ctx.features(ctx.split.test).image_embeddings
    distance = (features - ctx.model["mean"]).norm(dim=1) * ctx.params["scale"]
    return ScoreResult(pd.DataFrame({"image_id": ctx.split.test, "score": distance.cpu().numpy()}))


METHOD = Method(
    name="toy_mean",
    score="toy_mean:score",
    schema=Path(__file__).with_name("toy_mean.schema.yaml"),
    needs=Needs(min_normal_shots=1),
    maps=False,
    fit=Fit(run="toy_mean:fit", scope="run"),
)
