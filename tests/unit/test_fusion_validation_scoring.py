"""A fusion member's validation set: scored by the member's own score step, from the validation normals only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fsad.data.splits import Split
from fsad.features.types import FeatureBatch
from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.scorers.run import score_validation_set

SPEC = {"normal_augmentations": 2, "anomalies": 3, "defect_types": ["spot", "noise"]}


def batch(ids: list[str], embeddings: torch.Tensor) -> FeatureBatch:
    return FeatureBatch(list(ids), embeddings, torch.zeros(len(embeddings), 4, 3), {}, 2)


def test_the_validation_set_reads_the_validation_normal_and_no_test_image(tmp_path):
    normal = tmp_path / "normal.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(normal)
    ids = ["ref", "val", "t0", "t1"]
    manifest = pd.DataFrame({
        "image_id": ids, "label": [0, 0, 0, 1], "defect_type": ["good", "good", "good", "spot"], "mask_path": ["", "", "", ""],
        # the reference and test images do not exist: opening one would fail the test
        "image_path": [str(tmp_path / "missing_ref.png"), str(normal), str(tmp_path / "missing0.png"), str(tmp_path / "missing1.png")],
    }).set_index("image_id", drop=False)
    stored = {"ref": 0.0, "val": 1.0, "t0": 2.0, "t1": 3.0}
    asked: list[str] = []

    def features(wanted: list[str]) -> FeatureBatch:
        asked.extend(wanted)
        return batch(wanted, torch.tensor([[stored[i]] for i in wanted]))

    encoded: list[int] = []

    def encode(images: list) -> FeatureBatch:
        encoded.append(len(images))
        return batch([], torch.tensor([[10.0 + k] for k in range(len(images))]))

    def score_step(ctx: ScoringContext) -> ScoreResult:
        values = ctx.features(ctx.split.test).image_embeddings[:, 0].numpy()
        return ScoreResult(pd.DataFrame({"image_id": ctx.split.test, "score": values}))

    split = Split("d", "c", "k1", 0, 77, ["ref"], [], ["val"], ["t0", "t1"])
    ctx = ScoringContext(split=split, manifest=manifest, features=features, text_encoder=None, class_name="c", params={},
                         map_size=8, device=torch.device("cpu"), seed=77, encode_images=encode)
    result, labels, description = score_validation_set(ctx, score_step, SPEC)
    made = ["val#augment0", "val#augment1", "val#defect0", "val#defect1", "val#defect2"]
    assert description["image_ids"] == ["val", *made] and list(labels) == [0, 0, 0, 1, 1, 1]
    assert description["defect_types"] == ["", "", "", "spot", "noise", "spot"]
    # the stored validation normal, then the five made images in encoding order
    assert list(result.scores["score"]) == [1.0, 10.0, 11.0, 12.0, 13.0, 14.0]
    assert set(asked) == {"val"} and encoded == [5]
