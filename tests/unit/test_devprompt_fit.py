"""DevPrompt's fit and score steps on the tiny open_clip model: the deviation loss separates synthetic anomalies
from the normal shot, PromptAD fits without them, and the score step reads the fitted tensors back."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from fsad.backbones.loading import load_backbone
from fsad.backbones.window_embeddings import encode_images
from fsad.data.splits import Split
from fsad.scorers.base import FitContext, ScoringContext, TrainingCategory
from fsad.scorers.devprompt import fit as devprompt_fit
from fsad.scorers.devprompt import scorer as devprompt_scorer
from fsad.scorers.devprompt.method import METHOD
from fsad.scorers.registry import method_params

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
# A faster schedule than PromptAD's (lr 0.002, 100 epochs) for the tiny model, and area defects touching 10 of its
# 49 patches or more: the tiny model's random features change little under a thin scratch.
TRAINING = {"epochs": 60, "lr": 0.05, "synthetic_anomalies": 6, "min_defect_patches": 10, "defect_types": ["spot", "cutpaste", "noise"]}


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(TINY, "cpu")


@pytest.fixture(scope="module")
def category(tiny, tmp_path_factory):
    """A category of three textured images (a soft noise texture each) whose features the tiny model encodes."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("shot", "test0", "test1"):
        texture = ndimage.gaussian_filter(rng.random((112, 112)), 2)
        gray = np.clip((texture - texture.mean()) / texture.std() * 8 + 128, 0, 255).astype(np.uint8)
        paths[name] = folder / f"{name}.png"
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(paths[name])
    manifest = pd.DataFrame({"image_id": list(paths), "image_path": [str(p) for p in paths.values()]}).set_index("image_id", drop=False)

    def features(ids):
        batch = _encoder(tiny)([Image.open(manifest.loc[i, "image_path"]).convert("RGB") for i in ids])
        batch.image_ids = list(ids)
        return batch

    return TrainingCategory("d", "bottle", list(paths), manifest, features, "bottle")


def _encoder(tiny):
    # the mid-block states of both blocks too (full PromptAD's memory); they change no other feature (test_layer_taps.py)
    return lambda images: encode_images(tiny, torch.stack([tiny.preprocess(image) for image in images]), [], mid_layers=[1, 2])


def _fit(tiny, category, encode=True, **params):
    filled = method_params(METHOD, {**TRAINING, **params})
    split = Split("d", "bottle", "k1", 0, 0, ["shot"], [], [], ["test0", "test1"])
    ctx = FitContext(METHOD.fit_params(filled), [category], split, None, torch.device("cpu"), 1, backbone=lambda: tiny,
                     encode_images=_encoder(tiny) if encode else None)
    return filled, split, devprompt_fit.fit(ctx)


@pytest.fixture(scope="module")
def devprompt(tiny, category):
    # DevNet's class-balanced average: one normal shot weighs as much as the six anomalies (Eq. 8's plain batch mean,
    # the default, weighs it 1/7: test_eq_8s_batch_mean_separates_them_too)
    return _fit(tiny, category, deviation_average="balanced")


def initial_normal_deviation(tiny, category, params) -> float:
    """D of the normal shot before training, computed here: the calibration maps the shot's patch similarities c to
    the reference's mean and std, so its patch deviations are |c - mean c| / std c (unbiased std) whatever mu and
    sigma are, and D is the mean of the K = 4 largest of the 49 (int(49 * 0.1))."""
    from fsad.scorers.devprompt.training import encode_prompts, prompt_prototypes

    learner = devprompt_fit.build_learner(tiny, category, params, torch.Generator().manual_seed(1))  # the fit's seed 1
    with torch.no_grad():
        abnormal = prompt_prototypes(*encode_prompts(tiny.model, learner))[1].numpy().astype(np.float64)
    tokens = category.features(["shot"]).patch_tokens[0].numpy().astype(np.float64) @ tiny.model.visual.proj.detach().numpy()
    c = (tokens / np.linalg.norm(tokens, axis=-1, keepdims=True)) @ abnormal
    z = np.abs(c - c.mean()) / c.std(ddof=1)
    return float(np.sort(z)[-4:].mean())


def test_the_deviation_loss_separates_synthetic_anomalies_from_the_normal_shot(devprompt, tiny, category):
    params, _, result = devprompt
    deviations = {name: np.array(values) for name, values in result.details["training_deviations"].items()}
    gap = lambda when: deviations[f"{when}_anomalous"].mean() - deviations[f"{when}_normal"].mean()  # noqa: E731
    # calibrated to the N(0, 1) prior, the normal shot starts at the mean of its top-K standardised patch similarities:
    # for Gaussian patches the mean of the top 10 % of |N(0, 1)|, 2 phi(1.645) / 0.1 = 2.06; the shot's own 49 patches
    # give the value computed here
    expected = initial_normal_deviation(tiny, category, params)
    assert deviations["initial_normal"] == pytest.approx([expected], rel=1e-4)
    assert abs(expected - 2.06) < 0.8
    # the synthetic anomalies, scored with the normal shot's calibration, start in the same range
    assert np.all(np.abs(deviations["initial_anomalous"] - 2.06) < 0.8), deviations["initial_anomalous"]
    assert gap("final") > gap("initial") + 1.0
    assert np.median(deviations["final_anomalous"]) > deviations["final_normal"].max() + 1.0
    assert result.losses[-1] < result.losses[0]
    assert result.details["synthetic_anomalies"] == 6 and set(result.details["final_terms"]) == {"visual_to_text", "triplet", "alignment", "deviation"}


def test_eq_8s_batch_mean_separates_them_too(tiny, category, devprompt):
    params, _, result = _fit(tiny, category)
    assert params["deviation_average"] == "batch"
    deviations = {name: np.array(values) for name, values in result.details["training_deviations"].items()}
    gap = lambda when: deviations[f"{when}_anomalous"].mean() - deviations[f"{when}_normal"].mean()  # noqa: E731
    # the same start as the balanced fit (the calibration does not depend on the loss), a wider gap at the end
    np.testing.assert_allclose(deviations["initial_normal"], devprompt[2].details["training_deviations"]["initial_normal"], rtol=1e-6)
    assert gap("final") > gap("initial") + 0.5
    assert result.losses[-1] < result.losses[0]


def test_a_devprompt_fit_saves_prompts_scoring_parameters_and_the_reference(devprompt, tiny):
    _, _, result = devprompt
    tensors = result.tensors
    assert {name: tuple(t.shape) for name, t in tensors.items()} == {
        "text_prototypes": (2, 32), "logit_scale": (), "visual_proj": (64, 32), "normal_ctx": (1, 4, 64), "abnormal_ctx": (4, 1, 64),
        "log_scale": (), "bias": (), "reference_mean": (), "reference_std": (),
    }
    torch.testing.assert_close(tensors["text_prototypes"].norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(tensors["visual_proj"], tiny.model.visual.proj.detach())
    # PromptAD's temperature: the raw logit_scale parameter, log(1 / 0.07) for open_clip's initial model
    assert float(tensors["logit_scale"]) == pytest.approx(float(tiny.model.logit_scale))
    assert abs(float(tensors["reference_mean"])) < 0.06 and abs(float(tensors["reference_std"]) - 1) < 0.06


def test_promptad_fits_on_the_normal_shot_alone(tiny, category):
    _, _, result = _fit(tiny, category, encode=False, deviation_loss=False, epochs=3)
    assert set(result.tensors) == {"text_prototypes", "logit_scale", "visual_proj", "normal_ctx", "abnormal_ctx"}
    assert set(result.details["final_terms"]) == {"visual_to_text", "triplet", "alignment"} and len(result.losses) == 3


def _score(devprompt, category, **overrides):
    params, split, result = devprompt
    ctx = ScoringContext(split=split, manifest=category.manifest, features=category.features, text_encoder=None, class_name="bottle",
                         params=METHOD.score_params({**params, **overrides}), map_size=28, device=torch.device("cpu"), seed=0, model=result.tensors)
    return devprompt_scorer.score(ctx)


def test_the_score_is_the_top_k_mean_of_the_patch_deviations_and_the_map_their_upsampling(devprompt, category):
    _, _, result = devprompt
    out = _score(devprompt, category, smoothing_sigma=0.0)
    model = result.tensors
    tokens = category.features(["test0", "test1"]).patch_tokens
    patches = torch.nn.functional.normalize(tokens @ model["visual_proj"], dim=-1)
    cos_abnormal = patches @ model["text_prototypes"][1]
    deviation = (model["log_scale"].exp() * cos_abnormal + model["bias"] - model["reference_mean"]).abs() / model["reference_std"]
    k = 4  # int(49 patches * 0.1)
    expected = deviation.sort(dim=-1, descending=True).values[:, :k].mean(dim=-1)
    np.testing.assert_allclose(out.scores["score"], expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.scores["deviation_max"], deviation.max(dim=-1).values.numpy(), rtol=1e-5)
    assert list(out.scores.columns) == ["image_id", "score", "deviation_max", "textual_global", "textual_max"]
    upsampled = torch.nn.functional.interpolate(deviation.reshape(2, 1, 7, 7), size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(out.maps, upsampled.numpy(), rtol=1e-5, atol=1e-6)
    smoothed = _score(devprompt, category).maps  # PromptAD's Gaussian, sigma 4: same mass, a smaller peak
    assert smoothed.shape == (2, 28, 28) and smoothed.max() < out.maps.max()
    np.testing.assert_allclose(smoothed.mean(axis=(1, 2)), out.maps.mean(axis=(1, 2)), rtol=1e-3)


def test_promptad_scores_with_its_softmax_of_the_class_token_and_maps_of_the_patches(devprompt, category):
    params, split, result = devprompt
    out = _score(devprompt, category, deviation_loss=False, smoothing_sigma=0.0)
    model = result.tensors
    image = category.features(["test0", "test1"]).image_embeddings
    cosines = torch.nn.functional.normalize(image, dim=-1) @ model["text_prototypes"].T
    expected = (cosines * model["logit_scale"]).softmax(dim=-1)[:, 1]
    np.testing.assert_allclose(out.scores["score"], expected.numpy(), rtol=1e-5)
    assert list(out.scores.columns) == ["image_id", "score", "textual_global", "textual_max"]
    assert out.maps.min() >= 0 and out.maps.max() <= 1


def test_touched_cells_count_the_patch_grid_cells_under_a_mask():
    from fsad.scorers.devprompt.anomalies import touched_cells

    mask = np.zeros((10, 10), bool)
    mask[0, 0] = True  # cell (0, 0) of a 2 x 2 grid
    mask[4, 4] = True  # still cell (0, 0)
    mask[5, 9] = True  # cell (1, 1)
    assert touched_cells(mask, 2) == 2
    assert touched_cells(mask, 10) == 3


@pytest.fixture(scope="module")
def full_promptad(tiny, category):
    return _fit(tiny, category, encode=False, deviation_loss=False, epochs=3, memory_blocks=[1, 2], cls_prompts=3)


def test_full_promptad_saves_the_galleries_and_a_separate_image_level_model(full_promptad, category):
    _, _, result = full_promptad
    tensors = result.tensors
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    assert shapes == {
        "text_prototypes": (2, 32), "logit_scale": (), "visual_proj": (64, 32), "normal_ctx": (1, 4, 64), "abnormal_ctx": (4, 1, 64),
        "memory_1": (49, 64), "memory_2": (49, 64),
        "cls_text_prototypes": (2, 32), "cls_normal_ctx": (3, 4, 64), "cls_abnormal_ctx": (4, 1, 64),
    }
    shot = category.features(["shot"])
    for n in (1, 2):  # the shot's raw states inside blocks 1 and 2, normalised (PromptAD's feature galleries)
        torch.testing.assert_close(tensors[f"memory_{n}"], torch.nn.functional.normalize(shot.mid_layers[n][0], dim=-1))
    assert not torch.allclose(tensors["cls_text_prototypes"], tensors["text_prototypes"])
    assert len(result.details["cls_losses"]) == 3 and set(result.details["cls_final_terms"]) == {"visual_to_text", "triplet", "alignment"}


def test_full_promptad_fuses_the_textual_and_visual_maps_and_scores_harmonically(full_promptad, category):
    params, split, result = full_promptad
    out = _score(full_promptad, category, smoothing_sigma=0.0)
    model = result.tensors
    test = category.features(["test0", "test1"])
    t = model["logit_scale"]
    patches = torch.nn.functional.normalize(test.patch_tokens @ model["visual_proj"], dim=-1)
    textual_map = (t * patches @ model["text_prototypes"].T).softmax(dim=-1)[..., 1]
    image = torch.nn.functional.normalize(test.image_embeddings, dim=-1)
    textual_cls = (t * image @ model["cls_text_prototypes"].T).softmax(dim=-1)[:, 1]
    distances = []
    for n in (1, 2):
        tokens = torch.nn.functional.normalize(test.mid_layers[n], dim=-1)
        distances.append((1 - tokens @ model[f"memory_{n}"].T).min(dim=-1).values / 2)
    visual_map = (distances[0] + distances[1]) / 2
    up = lambda m: torch.nn.functional.interpolate(m.reshape(2, 1, 7, 7), size=(28, 28), mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
    visual_max = up(visual_map).amax(dim=(1, 2))
    assert list(out.scores.columns) == ["image_id", "score", "textual_global", "textual_max", "visual_max"]
    np.testing.assert_allclose(out.scores["textual_global"], textual_cls.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.scores["textual_max"], textual_map.max(dim=-1).values.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.scores["visual_max"], visual_max.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.scores["score"], (1 / (1 / visual_max + 1 / textual_cls)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.maps, up(1 / (1 / textual_map + 1 / visual_map)).numpy(), rtol=1e-5, atol=1e-7)
    smoothed = _score(full_promptad, category).maps  # then PromptAD's Gaussian, sigma 4
    np.testing.assert_allclose(smoothed, ndimage.gaussian_filter(out.maps, sigma=(0, 4, 4)), rtol=1e-5, atol=1e-7)


def test_the_memory_and_the_image_level_model_are_promptad_options_only():
    from fsad.scorers.devprompt.method import _check

    for extra in ({"memory_blocks": [4, 9]}, {"cls_prompts": 3}):
        params = method_params(METHOD, extra)
        assert "deviation_loss: false" in _check(params, {"scorers": {}})
        assert _check(method_params(METHOD, {"deviation_loss": False, **extra}), {"scorers": {}}) is None
