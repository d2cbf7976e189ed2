"""FAPrompt's fit and score steps on the tiny CLIP with features as a cache gives them: training lowers the loss,
the tensors round-trip into the score step, and the image encoder never runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fsad.backbones.loading import load_backbone
from fsad.data.splits import Split
from fsad.features.types import FeatureBatch
from fsad.scorers.base import FitContext, ScoringContext, TrainingCategory
from fsad.scorers.faprompt.fit import fit
from fsad.scorers.faprompt.method import METHOD
from fsad.scorers.faprompt.scorer import score
from fsad.scorers.registry import method_params

GRID, WIDTH, LEVEL = 7, 64, 2  # fsad-tiny at 112 px: 7x7 patches of width 64, two vision blocks
N_NORMAL, N_ANOMALOUS = 4, 4


@pytest.fixture(scope="module")
def backbone():
    backbone = load_backbone({"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}, "cpu")
    # Any encoding of images would be a bug: training reads the cache.
    backbone.model.visual.forward = lambda *args, **kwargs: pytest.fail("the image encoder ran")
    return backbone


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """Cached V-V tokens of 8 images: anomalies carry a fixed direction in the patches their masks cover."""
    root = tmp_path_factory.mktemp("faprompt")
    generator = torch.Generator().manual_seed(0)
    ids = [f"img{i}" for i in range(N_NORMAL + N_ANOMALOUS)]
    tokens = torch.randn(len(ids), GRID * GRID, WIDTH, generator=generator)
    defect = torch.randn(WIDTH, generator=generator) * 3
    rows = []
    for index, image_id in enumerate(ids):
        label = int(index >= N_NORMAL)
        mask_path = ""
        if label:
            mask = np.zeros((GRID, GRID), dtype=np.uint8)
            mask[index % 3 : index % 3 + 3, 2:5] = 255
            tokens[index, torch.from_numpy(mask.reshape(-1) > 0)] += defect
            mask_path = str(root / f"{image_id}_mask.png")
            Image.fromarray(mask).resize((112, 112), Image.Resampling.NEAREST).save(mask_path)
        rows.append({"image_id": image_id, "category": "c", "split": "test", "label": label,
                     "defect_type": "defect" if label else "good", "image_path": str(root / f"{image_id}.png"), "mask_path": mask_path})
    manifest = pd.DataFrame(rows).set_index("image_id", drop=False)
    images = torch.randn(len(ids), 32, generator=generator)

    def features(wanted: list[str]) -> FeatureBatch:
        rows = [ids.index(i) for i in wanted]
        return FeatureBatch(list(wanted), images[rows], tokens[rows], {}, GRID, vv_layers={LEVEL: tokens[rows]})

    return TrainingCategory("toy", "c", ids, manifest, features, "c")


def params(**overrides):
    return method_params(METHOD, {"train_dataset": "toy", "vv_layers": [LEVEL], "epochs": 4, "batch_size": 4, "dap_patches": 5, **overrides})


def fit_context(backbone, category, **overrides) -> FitContext:
    return FitContext(METHOD.fit_params(params(**overrides)), [category], None, lambda prompts: None, torch.device("cpu"), 7, lambda: backbone)


@pytest.mark.parametrize("modules", [{}, {"cap": False, "dap": False, "normal_tokens": 12, "image_ce_weight": 1.0, "image_focal_weight": 0.0, "image_score": "probability"}],
                         ids=["faprompt", "anomalyclip"])
def test_training_from_cached_tokens_lowers_the_loss(backbone, category, modules):
    result = fit(fit_context(backbone, category, **modules))
    assert len(result.losses) == 4 and result.losses[-1] < 0.8 * result.losses[0]
    assert result.details["images"] == 8 and result.details["anomalous_images"] == 4 and result.details["steps_per_epoch"] == 2
    assert len(result.details["seconds_per_epoch"]) == 4
    names = set(result.tensors)
    assert {"normal_context", "abnormal_context", "deep_prompts"} <= names
    assert any(name.startswith("prior_net.") for name in names) == (modules == {})


def test_the_fit_is_reproducible_and_its_tensors_drive_the_score_step(backbone, category):
    first, again = fit(fit_context(backbone, category, epochs=2)), fit(fit_context(backbone, category, epochs=2))
    for name, tensor in first.tensors.items():
        torch.testing.assert_close(tensor, again.tensors[name])
    split = Split("toy", "c", "zs", 0, 1, [], [], [], list(category.image_ids))
    ctx = ScoringContext(split, category.manifest, category.features, lambda prompts: None, "c", METHOD.score_params(params(epochs=2)),
                         map_size=32, device=torch.device("cpu"), seed=1, model=first.tensors, backbone=lambda: backbone)
    with torch.inference_mode():
        result = score(ctx)
    assert list(result.scores["image_id"]) == split.test and result.maps.shape == (8, 32, 32)
    assert {"score", "text_probability", "map_max"} <= set(result.scores.columns)
    # Eq. 9: the score is the mean of the text probability and the maps' maxima
    np.testing.assert_allclose(result.scores["score"], 0.5 * (result.scores["text_probability"] + result.scores["map_max"]), rtol=1e-5)
    assert np.isfinite(result.maps).all() and (result.maps >= 0).all() and (result.maps <= 1).all()


def test_a_training_dataset_without_masks_for_its_anomalies_is_refused(backbone, category):
    unmasked = TrainingCategory("toy", "c", category.image_ids, category.manifest.assign(mask_path=""), category.features, "c")
    with pytest.raises(ValueError, match="without masks"):
        fit(fit_context(backbone, unmasked))


def test_only_the_smoothing_and_the_report_lists_leave_the_fit_alone():
    every = set(params())
    assert every - set(METHOD.stage_names("fit")) == {"train_dataset", "sigma", "compare_scorers", "ablation"}
    assert set(METHOD.stage_names("report")) == {"compare_scorers", "ablation"}
    assert "sigma" in METHOD.score_params(params()) and "ablation" not in METHOD.score_params(params())
